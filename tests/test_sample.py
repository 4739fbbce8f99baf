"""python -m distgan.sample and the sampling helpers, on a short debug run (labels, weighted and
multi-class labels, attributes, sweeps)."""
import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from distgan.api import SampleError, blocks, generate, lerp, load_generator, slerp
from distgan.sample import main, parse_labels


@pytest.fixture(scope="module")
def run(debug_run):
    """The session's 20-step debug run (tests/conftest.py), shared read-only."""
    return debug_run


@pytest.fixture(scope="module")
def loaded(run):
    return load_generator(run)


def _stem_inputs(G, fn):
    """Run ``fn`` and capture what G's first layer saw: (B, z_dim + C) latent + label vector."""
    seen = []
    first = next(m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d))  # DCGAN's stem
    h = first.register_forward_hook(lambda m, inp, out: seen.append(inp[0].flatten(1).clone()))
    try:
        fn()
    finally:
        h.remove()
    return torch.cat(seen)


def test_shapes_dtype_range_and_determinism(loaded):
    G, info = loaded
    a = generate(G, info, 25, seed=7)
    assert a.shape == (25, 16, 16, 1) and a.dtype == np.uint8
    assert a.min() >= 0 and a.max() <= 255 and a.std() > 1  # real images, not a constant
    assert np.array_equal(a, generate(G, info, 25, seed=7))
    assert not np.array_equal(a, generate(G, info, 25, seed=8))


def test_labels_reach_the_generator(loaded):
    G, info = loaded
    x = _stem_inputs(G, lambda: generate(G, info, 6, labels=[2, "5", 9], seed=1))
    y = x[:, info.z_dim:]
    want = torch.zeros(6, 10)
    want[[0, 1], 2] = want[[2, 3], 5] = want[[4, 5], 9] = 1
    assert torch.equal(y, want)
    # same noise, only the label changes -> different images
    a = generate(G, info, 4, labels=3, seed=2)
    b = generate(G, info, 4, labels=8, seed=2)
    assert not np.array_equal(a, b)


def test_weighted_and_multiclass_labels(loaded, run, tmp_path):
    G, info = loaded
    mix = np.stack([info.label_vector({"3": 0.5, "8": 0.5}), info.label_vector({1: 1.0, 7: 1.0})])
    x = _stem_inputs(G, lambda: generate(G, info, 4, labels=mix, seed=1))[:, info.z_dim:]
    assert torch.allclose(x[0], torch.tensor(mix[0])) and x[0, 3] == x[0, 8] == 0.5
    assert x[2, 1] == x[2, 7] == 1.0 and x[2].sum() == 2.0
    assert parse_labels("3:0.5+8:0.5, 7", info) == [{"3": 0.5, "8": 0.5}, {"7": 1.0}]
    out = tmp_path / "mix.npz"
    assert main(["--run", str(run), "--num", "6", "--labels", "3,3:0.5+8:0.5,8", "--seed", "4",
                 "--out", str(out)]) == 0
    d = np.load(out)
    assert d["labels"].shape == (6, 10) and d["labels"].dtype == np.float32
    assert d["labels"][2, 3] == d["labels"][2, 8] == 0.5 and d["labels"][0, 3] == d["labels"][5, 8] == 1.0


def test_cli_npz_and_png(run, tmp_path):
    out = tmp_path / "s.npz"
    assert main(["--run", str(run), "--num", "9", "--labels", "0,3,7", "--seed", "11", "--out", str(out)]) == 0
    d = np.load(out)
    assert d["images"].shape == (9, 16, 16, 1) and d["images"].dtype == np.uint8
    assert d["labels"].tolist() == [0, 0, 0, 3, 3, 3, 7, 7, 7] and d["labels"].dtype == np.int64
    assert d["z"].shape == (9, 16) and int(d["seed"]) == 11 and int(d["step"]) == 20
    again = tmp_path / "again.npz"
    main(["--run", str(run), "--num", "9", "--labels", "0,3,7", "--seed", "11", "--out", str(again)])
    assert np.array_equal(np.load(again)["images"], d["images"])
    # the API with the same seed and labels gives the same images as the CLI
    G, info = load_generator(run)
    assert np.array_equal(generate(G, info, 9, labels=[0, 3, 7], seed=11), d["images"])
    png = tmp_path / "grid.png"
    assert main(["--run", str(run), "--num", "30", "--seed", "1", "--out", str(png)]) == 0
    im = Image.open(png)
    # 10 classes -> 10 rows of 3 images of 16 px with 2 px padding
    assert im.size == (3 * 18 + 2, 10 * 18 + 2) and im.mode == "L"


def test_label_sweep(run, tmp_path):
    out = tmp_path / "sweep.npz"
    assert main(["--run", str(run), "--label-sweep", "3,8", "--steps", "5", "--num", "2", "--seed", "0",
                 "--out", str(out)]) == 0
    d = np.load(out)
    y = d["labels"].reshape(2, 5, 10)
    assert np.allclose(y[:, :, 8], np.linspace(0, 1, 5)) and np.allclose(y[:, :, 3] + y[:, :, 8], 1)
    z = d["z"].reshape(2, 5, 16)
    assert np.array_equal(z[:, :1].repeat(5, 1), z)  # a row keeps its latent, only the label moves
    png = tmp_path / "sweep.png"
    main(["--run", str(run), "--label-sweep", "3,8", "--steps", "5", "--num", "2", "--out", str(png)])
    assert Image.open(png).size == (5 * 18 + 2, 2 * 18 + 2)


def test_interpolation(run, tmp_path):
    out = tmp_path / "interp.npz"
    assert main(["--run", str(run), "--interpolate", "6", "--labels", "1,4", "--seed", "0",
                 "--out", str(out)]) == 0
    d = np.load(out)
    z = d["z"].reshape(2, 6, 16)
    assert np.array_equal(z[0], z[1])  # both label rows walk the same latent path
    assert d["labels"].tolist() == [1] * 6 + [4] * 6
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    t = torch.linspace(0, 1, 5)
    s = slerp(a, b, t)
    assert torch.allclose(s[:, 0], a, atol=1e-5) and torch.allclose(s[:, -1], b, atol=1e-5)
    unit = slerp(a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True), t)
    assert torch.allclose(unit.norm(dim=2), torch.ones(3, 5), atol=1e-5)  # stays on the sphere
    assert torch.allclose(lerp(a, b, t)[:, 2], (a + b) / 2)


def test_blocks_split_images_over_labels():
    assert blocks(7, 3).tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert blocks(2, 3).tolist() == [0, 1]


@pytest.mark.parametrize("args, message", [
    (["--num", "4", "--labels", "0,12"], "unknown label '12'; this run's classes are: 0=0, 1=1"),
    (["--num", "4", "--labels", "3:x"], "bad weight 'x'"),
    (["--num", "4", "--attrs", "Male=1"], "takes no attributes"),
    (["--num", "4", "--checkpoint", "99"], "checkpoint '99' not found .*available: latest, 10, 20"),
    (["--num", "4", "--checkpoint", "best"], "checkpoint 'best' not found"),
    (["--num", "4", "--ema"], "holds no EMA weights"),
    (["--label-sweep", "3"], "takes two classes"),
    (["--labels", "3"], "--num N"),
])
def test_errors_name_what_is_available(run, tmp_path, capsys, args, message):
    assert main(["--run", str(run), *args, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    import re
    assert re.search(message, err), err
    assert not (tmp_path / "x.png").exists()


def test_bad_output_suffix(run, tmp_path, capsys):
    assert main(["--run", str(run), "--num", "2", "--out", str(tmp_path / "x.jpg")]) == 2
    assert "must end in .npz or .png" in capsys.readouterr().err


def test_api_errors(loaded):
    G, info = loaded
    with pytest.raises(SampleError, match="unknown attribute|takes no attributes"):
        generate(G, info, 2, attrs={"Male": 1})
    with pytest.raises(SampleError, match=r"label vectors must have shape \(L, 10\)"):
        generate(G, info, 2, labels=np.zeros((2, 3), np.float32))
    with pytest.raises(SampleError, match="n must be >= 1"):
        generate(G, info, 0)


@pytest.fixture(scope="module")
def attr_run(tmp_path_factory):
    """A run dir for an attribute-conditioned G (two binary attributes as label channels), written
    directly: what sampling reads from it is the run-dir contract, not how training produced it."""
    import json

    import yaml

    from distgan.config import config_to_dict, load_config
    from distgan.models import DataInfo, build_models
    from distgan.rundir import write_data_info

    run_dir = tmp_path_factory.mktemp("attrs") / "run"
    cfg = load_config(ROOT / "configs" / "debug.yaml")
    info = DataInfo(channels=3, resolution=16, num_classes=2, classes=[], attributes=["Male", "Smiling"])
    torch.manual_seed(0)
    G, _ = build_models(cfg.model, info)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    write_data_info(run_dir, info, "minmax", [0.5] * 3, [0.25] * 3)
    torch.save({"step": 1, "G": G.state_dict()}, run_dir / "checkpoints" / "step_00000001.pt")
    assert json.loads((run_dir / "data_info.json").read_text())["attributes"] == ["Male", "Smiling"]
    return run_dir


def test_attribute_sampling(attr_run, tmp_path, capsys):
    G, info = load_generator(attr_run)
    assert info.condition == "attributes" and info.y_dim == 2
    x = _stem_inputs(G, lambda: generate(G, info, 4, attrs=[{"Male": 1}, {"Smiling": 1}], seed=0))
    assert x[:, info.z_dim:].tolist() == [[1, 0], [1, 0], [0, 1], [0, 1]]
    out = tmp_path / "a.npz"
    assert main(["--run", str(attr_run), "--num", "4", "--attrs", "Male=1,Smiling=0;Male=0,Smiling=1",
                 "--seed", "0", "--out", str(out)]) == 0
    d = np.load(out)
    assert d["images"].shape == (4, 16, 16, 3) and d["labels"].tolist() == [[1, 0], [1, 0], [0, 1], [0, 1]]
    assert d["attributes"].tolist() == ["Male", "Smiling"]
    assert Image.open(_png(attr_run, tmp_path)).mode == "RGB"
    assert main(["--run", str(attr_run), "--num", "2", "--attrs", "Blond=1", "--out", str(out)]) == 2
    assert "unknown attribute 'Blond'; this run's attributes are: Male, Smiling" in capsys.readouterr().err
    assert main(["--run", str(attr_run), "--num", "2", "--labels", "1", "--out", str(out)]) == 2
    assert "takes no class labels (use attributes: Male, Smiling)" in capsys.readouterr().err


def _png(run_dir, tmp_path):
    png = tmp_path / "a.png"
    assert main(["--run", str(run_dir), "--num", "4", "--attrs", "Male=1;Male=0", "--out", str(png)]) == 0
    return png


@pytest.mark.parametrize("mode", ["minmax", "zscore"])
def test_pixel_mapping_matches_the_data_pipeline(loaded, mode):
    """Sampled uint8 images use the same inverse mapping as the data pipeline (distgan.data.denormalize)."""
    import dataclasses

    from distgan.api import to_uint8
    from distgan.data import denormalize

    _, info = loaded
    info = dataclasses.replace(info, normalize=mode, mean=[0.13], std=[0.31])
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2
    want = denormalize(x, mode, [0.13], [0.31]).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(to_uint8(x, info), want)


def test_unconditional_run(mnist_shards, tmp_path, capsys):
    from distgan.config import load_config
    from distgan.train import train

    cfg = load_config(ROOT / "configs" / "debug.yaml", [f"data.shards={mnist_shards}", "log.progress=false",
                                                        "model.cond=none", "train.steps=4", "train.ckpt_every=4"])
    train(cfg, tmp_path / "run")
    G, info = load_generator(tmp_path / "run")
    assert info.condition == "none" and info.y_dim == 0
    assert generate(G, info, 5, seed=0).shape == (5, 16, 16, 1)
    png = tmp_path / "u.png"
    assert main(["--run", str(tmp_path / "run"), "--num", "9", "--out", str(png)]) == 0
    assert Image.open(png).size == (3 * 18 + 2, 3 * 18 + 2)  # a square grid
    out = tmp_path / "u.npz"
    assert main(["--run", str(tmp_path / "run"), "--interpolate", "4", "--num", "2", "--out", str(out)]) == 0
    d = np.load(out)
    assert d["images"].shape == (8, 16, 16, 1) and "labels" not in d
    assert main(["--run", str(tmp_path / "run"), "--num", "2", "--labels", "3", "--out", str(png)]) == 2
    assert "unconditional" in capsys.readouterr().err
