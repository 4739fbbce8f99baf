"""python -m distgan.export: the exported generator runs where distgan is not importable, same outputs."""
import json
import os
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import torch

from distgan.api import load_generator
from distgan.export import Standalone, main

# Runs in a fresh interpreter from a temp dir in isolated mode (-I: no PYTHONPATH, no cwd on
# sys.path) without the site module (-S: .pth files, such as an editable install of distgan, are
# not processed); the venv's site-packages is appended by hand so torch / onnxruntime import.
# distgan cannot be imported there; the file is loaded with torch / onnxruntime alone.
OUTSIDE = r"""
import sys
sys.path.extend(sys.argv[1].split("|"))
del sys.argv[1]
import json
import numpy as np
try:
    import distgan
    sys.exit("distgan is importable here: the test would prove nothing")
except ImportError:
    pass
fmt, model, inputs, out = sys.argv[1:]
d = np.load(inputs)
feeds = [d["z"]] + ([d["y"]] if "y" in d else [])
if fmt == "torchscript":
    import torch
    extra = {"distgan.json": ""}
    g = torch.jit.load(model, _extra_files=extra)
    meta = json.loads(extra["distgan.json"])
    with torch.no_grad():
        images = g(*[torch.from_numpy(x) for x in feeds]).numpy()
else:
    import onnx, onnxruntime as ort
    meta = json.loads({p.key: p.value for p in onnx.load(model).metadata_props}["distgan"])
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    images = s.run(None, {i.name: x for i, x in zip(s.get_inputs(), feeds)})[0]
np.save(out, images)
print(json.dumps(meta))
"""


@pytest.fixture(scope="module")
def run(debug_run):
    """The session's 20-step debug run (tests/conftest.py), shared read-only."""
    return debug_run


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fmt, suffix", [("torchscript", ".pt"), ("onnx", ".onnx")])
def test_export_round_trip_without_distgan(run, tmp_path, fmt, suffix, capsys):
    model = tmp_path / f"g{suffix}"
    assert main(["--run", str(run), "--format", fmt, "--out", str(model)]) == 0
    assert "checked against the original" in capsys.readouterr().out
    # a batch size the export never saw, weighted labels included
    g = torch.Generator().manual_seed(3)
    z = torch.randn(7, 16, generator=g)
    y = torch.eye(10)[torch.tensor([0, 1, 2, 3, 4, 5, 6])]
    y[6] = 0
    y[6, 3] = y[6, 8] = 0.5
    np.savez(tmp_path / "in.npz", z=z.numpy(), y=y.numpy())
    script = tmp_path / "outside.py"
    script.write_text(OUTSIDE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    site_dirs = "|".join(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    out = subprocess.run([sys.executable, "-I", "-S", str(script), site_dirs, fmt, str(model), str(tmp_path / "in.npz"),
                          str(tmp_path / "out.npy")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=200)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads(out.stdout.strip().splitlines()[-1])
    assert meta["z_dim"] == 16 and meta["y_dim"] == 10 and meta["classes"][3] == "3" and meta["step"] == 20
    G, info = load_generator(run)
    with torch.no_grad():
        want = Standalone(G, info).eval()(z, y).numpy()
        raw = G(z, y).numpy()
    got = np.load(tmp_path / "out.npy")
    assert got.shape == (7, 1, 16, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, (raw + 1) / 2, atol=1e-5)  # minmax run: [-1, 1] -> [0, 1]
    assert 0.0 <= got.min() and got.max() <= 1.0


def test_export_errors(run, tmp_path, capsys):
    assert main(["--run", str(run), "--format", "onnx", "--checkpoint", "5", "--out", str(tmp_path / "g")]) == 2
    assert "checkpoint '5' not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--run", str(run), "--format", "tflite", "--out", str(tmp_path / "g")])


def test_safetensors_export_loads_without_the_run_and_samples_equal_to_it(run, tmp_path, capsys):
    import shutil

    from safetensors import safe_open

    import distgan

    out = tmp_path / "g.safetensors"
    assert main(["--run", str(run), "--format", "safetensors", "--out", str(out)]) == 0
    assert "checked against the original" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:  # plain safetensors: any reader sees weights + a JSON description
        meta = json.loads(f.metadata()["distgan"])
        assert any(k.startswith("stem") or "weight" in k for k in f.keys())
    assert meta["classes"][7] == "7" and meta["z_dim"] == 16 and meta["step"] == 20
    assert meta["config"]["model"]["arch"] == "dcgan" and meta["data"]["channels"] == 1

    G_run, info_run = distgan.load_generator(run)
    want = distgan.generate(G_run, info_run, 30, labels=[0, 3, 7], seed=4)
    # the run directory is gone (a copy of the file elsewhere is all a colleague gets)
    shared = tmp_path / "elsewhere" / "mnist.safetensors"
    shared.parent.mkdir()
    shutil.copy(out, shared)
    G, info = distgan.load_generator(shared)
    assert info.classes == info_run.classes and info.condition == "classes" and info.run_dir == str(run)
    assert np.array_equal(G.sample(30, labels=[0, 3, 7], seed=4), want)
    assert np.array_equal(distgan.generate(G, info, 30, labels=["0", "3", "7"], seed=4), want)


def test_a_foreign_file_is_refused_by_name(tmp_path):
    from distgan.api import SampleError

    bogus = tmp_path / "weights.safetensors"
    bogus.write_bytes(b"not safetensors at all")
    with pytest.raises(SampleError, match="weights.safetensors is not a readable safetensors file"):
        load_generator(bogus)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(SampleError, match="no 'distgan' metadata"):
        load_generator(plain)
