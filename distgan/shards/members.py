"""How a sample's tar members map to an image, a class and attributes.

distgan's own shards store ``KEY.png``, ``KEY.cls`` (class index) and
``KEY.attr`` (a 0/1 string). Shards from the wider WebDataset world (written
by ``webdataset.ShardWriter``, img2dataset, ...) store the image as
``jpg``/``jpeg``/``png``/``webp`` and the label as ``.cls``, as a field of a
``.json`` member, or implicitly as the class-folder part of the key
(``cat/0001.jpg``). :class:`SampleFormat` (recorded in ``manifest.json`` by
``python -m distgan.shards index``) says which; :func:`canonical` rewrites a
raw sample into distgan's member names so every reader downstream (decode,
metrics, the GPU-resident cache) sees one layout.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
LABEL_SOURCES = ("none", "cls", "json", "prefix")


class MemberError(ValueError):
    """A sample lacks a member its format promises, or holds one that does not parse."""


@dataclass(frozen=True)
class SampleFormat:
    """Where a sample's label and attributes come from (images: the first of :data:`IMAGE_EXTS`)."""

    label: str = "cls"  # none | cls | json | prefix
    label_key: str = "label"  # the .json field holding the class (int index or name)
    attrs_key: str = ""  # the .json field holding {attribute: 0/1 or -1/1}; empty = none

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "SampleFormat":
        return cls(**d) if d else cls()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def native(self) -> bool:
        """True for distgan's own layout (nothing to rewrite)."""
        return self.label == "cls" and not self.attrs_key


def split_name(name: str) -> tuple[str, str]:
    """``dir/key.ext.more`` -> (``dir/key``, ``ext.more``): WebDataset's rule, the first dot of the base name."""
    if "/" not in name:  # the common case, kept cheap: it runs once per tar member
        key, dot, ext = name.partition(".")
        return key, ext
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


def image_member(sample: dict[str, Any]) -> bytes | None:
    """The encoded image of a raw sample, or None when it has none."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    return None


def key_class(key: str) -> str:
    """The class-folder part of a key: ``train/cat/0001`` -> ``cat``; '' when the key has no folder."""
    parts = key.split("/")
    return parts[-2] if len(parts) > 1 else ""


def read_json(sample: dict[str, Any]) -> dict[str, Any]:
    if "json" not in sample:
        raise MemberError("has no .json member")
    try:
        obj = json.loads(sample["json"])
    except ValueError as e:
        raise MemberError(f"holds invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise MemberError(f".json holds a {type(obj).__name__}, expected an object")
    return obj


def raw_label(sample: dict[str, Any], fmt: SampleFormat) -> int | str | None:
    """The label as stored: an int (cls, or a JSON number) or a class name (JSON string, key prefix)."""
    if fmt.label == "none":
        return None
    if fmt.label == "cls":
        if "cls" not in sample:
            return None
        try:
            return int(sample["cls"])
        except ValueError:
            raise MemberError(f".cls holds {sample['cls'][:20]!r}, expected an integer") from None
    if fmt.label == "prefix":
        name = key_class(sample["__key__"])
        if not name:
            raise MemberError("key has no class folder (expected CLASS/NAME)")
        return name
    value = read_json(sample).get(fmt.label_key)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise MemberError(f".json field '{fmt.label_key}' is {value!r}, expected a class index or name")
    return value


def raw_attrs(sample: dict[str, Any], fmt: SampleFormat) -> dict[str, bool]:
    """Attribute name -> present, from the .json field ``fmt.attrs_key`` (values > 0 count as present)."""
    value = read_json(sample).get(fmt.attrs_key)
    if not isinstance(value, dict) or not all(isinstance(v, (int, float, bool)) for v in value.values()):
        raise MemberError(f".json field '{fmt.attrs_key}' is {str(value)[:60]!r}, "
                          "expected an object of attribute -> 0/1 (or -1/1)")
    return {str(k): v > 0 for k, v in value.items()}


class Canonicalizer:
    """Rewrites raw samples into distgan's members (``png`` = the image bytes, ``cls``, ``attr``).

    ``classes`` maps string labels to indices; integer labels are indices
    already. ``attributes`` fixes the order of the 0/1 attribute string.
    """

    def __init__(self, fmt: SampleFormat, classes: list[str], attributes: list[str]):
        self.fmt, self.attributes = fmt, list(attributes)
        self.index = {name: i for i, name in enumerate(classes)}

    @classmethod
    def for_manifest(cls, manifest: Any) -> "Canonicalizer":
        """The rewriting a shard set's manifest asks for (its ``members`` entry; empty = distgan's own)."""
        return cls(SampleFormat.from_dict(manifest.members), manifest.classes, manifest.attributes)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        if self.fmt.native and "png" in sample:
            return sample  # distgan's own layout: nothing to rewrite
        image = image_member(sample)
        if image is None:
            raise MemberError(f"has no image (members: {', '.join(k for k in sample if not k.startswith('__'))}; "
                              f"expected one of {', '.join(IMAGE_EXTS)})")
        out = {"__key__": sample["__key__"], "__url__": sample["__url__"], "png": image}
        if "src.png" in sample:
            out["src.png"] = sample["src.png"]
        label = raw_label(sample, self.fmt)
        if isinstance(label, str):
            if label not in self.index:
                raise MemberError(f"label '{label}' is not among the manifest's classes")
            label = self.index[label]
        if label is not None:
            out["cls"] = str(label).encode()
        if "attr" in sample and not self.fmt.attrs_key:
            out["attr"] = sample["attr"]
        elif self.fmt.attrs_key:
            present = raw_attrs(sample, self.fmt)
            out["attr"] = "".join("1" if present.get(a, False) else "0" for a in self.attributes).encode()
        return out
