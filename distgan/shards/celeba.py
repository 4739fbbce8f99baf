"""CelebA converter: ``--source celeba DIR``.

DIR holds the files of the official release:

    img_align_celeba/000001.jpg ...   aligned 178x218 faces
    list_attr_celeba.txt              line 1: count; line 2: 40 attribute names;
                                      then "000001.jpg  -1  1 ..." (one row per image)
    list_eval_partition.txt           optional: "000001.jpg 0" (0 train, 1 valid, 2 test)

The 40 attributes are stored as 0/1 (``KEY.attr``) with their names in the
manifest. ``--split train|valid|test|all`` selects rows by the partition file
(without it only ``all`` / the default ``train`` is possible and the manifest
says ``all``). Typical use, as in Bordon et al. (64x64 faces)::

    python -m distgan.shards write --source celeba data/celeba --out shards/celeba64 --resolution 64
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from distgan.shards.folders import FileItem, load_file_item
from distgan.shards.records import SourceData, SourceError, SourceOptions, safe_key

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"
SPLITS = {"train": 0, "valid": 1, "val": 1, "test": 2}


def read_attributes(path: Path) -> tuple[list[str], list[tuple[str, np.ndarray]]]:
    """Parse list_attr_celeba.txt -> (names, [(file name, 0/1 uint8 vector)])."""
    if not path.is_file():
        raise SourceError(f"{path}: attribute file missing (celeba needs {ATTR_FILE} beside {IMAGE_DIR}/)")
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise SourceError(f"{path}: expected a count line and a header line of attribute names")
    names = lines[1].split()
    rows = []
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise SourceError(f"{path}:{n}: expected a file name and {len(names)} values, got {len(parts)} fields")
        try:
            vals = [int(v) for v in parts[1:]]
        except ValueError:
            raise SourceError(f"{path}:{n}: attribute values must be -1/1 (or 0/1), got {parts[1:4]}...") from None
        if any(v not in (-1, 0, 1) for v in vals):
            raise SourceError(f"{path}:{n}: attribute values must be -1/1 (or 0/1)")
        rows.append((parts[0], (np.array(vals) > 0).astype(np.uint8)))
    try:
        declared = int(lines[0].split()[0])
    except (ValueError, IndexError):
        declared = len(rows)
    if declared != len(rows):
        raise SourceError(f"{path}: line 1 says {declared} images, the file lists {len(rows)}")
    return names, rows


def read_partition(path: Path) -> dict[str, int]:
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise SourceError(f"{path}:{n}: expected '<file> <0|1|2>', got {line!r}")
        out[parts[0]] = int(parts[1])
    return out


def celeba(path: str | None, opts: SourceOptions) -> SourceData:
    """Aligned CelebA faces with their 40 binary attributes."""
    if not path or not Path(path).is_dir():
        raise SourceError(f"source 'celeba' needs the CelebA directory (with {IMAGE_DIR}/ and {ATTR_FILE}), "
                          f"got {path!r}")
    root = Path(path)
    img_dir = root / IMAGE_DIR
    if not img_dir.is_dir():
        raise SourceError(f"{img_dir}: image folder missing (celeba expects DIR/{IMAGE_DIR}/*.jpg)")
    names, rows = read_attributes(root / ATTR_FILE)
    split = opts.split
    if split != "all":
        if split not in SPLITS:
            raise SourceError(f"celeba --split must be train, valid, test or all, got {split!r}")
        part_path = root / PARTITION_FILE
        if part_path.is_file():
            part = read_partition(part_path)
            unlisted = [f for f, _ in rows if f not in part]
            if unlisted:
                raise SourceError(f"{part_path}: no partition for {unlisted[0]} ({len(unlisted)} images unlisted)")
            rows = [(f, a) for f, a in rows if part[f] == SPLITS[split]]
        elif split == "train":
            split = "all"  # no partition file: the whole set, and the manifest says so
        else:
            raise SourceError(f"{part_path}: partition file missing, needed for --split {split}")
    present = {p.name for p in img_dir.iterdir()}
    for f, _ in rows:
        if f not in present:
            raise SourceError(f"{root / ATTR_FILE}: row for '{f}' but {img_dir / f} does not exist")
    items = [FileItem(key=safe_key(Path(f).stem), path=str(img_dir / f), attrs=a) for f, a in rows]
    if not items:
        raise SourceError(f"{root}: no images in split {split!r}")
    return SourceData(samples=items, num_samples=len(items), attributes=names, split=split,
                      load=load_file_item, extra={"input": str(root)})
