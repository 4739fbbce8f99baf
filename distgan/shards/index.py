"""Index an existing WebDataset-format shard set: write the ``manifest.json`` distgan reads.

    python -m distgan.shards index data/                          # every *.tar in data/
    python -m distgan.shards index 'data/train-{000000..000123}.tar' --label json --label-key class
    python -m distgan.shards index 'pipe:curl -sfL https://host/ds/train-{0000..0099}.tar' --out meta/

One pass over every shard records what exact splitting, checksums and resume
need: sample counts and sha256 per shard, the image geometry, per-channel
pixel statistics, class names (from ``.cls`` integers, a ``.json`` field, or
the class folder of the key) and attribute names (a ``.json`` object). The
shards themselves are never rewritten.

Images must all have one size: the index refuses a set of mixed sizes and
names the first sample that differs, because resizing at read time would
silently change the data's aspect ratios (rewrite such data with
``python -m distgan.shards write --source imagefolder ... --resolution R``,
which crops and resizes deliberately). Grey and colour images may mix: grey
ones are read as RGB, as PIL converts them.
"""
from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from distgan.shards.location import PIPE, is_pipe, member_url, open_url
from distgan.shards.manifest import Manifest, ShardError, ShardInfo, write_manifest
from distgan.shards.members import MemberError, SampleFormat, image_member, key_class, raw_attrs, raw_label, split_name
from distgan.shards.writer import pixel_stats

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{000..123}`` ranges (zero padding kept) and ``{a,b}`` lists, as WebDataset does."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    if r := _RANGE.match(body):
        lo, hi = int(r.group(1)), int(r.group(2))
        width = len(r.group(1)) if r.group(1).startswith("0") else 0
        items = [f"{i:0{width}d}" for i in (range(lo, hi + 1) if lo <= hi else range(lo, hi - 1, -1))]
    elif "," in body:
        items = body.split(",")
    else:
        raise ShardError(f"cannot expand '{{{body}}}' in '{pattern}': expected {{first..last}} or {{a,b,...}}")
    return [out for item in items for out in expand_braces(head + item + tail)]


def resolve(spec: str, out: str | None = None) -> tuple[str, list[str], Path]:
    """(location for ``data.shards``, shard file names, directory to write the manifest into).

    ``spec`` is a directory (all ``*.tar`` in it), a brace pattern of files in
    one directory, or a ``pipe:`` command whose last path component holds the
    brace pattern (the location becomes the command with ``{name}`` there).
    """
    if is_pipe(spec):
        tokens = spec.split()
        hits = [i for i, t in enumerate(tokens) if "{" in t]
        if not hits or "{" not in tokens[hits[-1]].rsplit("/", 1)[-1]:
            raise ShardError(f"pipe source '{spec}' needs a brace pattern in its last path component, "
                             "e.g. 'pipe:curl -sfL https://host/data-{000000..000099}.tar'")
        token = tokens[hits[-1]]
        base = token.rsplit("/", 1)[-1]
        tokens[hits[-1]] = token[:len(token) - len(base)] + "{name}"
        if out is None:
            raise ShardError("indexing a pipe: source needs --out DIR for manifest.json (then upload it beside "
                             "the shards, so the same command serves it)")
        return " ".join(tokens), expand_braces(base), Path(out)
    path = Path(spec)
    if path.is_dir():
        names = sorted(p.name for p in path.glob("*.tar"))
        if not names:
            raise ShardError(f"no *.tar shards in directory '{spec}'")
        folder = path
    else:
        files = [Path(f) for f in expand_braces(spec)]
        if len({f.parent for f in files}) != 1:
            raise ShardError(f"the shards of '{spec}' lie in several directories; distgan needs them in one")
        folder, names = files[0].parent, [f.name for f in files]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise ShardError(f"{len(missing)} of {len(names)} shards of '{spec}' do not exist, "
                             f"e.g. {folder / missing[0]}")
    if out is not None and Path(out).resolve() != folder.resolve():
        raise ShardError(f"local shards keep manifest.json beside them: drop --out (got {out}, shards in {folder})")
    return str(folder), names, folder


class _Hashing:
    """A read-only stream that hashes and counts every byte read through it."""

    def __init__(self, f: IO[bytes]):
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.bytes += len(data)
        return data


def _samples(tar: tarfile.TarFile, url: str) -> Iterator[dict[str, Any]]:
    current: dict[str, Any] | None = None
    for info in tar:
        if not info.isfile():
            continue
        key, ext = split_name(info.name)
        if current is not None and current["__key__"] != key:
            yield current
            current = None
        if current is None:
            current = {"__key__": key, "__url__": url}
        current[ext] = tar.extractfile(info).read()
    if current is not None:
        yield current


class _Scan:
    """What the pass over the samples accumulates."""

    def __init__(self, fmt: SampleFormat):
        self.fmt = fmt
        self.size: tuple[int, int] | None = None
        self.first = ""
        self.stats = {1: [np.zeros(1), np.zeros(1), 0], 3: [np.zeros(3), np.zeros(3), 0]}
        self.labels: set[Any] = set()
        self.unlabelled = 0
        self.attributes: dict[str, None] = {}  # ordered set

    def add(self, s: dict[str, Any], where: str) -> None:
        data = image_member(s)
        if data is None:
            raise MemberError("has no image (expected a jpg, jpeg, png or webp member)")
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Exception as e:
            raise MemberError(f"holds an unreadable image: {e}") from None
        if self.size is None:
            self.size, self.first = img.size, where
        elif img.size != self.size:
            raise MemberError(f"is {img.size[0]}x{img.size[1]} (WxH) but {self.first} is "
                              f"{self.size[0]}x{self.size[1]}: mixed image sizes are refused; rewrite them with "
                              "`python -m distgan.shards write --source imagefolder ... --resolution R`")
        grey = img.mode in ("1", "L", "LA", "I", "I;16", "F")
        arr = np.asarray(img.convert("L" if grey else "RGB"))
        acc = self.stats[1 if grey else 3]
        for i, v in enumerate(pixel_stats(arr)):
            acc[i] = acc[i] + v
        label = raw_label(s, self.fmt)
        if label is None:
            self.unlabelled += 1
        else:
            self.labels.add(label)
        if self.fmt.attrs_key:
            self.attributes.update(dict.fromkeys(raw_attrs(s, self.fmt)))

    def classes(self, samples: int) -> list[str]:
        if not self.labels:
            return []
        if self.unlabelled:
            raise ShardError(f"{self.unlabelled} of {samples} samples have no label ({self.fmt.label}); "
                             "label every sample or index with --label none")
        if all(isinstance(v, int) for v in self.labels):
            if min(self.labels) < 0:
                raise ShardError(f"class index {min(self.labels)} is negative")
            return [str(i) for i in range(max(self.labels) + 1)]
        if all(isinstance(v, str) for v in self.labels):
            return sorted(self.labels)
        raise ShardError("labels mix class indices and class names; use one kind")

    def channels_and_moments(self) -> tuple[int, list[float], list[float]]:
        (s1, q1, n1), (s3, q3, n3) = self.stats[1], self.stats[3]
        if n3:  # grey images are read as RGB: their single channel counts for all three
            ch, total, sq, n = 3, s3 + s1, q3 + q1, n3 + n1
        else:
            ch, total, sq, n = 1, s1, q1, n1
        mean = total / max(n, 1)
        std = np.sqrt(np.maximum(sq / max(n, 1) - mean ** 2, 0))
        return ch, [float(v) for v in mean], [float(v) for v in std]


def detect_format(location: str, first: str, label: str, label_key: str, attrs_key: str) -> SampleFormat:
    """Resolve ``label="auto"``: .cls if the first sample has one, else its class folder, else none."""
    if label != "auto":
        return SampleFormat(label, label_key, attrs_key)
    with open_url(member_url(location, first)) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        sample = next(_samples(tar, first), None)
        if sample is None:
            raise ShardError(f"shard '{first}' holds no samples")
        # the rest of the stream is left unread: open_url drains a pipe itself
    if "cls" in sample:
        return SampleFormat("cls", label_key, attrs_key)
    if key_class(sample["__key__"]):
        return SampleFormat("prefix", label_key, attrs_key)
    return SampleFormat("none", label_key, attrs_key)


def index_shards(spec: str, out: str | None = None, label: str = "auto", label_key: str = "label",
                 attrs_key: str = "", progress: bool = True) -> tuple[Manifest, str, Path]:
    """Scan the shards of ``spec`` and write their manifest; returns (manifest, data.shards value, its dir)."""
    location, names, manifest_dir = resolve(spec, out)
    fmt = detect_format(location, names[0], label, label_key, attrs_key)
    scan, infos = _Scan(fmt), []
    bar = None
    if progress:
        bar = tqdm(total=len(names), desc="index", unit="shard")
    for name in names:
        url = member_url(location, name)
        count = 0
        try:
            with open_url(url) as raw:
                f = _Hashing(raw)
                with tarfile.open(fileobj=f, mode="r|*") as tar:
                    for s in _samples(tar, url):
                        try:
                            scan.add(s, f"sample '{s['__key__']}' of shard '{name}'")
                        except MemberError as e:
                            raise ShardError(f"sample '{s['__key__']}' of shard '{url}' {e}") from None
                        count += 1
                while f.read(1 << 20):  # the padding after the end marker belongs to the checksum
                    pass
        except (tarfile.TarError, OSError) as e:
            raise ShardError(f"cannot read shard '{url}': {e}") from None
        infos.append(ShardInfo(name, count, f.sha.hexdigest(), f.bytes))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    total = sum(i.count for i in infos)
    if total == 0:
        raise ShardError(f"'{spec}' holds no samples")
    channels, mean, std = scan.channels_and_moments()
    w, h = scan.size
    m = Manifest(source="webdataset", num_samples=total, height=h, width=w, channels=channels, shards=infos,
                 classes=scan.classes(total), attributes=list(scan.attributes), mean=mean, std=std, split="",
                 extra={"indexed_from": spec}, members=fmt.to_dict())
    manifest_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest_dir, m)
    return m, location if location.startswith(PIPE) else str(manifest_dir), manifest_dir
