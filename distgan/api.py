"""Use a trained run from Python: load its generator and make images.

    import distgan
    G, info = distgan.load_generator("runs/mnist_cdcgan")           # latest checkpoint, CPU
    images = distgan.generate(G, info, 30, labels=[0, 3, 7], seed=1)  # uint8 (30, H, W, C)
    images = G.sample(10, labels="7", seed=1)                         # the same helper, bound to G
    mix = distgan.generate(G, info, 8, labels=info.label_vector({"3": .5, "8": .5}), seed=1)

Loading needs nothing but the run directory: ``config.yaml`` (how G was built),
``data_info.json`` (classes, attributes, image geometry, pixel normalisation;
written by the trainer through :func:`distgan.rundir.write_data_info`) and a checkpoint.
No shards, no training code. A single ``.safetensors`` file written by
``python -m distgan.export --format safetensors`` holds the same three things
and loads the same way: ``distgan.load_generator("mnist_g.safetensors")``.

Labels for :func:`generate`: ``None`` (every class in turn), a class index or
name (all images of that class), a list of indices/names or an array of
``(L, C)`` float label weights (weighted / multi-class conditioning, De Matteis).
The ``n`` images are split over the ``L`` labels in contiguous, equal blocks
(the last may be shorter), in order. Attributes work the same way with dicts
``{"Male": 1, "Smiling": 0}`` (unnamed attributes are 0) or ``(L, A)`` arrays.
"""
from __future__ import annotations

import dataclasses
import json
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distgan.checkpoint import CheckpointError, generator_weights, read_checkpoint
from distgan.config import Config, ConfigError, config_from_dict
from distgan.errors import UserError
from distgan.models import DataInfo, build_models
from distgan.modelspec import arch_spec
from distgan.pixels import to_uint8_nhwc
from distgan.rundir import (
    DATA_INFO,
    CheckpointNotFound,
    config_path,
    read_config,
)
from distgan.shards.manifest import read_manifest
from distgan.weights import GeneratorFileError, read_generator_file

LabelSpec = Any  # None | int | str | Sequence[int | str] | array (L, C)
AttrSpec = Any  # None | dict | Sequence[dict] | array (L, A)


class SampleError(UserError, ValueError):
    """A label, attribute, checkpoint or run-dir problem; the message lists what is available."""


class UnreadableCheckpoint(SampleError):
    """A checkpoint file exists but does not load (truncated, corrupt, or refused by the weights-only loader)."""


# ----------------------------------------------------------------------------- data_info.json

def read_data_info(run_dir: str | Path, cfg: Config | None = None) -> dict[str, Any]:
    """``data_info.json`` of a run; for runs trained before it existed, the shard manifest."""
    path = Path(run_dir) / DATA_INFO
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SampleError(f"{path} is not valid JSON ({e}); delete it and re-run the trainer "
                              "for one step, or restore it") from None
    shards = Path(cfg.data.shards) if cfg is not None else None
    if shards is not None and (shards / "manifest.json").is_file():
        m = read_manifest(shards)
        return {"channels": m.channels, "resolution": cfg.data.resolution, "num_classes": m.num_classes,
                "classes": list(m.classes), "attributes": list(m.attributes),
                "normalize": cfg.data.normalize, "mean": list(m.mean), "std": list(m.std)}
    raise SampleError(f"{path} is missing (the run predates it) and the shards named in its config "
                      f"({shards}/manifest.json, relative to the current directory) are not here either: "
                      "nothing says which classes, "
                      "channels and normalisation G was trained with")


# ----------------------------------------------------------------------------- info + loading

@dataclass
class GeneratorInfo:
    """What a loaded generator needs around it: config, label names, latent size, pixel mapping."""
    config: Config
    classes: list[str]
    attributes: list[str]
    condition: str  # "none" | "classes" | "attributes": what y means for this G
    z_dim: int
    channels: int
    resolution: int
    normalize: str
    mean: list[float]
    std: list[float]
    step: int = 0
    checkpoint: str = ""
    ema: bool = False
    run_dir: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # the raw data_info record

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def y_dim(self) -> int:
        """Length of the float conditioning vector G takes (0 for unconditional G)."""
        return {"none": 0, "classes": len(self.classes), "attributes": len(self.attributes)}[self.condition]

    def class_index(self, label: int | str) -> int:
        """Index of a class given by name (``"7"``, ``"Sneaker"``) or index; clear error otherwise."""
        if self.condition != "classes":
            raise SampleError(f"this generator is {self._kind()}: it takes no class labels"
                              + (f" (use attributes: {', '.join(self.attributes)})" if self.attributes else ""))
        name = str(label).strip()
        if name in self.classes:
            return self.classes.index(name)
        if isinstance(label, (int, np.integer)) or name.lstrip("-").isdigit():
            i = int(name)
            if 0 <= i < len(self.classes):
                return i
        raise SampleError(f"unknown label {label!r}; this run's classes are: "
                          + ", ".join(f"{i}={c}" for i, c in enumerate(self.classes)))

    def label_vector(self, weights: dict[int | str, float]) -> np.ndarray:
        """Float (C,) label vector from ``{class: weight}`` (weighted / multi-class conditioning)."""
        v = np.zeros(self.num_classes, np.float32)
        for k, w in weights.items():
            v[self.class_index(k)] += float(w)
        return v

    def attr_vector(self, values: dict[str, float]) -> np.ndarray:
        """Float (A,) attribute vector from ``{name: 0/1}``; unnamed attributes are 0."""
        if self.condition != "attributes":
            raise SampleError(f"this generator is {self._kind()}: it takes no attributes"
                              + (" (use labels)" if self.condition == "classes" else ""))
        v = np.zeros(len(self.attributes), np.float32)
        for k, x in values.items():
            if k not in self.attributes:
                raise SampleError(f"unknown attribute {k!r}; this run's attributes are: "
                                  + ", ".join(self.attributes))
            v[self.attributes.index(k)] = float(x)
        return v

    def _kind(self) -> str:
        return {"none": "unconditional", "classes": "class-conditional",
                "attributes": "attribute-conditional"}[self.condition]


def _condition_kind(cfg: Config, data: dict[str, Any]) -> tuple[str, list[str]]:
    """What G's y is: class labels, attribute vectors, or nothing; and the attribute names."""
    attrs = list(cfg.data.attributes) or list(data.get("attributes") or [])
    if cfg.model.cond == "none":
        return "none", attrs
    if cfg.model.cond == "multilabel" or (attrs and not data.get("classes")):
        return "attributes", attrs
    return "classes", attrs


def load_generator(source: str | Path, checkpoint: str | int = "latest", device: str | torch.device = "cpu",
                   ema: bool | None = None) -> tuple[torch.nn.Module, GeneratorInfo]:
    """Build G and load its weights, from a run directory or an exported ``.safetensors`` file.

    A run directory: G is built from ``RUN_DIR/config.yaml`` and
    ``data_info.json``; ``checkpoint`` is ``"latest"``, ``"best"`` or a step
    number; ``ema`` None uses the EMA weights when the checkpoint has them,
    True requires them, False takes the raw G. A file written by
    ``python -m distgan.export --format safetensors`` carries all of that
    itself (``checkpoint`` and ``ema`` were chosen at export). Returns
    ``(G, info)`` with G in eval mode, no grads, and
    ``G.sample(n, labels=None, attrs=None, seed=None)`` bound to :func:`generate`.
    """
    source = Path(source)
    if source.is_file():
        try:
            cfg_dict, data, weights, meta = read_generator_file(source)
        except GeneratorFileError as e:
            raise SampleError(str(e)) from None
        try:
            cfg = config_from_dict(cfg_dict, source=f"{source} (metadata)")
        except ConfigError as e:
            raise SampleError(f"cannot read the config stored in {source}: {e}") from None
        return _assemble(cfg, data, weights, source, device, int(meta.get("step", 0)), str(meta.get("checkpoint", "")),
                         bool(meta.get("ema")), str(meta.get("run_dir", "")), f"the config stored in {source}")
    run_dir = source
    cfg_path = config_path(run_dir)
    if not cfg_path.is_file():
        raise SampleError(f"{cfg_path} not found: '{run_dir}' is not a distgan run directory "
                          "(nor an exported generator file)")
    try:
        cfg = read_config(run_dir)
    except ConfigError as e:
        raise SampleError(f"cannot read {cfg_path}: {e}") from None
    data = read_data_info(run_dir, cfg)
    try:
        ckpt = read_checkpoint(run_dir, checkpoint)
    except CheckpointNotFound as e:
        raise SampleError(str(e)) from None
    except CheckpointError as e:  # truncated / corrupt file: named, with the others to pick from
        raise UnreadableCheckpoint(str(e)) from None
    try:
        weights, use_ema = generator_weights(ckpt, ema)
    except CheckpointError as e:
        raise SampleError(str(e)) from None
    return _assemble(cfg, data, weights, ckpt.path, device, ckpt.step, str(ckpt.path), use_ema, str(run_dir),
                     f"{cfg_path} and {run_dir / DATA_INFO}")


def _assemble(cfg: Config, data: dict[str, Any], weights: dict[str, torch.Tensor], where: Path,
              device: str | torch.device, step: int, checkpoint: str, ema: bool, run_dir: str,
              described_by: str) -> tuple[torch.nn.Module, GeneratorInfo]:
    """G built from ``cfg`` + ``data`` (a data_info record) with ``weights`` loaded, and its info."""
    if arch_spec(cfg.model.arch).paired:
        raise SampleError(f"{run_dir or where} is a {cfg.model.arch} run: its G translates a source image, it does not "
                          "sample from noise; load its checkpoint and call G(source) instead")
    known = {f.name for f in dataclasses.fields(DataInfo)}
    try:
        G, _ = build_models(cfg.model, DataInfo(**{k: v for k, v in data.items() if k in known}))
    except (ValueError, TypeError) as e:  # e.g. an arch or cond this version does not have
        raise SampleError(f"cannot build the generator described by {described_by}: {e}") from None
    try:
        G.load_state_dict(weights)
    except RuntimeError as e:
        raise SampleError(f"weights in {where} do not fit the generator built from {described_by}: {e}") from None
    G = G.to(device).eval().requires_grad_(False)

    condition, attrs = _condition_kind(cfg, data)
    info = GeneratorInfo(
        config=cfg, classes=[str(c) for c in data.get("classes") or []], attributes=attrs,
        condition=condition, z_dim=cfg.model.z_dim, channels=int(data["channels"]),
        resolution=int(data.get("resolution") or cfg.data.resolution),
        normalize=str(data.get("normalize") or cfg.data.normalize),
        mean=list(data.get("mean") or []), std=list(data.get("std") or []),
        step=step, checkpoint=checkpoint, ema=ema, run_dir=run_dir, data=data)
    if condition == "classes" and not info.classes:
        raise SampleError(f"{where} has model.cond={cfg.model.cond} but its data description lists no classes")
    G.sample = lambda n, labels=None, attrs=None, seed=None: generate(G, info, n, labels, attrs, seed)
    return G, info


# ----------------------------------------------------------------------------- sampling

def latent(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """(n, z_dim) standard-normal noise from a private generator (global RNG untouched)."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(int(seed)))


def new_seed() -> int:
    """A fresh random seed (print it: passing it back reproduces the images)."""
    return secrets.randbelow(2**31)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` at fractions ``t`` (T,) -> (B, T, d).

    Gaussian latents concentrate near a sphere; lerp's midpoints fall inside it
    (smaller norm, blander images), slerp's stay on it.
    """
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None]  # (B, 1)
    t = t[None, :]
    so = torch.sin(omega)
    wa = torch.sin((1 - t) * omega) / so
    wb = torch.sin(t * omega) / so
    return wa[..., None] * a[:, None] + wb[..., None] * b[:, None]


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation between rows of ``a`` and ``b`` at fractions ``t`` (T,) -> (B, T, d)."""
    t = t[None, :, None]
    return (1 - t) * a[:, None] + t * b[:, None]


def blocks(n: int, count: int) -> np.ndarray:
    """Which of ``count`` labels each of ``n`` images gets: contiguous equal blocks, in order."""
    per = math.ceil(n / max(count, 1))
    return np.repeat(np.arange(count), per)[:n]


def condition_vectors(info: GeneratorInfo, labels: LabelSpec = None, attrs: AttrSpec = None) -> np.ndarray | None:
    """The distinct conditioning vectors ``(L, y_dim)`` for a label or attribute spec (None: unconditional)."""
    if info.condition == "none":
        if labels is not None or attrs is not None:
            raise SampleError("this generator is unconditional: it takes no labels or attributes")
        return None
    if info.condition == "attributes":
        if labels is not None:
            info.class_index(0)  # raises the "takes no class labels" error
        specs = attrs if attrs is not None else {}
        if isinstance(specs, dict):
            specs = [specs]
        if isinstance(specs, (np.ndarray, torch.Tensor)):
            return _float_rows(specs, len(info.attributes), "attribute")
        return np.stack([info.attr_vector(s) for s in specs])
    if attrs is not None:
        info.attr_vector({})  # raises the "takes no attributes" error
    if labels is None:
        labels = list(range(info.num_classes))
    if isinstance(labels, (np.ndarray, torch.Tensor)) and np.asarray(labels).dtype.kind == "f":
        return _float_rows(labels, info.num_classes, "label")
    if isinstance(labels, (int, str, np.integer)):
        labels = [labels]
    rows = [info.label_vector(lab) if isinstance(lab, dict) else info.label_vector({lab: 1.0})
            for lab in labels]
    if not rows:
        raise SampleError("no labels given")
    return np.stack(rows)


def _float_rows(x: Any, width: int, what: str) -> np.ndarray:
    a = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, np.float32)
    a = a[None] if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[1] != width:
        raise SampleError(f"{what} vectors must have shape (L, {width}), got {tuple(a.shape)}")
    return a


def to_uint8(images: torch.Tensor, info: GeneratorInfo) -> np.ndarray:
    """G's output (NCHW, in the run's normalisation) -> uint8 NHWC in 0-255."""
    return to_uint8_nhwc(images, info.normalize, info.mean, info.std)


@torch.no_grad()
def run_generator(G: torch.nn.Module, info: GeneratorInfo, z: torch.Tensor, y: np.ndarray | None,
                  batch_size: int = 256) -> np.ndarray:
    """uint8 NHWC images for latents ``z`` (N, d) and float conditions ``y`` (N, y_dim) or None."""
    device = next(G.parameters()).device
    out = []
    for i in range(0, len(z), batch_size):
        yb = None if y is None else torch.as_tensor(y[i:i + batch_size], dtype=torch.float32, device=device)
        out.append(to_uint8(G(z[i:i + batch_size].to(device), yb), info))
    if not out:
        raise SampleError("nothing to generate (n = 0)")
    return np.concatenate(out)


def generate(G: torch.nn.Module, info: GeneratorInfo, n: int, labels: LabelSpec = None,
             attrs: AttrSpec = None, seed: int | None = None, batch_size: int = 256) -> np.ndarray:
    """``n`` uint8 images (N, H, W, C) split over ``labels``/``attrs`` in blocks; same seed, same images."""
    if n < 1:
        raise SampleError(f"n must be >= 1, got {n}")
    vecs = condition_vectors(info, labels, attrs)
    z = latent(n, info.z_dim, new_seed() if seed is None else seed)
    y = None if vecs is None else vecs[blocks(n, len(vecs))]
    return run_generator(G, info, z, y, batch_size)
