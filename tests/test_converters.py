"""Every shard converter on a tiny fake data set in its real file format, read back through the pipeline.

The fakes are real files: PNG/JPEG images written by PIL, gzipped and plain
idx-ubyte files, python pickle batches, CelebA's text attribute lists.
"""
from __future__ import annotations

import gzip
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgan.data.pipeline import in_order
from distgan.shards import read_manifest, verify, write_shards
from distgan.shards.arrays import FASHION_CLASSES
from distgan.shards.sources import SourceError, SourceOptions, fit, load_image

ROOT = Path(__file__).resolve().parents[1]
CELEBA_ATTRS = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
                "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
                "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
                "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
                "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie "
                "Young").split()


def read_all(shard_dir, resolution, batch_size=4) -> dict[str, dict]:
    """Every sample of a shard set, by key, through the pipeline's read and decode stages."""
    out = {}
    for b in in_order(shard_dir, resolution, batch_size):
        for i, k in enumerate(b["key"]):
            assert k not in out
            out[k] = {name: b[name][i] for name in ("image", "label", "attrs", "src") if name in b}
    return out


def rand_img(rng, h, w, c) -> np.ndarray:
    # smooth-ish content so JPEG round trips are close to the source, plus noise for uniqueness
    base = np.linspace(0, 200, w, dtype=np.float32)[None, :, None] + rng.integers(0, 55, (h, w, c))
    return base.astype(np.uint8)[:, :, 0] if c == 1 else base.astype(np.uint8)


def save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


# ----------------------------------------------------------------------------- imagefolder

@pytest.fixture(scope="module")
def dogs(tmp_path_factory) -> Path:
    """3 breeds x 8 images, mixed JPEG/PNG, non-square sizes."""
    root = tmp_path_factory.mktemp("dogs")
    rng = np.random.default_rng(0)
    for breed in ("n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02086240-Shih-Tzu"):
        for i in range(8):
            ext = "jpg" if i % 2 else "png"
            save(rand_img(rng, 30 + i, 40, 3), root / breed / f"{breed[:9]}_{i}.{ext}")
    return root


def test_imagefolder_round_trip_with_crop_resize_and_workers(dogs, tmp_path):
    opts = SourceOptions(resolution=16, seed=3)
    m = write_shards("imagefolder", str(dogs), tmp_path / "a", shard_size=5, opts=opts, progress=False, workers=2)
    assert m.classes == ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02086240-Shih-Tzu"]
    assert (m.num_samples, len(m.shards), m.height, m.width, m.channels) == (24, 5, 16, 16, 3)
    assert [s.count for s in m.shards] == [5, 5, 5, 5, 4] and verify(tmp_path / "a") == []
    assert len(m.mean) == 3 and all(0 < v < 1 for v in m.mean + m.std)
    got = read_all(tmp_path / "a", 16)
    by_stem = {f.stem: f for f in dogs.glob("*/*")}  # stems are unique in this fake set
    assert len(got) == 24
    for key, s in got.items():
        src = next(f for stem, f in by_stem.items() if key.endswith("_" + stem))
        assert int(s["label"]) == m.classes.index(src.parent.name)
        want = fit(load_image(str(src)), opts)  # center crop + resize, exactly as written
        assert np.array_equal(s["image"].permute(1, 2, 0).numpy(), want)
    # encoding in 1 or 2 processes gives byte-identical shards; the seed changes the order
    m1 = write_shards("imagefolder", str(dogs), tmp_path / "b", 5, opts, progress=False, workers=1)
    assert [s.sha256 for s in m1.shards] == [s.sha256 for s in m.shards]
    m2 = write_shards("imagefolder", str(dogs), tmp_path / "c", 5, SourceOptions(resolution=16, seed=4),
                      progress=False, workers=1)
    assert [s.sha256 for s in m2.shards] != [s.sha256 for s in m.shards]


def test_imagefolder_errors_name_the_file(dogs, tmp_path):
    bad = tmp_path / "bad"
    import shutil
    shutil.copytree(dogs, bad)
    broken = bad / "n02086240-Shih-Tzu" / "zz_broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(SourceError, match="zz_broken.jpg.*unreadable image"):
        write_shards("imagefolder", str(bad), tmp_path / "o1", 10, SourceOptions(resolution=16), progress=False,
                     workers=2)
    broken.unlink()
    gray = bad / "n02085620-Chihuahua" / "zz_gray.png"
    save(np.full((30, 40), 90, np.uint8), gray)
    with pytest.raises(SourceError, match="zz_gray.png.*mixed channel counts"):
        write_shards("imagefolder", str(bad), tmp_path / "o2", 10, SourceOptions(resolution=16), progress=False)
    m = write_shards("imagefolder", str(bad), tmp_path / "o3", 10, SourceOptions(resolution=16, channels=3),
                     progress=False)
    assert m.channels == 3 and m.num_samples == 25


def test_cli_writes_shards_with_progress_and_reports_errors(dogs, tmp_path):
    run = [sys.executable, "-m", "distgan.shards", "write", "--source", "imagefolder", str(dogs),
           "--out", str(tmp_path / "cli"), "--shard-size", "10", "--resolution", "8", "--workers", "2"]
    r = subprocess.run(run, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "wrote 24 samples in 3 shards" in r.stdout and "img/s" in r.stderr  # the tqdm bar
    r = subprocess.run(run[:6] + [str(tmp_path / "nope")] + run[7:], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "nope: not a directory" in r.stderr


def test_rewrite_with_fewer_shards_removes_stale_ones(dogs, tmp_path):
    write_shards("imagefolder", str(dogs), tmp_path, 4, SourceOptions(resolution=8), progress=False)
    assert len(list(tmp_path.glob("shard-*.tar"))) == 6
    write_shards("imagefolder", str(dogs), tmp_path, 12, SourceOptions(resolution=8), progress=False)
    assert sorted(p.name for p in tmp_path.glob("shard-*.tar")) == [s.name for s in read_manifest(tmp_path).shards]


# ----------------------------------------------------------------------------- celeba

@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    """12 aligned 'faces' (36x44 JPEGs), the 40-attribute list and a partition file."""
    root = tmp_path_factory.mktemp("celeba")
    rng = np.random.default_rng(1)
    attrs = rng.choice([-1, 1], size=(12, 40))
    rows = []
    for i in range(12):
        name = f"{i + 1:06d}.jpg"
        save(rand_img(rng, 44, 36, 3), root / "img_align_celeba" / name)
        rows.append(name + " " + " ".join(f"{v:2d}" for v in attrs[i]))
    (root / "list_attr_celeba.txt").write_text("12\n" + " ".join(CELEBA_ATTRS) + " \n" + "\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {0 if i < 8 else 1 + i % 2}\n"
                                                         for i in range(12)))
    np.save(root / "attrs.npy", attrs)
    return root


def test_celeba_attributes_split_and_crop(celeba, tmp_path):
    m = write_shards("celeba", str(celeba), tmp_path / "train", 3, SourceOptions(resolution=16), progress=False,
                     workers=2)
    assert m.attributes == CELEBA_ATTRS and m.split == "train" and m.classes == []
    assert (m.num_samples, m.height, m.channels) == (8, 16, 3)
    attrs = np.load(celeba / "attrs.npy")
    got = read_all(tmp_path / "train", 16)
    assert sorted(got) == [f"{i + 1:06d}" for i in range(8)]
    for key, s in got.items():
        i = int(key) - 1
        assert s["attrs"].tolist() == (attrs[i] > 0).astype(float).tolist()
        assert "label" not in s
        want = fit(load_image(str(celeba / "img_align_celeba" / f"{key}.jpg")), SourceOptions(resolution=16))
        assert np.array_equal(s["image"].permute(1, 2, 0).numpy(), want)
    test = write_shards("celeba", str(celeba), tmp_path / "test", 3, SourceOptions(resolution=16, split="test"),
                        progress=False)
    assert test.num_samples == 2 and test.split == "test"


def test_celeba_errors_name_the_file(celeba, tmp_path):
    import shutil
    d = tmp_path / "c"
    shutil.copytree(celeba, d)
    (d / "img_align_celeba" / "000005.jpg").unlink()
    with pytest.raises(SourceError, match=r"row for '000005.jpg'.*000005.jpg does not exist"):
        write_shards("celeba", str(d), tmp_path / "o", 4, progress=False)
    (d / "list_eval_partition.txt").unlink()
    (d / "list_attr_celeba.txt").rename(d / "attrs.txt")
    with pytest.raises(SourceError, match="list_attr_celeba.txt: attribute file missing"):
        write_shards("celeba", str(d), tmp_path / "o", 4, progress=False)
    (d / "attrs.txt").rename(d / "list_attr_celeba.txt")
    with pytest.raises(SourceError, match="list_eval_partition.txt: partition file missing"):
        write_shards("celeba", str(d), tmp_path / "o", 4, SourceOptions(split="valid"), progress=False)


# ----------------------------------------------------------------------------- idx files

def write_idx(path: Path, arr: np.ndarray) -> None:
    blob = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)


@pytest.mark.parametrize("kind,gz", [("mnist-idx", True), ("fashion-mnist-idx", False)])
def test_idx_round_trip_exact_pixels_and_labels(tmp_path, kind, gz):
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), rng.integers(0, 10, 30)
    ext = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", x)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", y)
    m = write_shards(kind, str(tmp_path), tmp_path / "out", 8, progress=False, workers=2)
    assert (m.num_samples, m.height, m.channels, len(m.shards)) == (30, 28, 1, 4)
    assert m.classes == (FASHION_CLASSES if kind.startswith("fashion") else [str(d) for d in range(10)])
    got = read_all(tmp_path / "out", 28)
    for key, s in got.items():
        i = int(key.rsplit("-", 1)[1])
        assert np.array_equal(s["image"][0].numpy(), x[i]) and int(s["label"]) == y[i]
    (tmp_path / f"train-labels-idx1-ubyte{ext}").unlink()
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", y[:29])
    with pytest.raises(SourceError, match="train-labels-idx1-ubyte.*29 labels for 30 images"):
        write_shards(kind, str(tmp_path), tmp_path / "bad", 8, progress=False)


def test_idx_bad_magic_names_the_file(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(SourceError, match="t10k-images-idx3-ubyte: not an idx file"):
        write_shards("mnist-idx", str(tmp_path), tmp_path / "o", 8, SourceOptions(split="test"), progress=False)


# ----------------------------------------------------------------------------- cifar10

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    """cifar-10-batches-py with 5 train batches of 4 images, a test batch, batches.meta (protocol 2, bytes keys)."""
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(3)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": 4,
                     b"num_vis": 3072}, f, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, 4)],
                 b"data": data, b"filenames": [f"img_{j}.png".encode() for j in range(4)]}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return root.parent


def test_cifar10_round_trip_planes_and_class_names(cifar, tmp_path):
    m = write_shards("cifar10", str(cifar), tmp_path / "o", 6, progress=False, workers=2)
    assert m.classes == CIFAR_NAMES and (m.num_samples, m.height, m.channels) == (20, 32, 3)
    got = read_all(tmp_path / "o", 32)
    for key, s in got.items():
        batch, row = "_".join(key.split("-")[1:-1]), int(key.rsplit("-", 1)[1])  # cifar-data-batch-2-00003
        with open(cifar / "cifar-10-batches-py" / batch, "rb") as f:
            b = pickle.load(f, encoding="bytes")
        want = b[b"data"][row].reshape(3, 32, 32)  # CHW planes, as the pipeline yields
        assert np.array_equal(s["image"].numpy(), want) and int(s["label"]) == b[b"labels"][row]
    assert write_shards("cifar10", str(cifar), tmp_path / "t", 6, SourceOptions(split="test"),
                        progress=False).num_samples == 4


def test_cifar10_refuses_code_in_pickles_and_names_missing_batch(cifar, tmp_path):
    import shutil
    d = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar / "cifar-10-batches-py", d)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f, protocol=2)
    with pytest.raises(SourceError, match="test_batch: unreadable CIFAR pickle batch.*refusing to load .*print"):
        write_shards("cifar10", str(tmp_path), tmp_path / "o", 6, SourceOptions(split="test"), progress=False)
    (d / "data_batch_3").unlink()
    with pytest.raises(SourceError, match="data_batch_3: missing"):
        write_shards("cifar10", str(tmp_path), tmp_path / "o", 6, progress=False)


# ----------------------------------------------------------------------------- paired

def test_paired_side_by_side_and_folders(tmp_path):
    rng = np.random.default_rng(4)
    a_imgs = {f"p{i}": rand_img(rng, 16, 16, 3) for i in range(6)}
    b_imgs = {f"p{i}": rand_img(rng, 16, 16, 3) for i in range(6)}
    for k in a_imgs:  # A|B side by side, lossless PNG
        save(np.concatenate([a_imgs[k], b_imgs[k]], axis=1), tmp_path / "facades" / "train" / f"{k}.png")
        save(a_imgs[k], tmp_path / "folders" / "A" / f"{k}.png")
        save(b_imgs[k], tmp_path / "folders" / "B" / f"{k}.png")
    m = write_shards("paired", str(tmp_path / "facades"), tmp_path / "o1", 4, progress=False, workers=2)
    assert m.paired and m.num_samples == 6 and m.extra["direction"] == "AtoB"
    for opts, src_dir, out in ((SourceOptions(), "facades", "o1"), (SourceOptions(direction="BtoA"), "folders", "o2")):
        if out == "o2":
            write_shards("paired", str(tmp_path / src_dir), tmp_path / out, 4, opts, progress=False)
        got = read_all(tmp_path / out, 16)
        assert len(got) == 6
        for key, s in got.items():
            k = key.split("_")[-1]
            inp, target = (a_imgs[k], b_imgs[k]) if opts.direction == "AtoB" else (b_imgs[k], a_imgs[k])
            assert np.array_equal(s["src"].permute(1, 2, 0).numpy(), inp)  # src.png = the input
            assert np.array_equal(s["image"].permute(1, 2, 0).numpy(), target)  # png = the target
    (tmp_path / "folders" / "B" / "p3.png").unlink()
    with pytest.raises(SourceError, match="p3.png: no matching file in"):
        write_shards("paired", str(tmp_path / "folders"), tmp_path / "o3", 4, progress=False)


@pytest.mark.timeout(60)
def test_failing_parallel_write_does_not_hang_under_a_sigterm_handler(dogs, tmp_path):
    """A trainer in the same process installs a SIGTERM 'stop' flag; pool workers must still terminate."""
    import shutil
    import signal

    bad = tmp_path / "bad"
    shutil.copytree(dogs, bad)
    (bad / "n02085620-Chihuahua" / "zz.png").write_bytes(b"junk")
    old = signal.signal(signal.SIGTERM, lambda *a: None)
    try:
        with pytest.raises(SourceError, match="zz.png"):
            write_shards("imagefolder", str(bad), tmp_path / "o", 4, SourceOptions(resolution=8), progress=False,
                         workers=2)
    finally:
        signal.signal(signal.SIGTERM, old)
