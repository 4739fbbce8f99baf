"""The shard-set manifest: what a shard directory holds and how to check it.

``manifest.json`` records the source, sample counts and sha256 per shard, image
geometry, class and attribute names, and per-channel pixel statistics (for
z-score normalisation). Readers use :func:`read_manifest` and :func:`verify`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distgan.errors import UserError
from distgan.fsutil import atomic_write_text, sha256_file
from distgan.shards.location import is_pipe, member_url, open_url

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ShardError(UserError, RuntimeError):
    """A shard set is missing, damaged or inconsistent; the message names the file."""


@dataclass
class ShardInfo:
    name: str
    count: int
    sha256: str
    bytes: int


@dataclass
class Manifest:
    source: str
    num_samples: int
    height: int
    width: int
    channels: int
    shards: list[ShardInfo]
    classes: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    split: str = "train"
    seed: int = 0
    paired: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # how samples store image/label/attributes (distgan.shards.members.SampleFormat); empty = png/cls/attr
    members: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def digest(self) -> str:
        """Stable identity of the shard set's content (for caches keyed by data)."""
        blob = json.dumps([s.sha256 for s in self.shards] + [self.height, self.width, self.channels])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_manifest(out_dir: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically."""
    record = asdict(manifest)
    if not record["members"]:  # distgan's own layout: the manifest stays readable by earlier versions
        del record["members"]
    atomic_write_text(Path(out_dir) / MANIFEST, json.dumps(record, indent=1) + "\n")


def read_manifest(shard_dir: str | Path) -> Manifest:
    """Load and sanity-check a shard set's manifest (a directory or a ``pipe:...{name}`` source)."""
    if is_pipe(shard_dir):
        path = member_url(shard_dir, MANIFEST)
        try:
            with open_url(path) as f:
                text = f.read().decode()
        except OSError as e:
            raise ShardError(f"cannot fetch {MANIFEST} from pipe source '{shard_dir}': {e}") from None
    else:
        path = Path(shard_dir) / MANIFEST
        if not path.is_file():
            hint = ("write shards first, e.g. `python -m distgan.shards write --source mnist-embedded "
                    f"--out {shard_dir}`")
            raise ShardError(f"no {MANIFEST} in shard directory '{shard_dir}': {hint}")
        text = path.read_text()
    try:
        raw = json.loads(text)
        raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
        m = Manifest(**raw)
    except (ValueError, TypeError, KeyError) as e:
        raise ShardError(f"{path} is not a valid distgan manifest: {e}") from None
    if sum(s.count for s in m.shards) != m.num_samples:
        raise ShardError(f"{path}: per-shard counts add up to {sum(s.count for s in m.shards)}, "
                         f"but num_samples is {m.num_samples}")
    if any(s.count < 0 for s in m.shards) or len({s.name for s in m.shards}) != len(m.shards):
        raise ShardError(f"{path}: negative sample count or duplicate shard name")
    return m


def verify(shard_dir: str | Path, manifest: Manifest | None = None, checksums: bool = True) -> list[str]:
    """Return one problem line per missing, truncated or tampered shard (empty list = all good).

    Local shards are checked for presence and size (cheap) and, with
    ``checksums``, sha256. A ``pipe:`` source has no cheap check: without
    ``checksums`` nothing is read; with it every shard is streamed and hashed.
    """
    return list(damaged_shards(shard_dir, manifest, checksums).values())


def damaged_shards(shard_dir: str | Path, manifest: Manifest | None = None,
                   checksums: bool = True) -> dict[str, str]:
    """Shard name -> problem line, for each damaged or missing shard (see :func:`verify`)."""
    manifest = manifest or read_manifest(shard_dir)
    problems: dict[str, str] = {}
    for s in manifest.shards:
        url = member_url(shard_dir, s.name)
        if is_pipe(shard_dir):
            if checksums and (line := _verify_stream(url, s)):
                problems[s.name] = line
            continue
        p = Path(url)
        if not p.is_file():
            problems[s.name] = f"{p}: missing"
            continue
        size = p.stat().st_size
        if size != s.bytes:
            problems[s.name] = f"{p}: size {size} bytes, manifest says {s.bytes} (truncated or replaced)"
        elif checksums and sha256_file(p) != s.sha256:
            problems[s.name] = f"{p}: sha256 mismatch (tampered or corrupt)"
    return problems


def _verify_stream(url: str, s: ShardInfo) -> str:
    h, size = hashlib.sha256(), 0
    try:
        with open_url(url) as f:
            while block := f.read(1 << 20):
                h.update(block)
                size += len(block)
    except OSError as e:
        return f"{url}: unreadable ({e})"
    if size != s.bytes:
        return f"{url}: size {size} bytes, manifest says {s.bytes} (truncated or replaced)"
    if h.hexdigest() != s.sha256:
        return f"{url}: sha256 mismatch (tampered or corrupt)"
    return ""
