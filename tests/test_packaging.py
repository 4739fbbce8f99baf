"""distgan installs like a library: ranges (no pins), a tested constraints set, extras, one console command.

The install checks run pip against the test environment itself, which already
holds a compatible torch: a dry run must plan to install distgan alone. They
build from a copy of the source tree, so no build output lands in the checkout.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from distgan import cli
from distgan.extras import MissingExtra, pyplot, require

ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("src") / "distgan-src"
    dst.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(ROOT / name, dst / name)
    for tree in ("distgan", "bench"):
        shutil.copytree(ROOT / tree, dst / tree, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    return [r for r in reqs if r.name != "distgan"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_dependencies_are_ranges_and_the_constraints_pin_a_version_inside_each():
    pins = _pins()
    for req in _requirements():
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{req} is a pin"
        assert any(s.operator == ">=" for s in req.specifier), f"{req} has no tested lower bound"
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        assert key in pins, f"{req.name} is not in constraints.txt"
        assert req.specifier.contains(pins[key]), f"constraints.txt pins {req.name}=={pins[key]} outside {req}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"  # the builds on local disk


@pytest.mark.timeout(300)
def test_installs_into_an_environment_with_torch_without_replacing_it(source, tmp_path):
    report = tmp_path / "report.json"
    out = subprocess.run([*PIP, "install", "--dry-run", "--no-index", "--no-build-isolation",
                          "--report", str(report), str(source)], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    planned = [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.loads(report.read_text())["install"]]
    assert planned == [("distgan", "0.1.0")]  # torch, torchvision, accelerate ... are kept as installed


@pytest.mark.timeout(300)
def test_wheel_holds_distgan_and_the_console_command_but_no_top_level_bench(source, tmp_path):
    out = subprocess.run([*PIP, "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(tmp_path),
                          str(source)], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wheel = next(tmp_path.glob("distgan-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "distgan/cli.py" in names and "distgan/shards/index.py" in names
    assert not [n for n in names if n.startswith("bench/")]
    meta = {n.split("/", 1)[1]: zipfile.ZipFile(wheel).read(n).decode() for n in names if ".dist-info/" in n}
    assert re.search(r"^distgan = distgan\.cli:main$", meta["entry_points.txt"], re.M)
    requires = [line for line in meta["METADATA"].splitlines() if line.startswith("Requires-Dist: torch")]
    assert requires == ["Requires-Dist: torch>=2.14", "Requires-Dist: torchvision>=0.29"]
    assert (ROOT / "bench" / "__main__.py").is_file()  # `python -m bench` still runs from a checkout


def test_console_command_lists_and_runs_every_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("launch", "shards", "sweep", "sample", "metrics", "export", "report"):
        assert re.search(rf"^  {name} ", text, re.M), name
    assert cli.main(["shards", "--help"]) == 0  # argparse's --help exits 0 through the module
    assert "index" in capsys.readouterr().out
    assert cli.main(["shards", "info", "/nonexistent/shards"]) == 2  # the module's own exit status
    assert "no manifest.json" in capsys.readouterr().err
    assert cli.main(["train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err
    # python -m distgan is the same command where no console script is installed
    out = subprocess.run([sys.executable, "-m", "distgan", "--help"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == text.strip()


def test_a_missing_extra_is_named(monkeypatch, debug_run, tmp_path, capsys):
    with pytest.raises(MissingExtra, match=r"pip install 'distgan\[bench\]'"):
        require("scipy_that_is_not_installed", "bench", "the FID benchmark")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(MissingExtra, match=r"needs the 'matplotlib' package.*distgan\[plots\]"):
        pyplot("the report")
    run = tmp_path / "run"
    shutil.copytree(debug_run, run)
    from distgan.report import main as report_main

    assert report_main(["--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "distgan[plots]" in err and "Traceback" not in err
