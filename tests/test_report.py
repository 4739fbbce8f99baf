"""python -m distgan.report: a static page whose every image exists; rendered by headless chromium if present."""
import json
import shutil
import subprocess
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from distgan.report import build_report, main


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.headings, self.text, self._h = [], [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._h = tag == "h2"

    def handle_endtag(self, tag):
        self._h = False

    def handle_data(self, data):
        (self.headings if self._h else self.text).append(data)


def _parse(path):
    page = _Page()
    page.feed(path.read_text())
    page.close()
    return page


@pytest.fixture(scope="module")
def run(mnist_shards, tmp_path_factory):
    """A 20-step debug run (sample grids at 10 and 20) plus one metric record in the metrics.jsonl format."""
    from distgan.config import load_config
    from distgan.train import train

    cfg = load_config(ROOT / "configs" / "debug.yaml", [f"data.shards={mnist_shards}", "log.progress=false"])
    run_dir = tmp_path_factory.mktemp("report") / "run"
    train(cfg, run_dir)
    records = [{"step": s, "name": "classifier_fd", "value": v, "lower_is_better": True, "ema": False,
                "provenance": {"metric": "classifier_fd", "weights_sha256": "ab12", "num_real": 500,
                               "num_fake": 500, "resize": "none", "feature_extractor": "digits-cnn"},
                "time": time.time()} for s, v in ((10, 41.5), (20, 33.25))]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def test_report_sections_and_images(run, capsys):
    assert main(["--run", str(run)]) == 0
    path = run / "report.html"
    assert f"wrote {path}" in capsys.readouterr().out
    page = _parse(path)
    assert page.headings == ["Curves", "Samples from fixed noise", "Metrics", "Step times",
                             "Health warnings", "Config"]
    assert {"report/losses.png", "report/d_outputs.png", "report/throughput.png",
            "report/metric_classifier_fd.png", "samples/step_00000010.png",
            "samples/step_00000020.png"} <= set(page.images)
    for src in page.images:  # every referenced image exists and is a real PNG
        with Image.open(path.parent / src) as im:
            assert im.format == "PNG" and im.size[0] > 50 and im.size[1] > 30
    text = " ".join(page.text)
    assert "weights_sha256=ab12" in text and "33.25" in text and "digits-cnn" in text
    assert "ms per step (median)" in text and "lr_d: 0.0002" in text


def test_report_from_tensorboard_when_stats_jsonl_is_missing(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "stats.jsonl").unlink()
    (copy / "metrics.jsonl").unlink()
    page = _parse(build_report(copy))
    assert "report/losses.png" in page.images and not any("metric_" in s for s in page.images)
    assert "No metrics.jsonl in this run" in " ".join(page.text)


def test_report_error_on_non_run(tmp_path, capsys):
    assert main(["--run", str(tmp_path)]) == 2
    assert "not a distgan run directory" in capsys.readouterr().err


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run, tmp_path):
    path = build_report(run)
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
                    f"--screenshot={shot}", path.resolve().as_uri()],
                   check=True, capture_output=True, timeout=150)
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (2400, 1200)
    # the plots and sample grids drew something: many distinct grey levels, dark pixels present
    assert len(np.unique(img)) > 50 and (img < 60).mean() > 0.005
