"""Converters for image files on disk: ``imagefolder`` and ``paired`` (pix2pix).

imagefolder DIR
    One sub-folder per class (Stanford Dogs / torchvision ImageFolder layout);
    class names are the folder names, sorted; files are read in sorted order.
    When ``DIR/<split>/`` exists (e.g. train/, val/) that is used instead.

paired DIR
    pix2pix data in either layout:
    * side-by-side ``A|B`` images (one file per pair, width = 2 x height), in
      ``DIR/<split>/`` when it exists, else in ``DIR``;
    * two folders ``A/`` and ``B/`` with files of matching names (stems), in
      ``DIR/<split>/{A,B}``, ``DIR/{A,B}/<split>`` or ``DIR/{A,B}``.
    ``--direction AtoB`` (default) makes A the input: stored as ``src.png``,
    with B, the target, as ``png``. ``BtoA`` swaps them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distgan.shards.images import IMAGE_EXTENSIONS, load_image
from distgan.shards.records import Sample, SourceData, SourceError, SourceOptions, safe_key


@dataclass
class FileItem:
    """A sample still on disk; loaded by :func:`load_file_item` in a worker process."""
    key: str
    path: str
    label: int | None = None
    attrs: np.ndarray | None = None
    src_path: str = ""  # paired folders: the partner file
    side_by_side: bool = False  # paired A|B in one file
    swap: bool = False  # paired: B is the input


def load_file_item(item: FileItem, opts: SourceOptions) -> Sample:
    img = load_image(item.path)
    src = None
    if item.side_by_side:
        h, w = img.shape[:2]
        if w % 2:
            raise SourceError(f"{item.path}: a side-by-side A|B pair needs an even width, got {w}x{h}")
        a, b = img[:, : w // 2], img[:, w // 2:]
        src, img = (b, a) if item.swap else (a, b)
    elif item.src_path:
        src = load_image(item.src_path)
        if item.swap:
            src, img = img, src
    if src is not None and src.shape[2] != img.shape[2]:
        # edge maps are often grayscale beside RGB photos: store both with the target's channels
        src = np.repeat(src, 3, axis=2) if src.shape[2] == 1 else src.mean(2, keepdims=True).astype(np.uint8)
    return Sample(key=item.key, image=img, label=item.label, attrs=item.attrs, src=src, origin=item.path)


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _require_dir(path: str | None, kind: str) -> Path:
    if not path:
        raise SourceError(f"source '{kind}' needs an input directory: --source {kind} DIR")
    p = Path(path)
    if not p.is_dir():
        raise SourceError(f"{p}: not a directory (source '{kind}' expects a directory)")
    return p


def imagefolder(path: str | None, opts: SourceOptions) -> SourceData:
    """One sub-folder per class; class names = sorted folder names."""
    root = _require_dir(path, "imagefolder")
    if (root / opts.split).is_dir():
        root = root / opts.split
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise SourceError(f"{root}: no class sub-folders (imagefolder expects DIR/<class>/<image>)")
    items = []
    for label, name in enumerate(classes):
        files = image_files(root / name)
        if not files:
            raise SourceError(f"{root / name}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        items += [FileItem(key=safe_key(f"{len(items) + i:07d}", name, f.stem), path=str(f), label=label)
                  for i, f in enumerate(files)]
    return SourceData(samples=items, num_samples=len(items), classes=classes, load=load_file_item,
                      extra={"input": str(root)})


def _paired_folders(root: Path, split: str) -> tuple[Path, Path] | None:
    for a, b in ((root / split / "A", root / split / "B"), (root / "A" / split, root / "B" / split),
                 (root / "A", root / "B")):
        if a.is_dir() and b.is_dir():
            return a, b
    return None


def paired(path: str | None, opts: SourceOptions) -> SourceData:
    """pix2pix pairs: side-by-side A|B files or matching A/ and B/ folders."""
    root = _require_dir(path, "paired")
    if opts.direction not in ("AtoB", "BtoA"):
        raise SourceError(f"--direction must be AtoB or BtoA, got {opts.direction!r}")
    swap = opts.direction == "BtoA"
    folders = _paired_folders(root, opts.split)
    if folders:
        fa, fb = folders
        a_files, b_files = image_files(fa), image_files(fb)
        b_by_stem = {f.stem: f for f in b_files}
        missing = [f for f in a_files if f.stem not in b_by_stem]
        if missing:
            raise SourceError(f"{missing[0]}: no matching file in {fb} ({len(missing)} of {len(a_files)} "
                              "A images have no B partner with the same name)")
        extra_b = sorted(set(b_by_stem) - {f.stem for f in a_files})
        if extra_b:
            raise SourceError(f"{b_by_stem[extra_b[0]]}: no matching file in {fa} ({len(extra_b)} B images "
                              "have no A partner)")
        # the target (png) is B unless BtoA; load_file_item swaps when asked
        items = [FileItem(key=safe_key(f"{i:07d}", f.stem), path=str(b_by_stem[f.stem]), src_path=str(f),
                          swap=swap) for i, f in enumerate(a_files)]
        layout = f"folders {fa} | {fb}"
    else:
        base = root / opts.split if (root / opts.split).is_dir() else root
        files = image_files(base)
        items = [FileItem(key=safe_key(f"{i:07d}", f.stem), path=str(f), side_by_side=True, swap=swap)
                 for i, f in enumerate(files)]
        layout = f"side-by-side A|B in {base}"
    if not items:
        raise SourceError(f"{root}: no image pairs found (expected A|B images, or A/ and B/ folders)")
    return SourceData(samples=items, num_samples=len(items), paired=True, load=load_file_item,
                      extra={"input": str(root), "layout": layout, "direction": opts.direction})
