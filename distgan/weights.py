"""Generators as single safetensors files: the weights plus what it takes to rebuild and use them.

    python -m distgan.export --run runs/mnist_cdcgan --format safetensors --out mnist_g.safetensors
    G, info = distgan.load_generator("mnist_g.safetensors")   # no run directory needed
    images = G.sample(16, labels=[3, 8], seed=0)

The file holds G's ``state_dict`` (safetensors: no pickled code, loadable by
any safetensors reader) and, in its metadata under ``distgan``, one JSON
object: the run's resolved config (how G is built), its data description
(classes, attributes, channels, resolution, pixel normalisation) and where the
weights came from (run, checkpoint, step, EMA or not). Other tools read the
metadata with ``safetensors.safe_open(path, "pt").metadata()["distgan"]``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from distgan.config import config_to_dict
from distgan.fsutil import atomic_write_bytes

FORMAT = "distgan-generator-safetensors"
FORMAT_VERSION = 1
META_KEY = "distgan"


class GeneratorFileError(ValueError):
    """A file that is not a readable distgan generator; the message names it."""


def _safetensors() -> Any:
    try:
        import safetensors.torch  # noqa: PLC0415 - .safetensors files only: .pt loads without it
    except ImportError:
        raise ImportError("safetensors export needs the 'safetensors' package: "
                          "pip install 'distgan[export]' (or pip install safetensors)") from None
    return safetensors.torch


def save_generator_file(G: torch.nn.Module, info: Any, path: str | Path) -> None:
    """Write G's weights and ``info`` (a :class:`distgan.api.GeneratorInfo`) to ``path`` atomically."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config_to_dict(info.config),
            "data": info.data, "condition": info.condition, "classes": info.classes,
            "attributes": info.attributes, "z_dim": info.z_dim, "step": info.step, "ema": info.ema,
            "checkpoint": Path(info.checkpoint).name if info.checkpoint else "", "run_dir": info.run_dir,
            "output": "G(z, y) in the run's pixel normalisation; distgan.generate maps it to uint8"}
    tensors = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    atomic_write_bytes(path, _safetensors().save(tensors, metadata={META_KEY: json.dumps(meta)}))


def read_generator_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor],
                                                   dict[str, Any]]:
    """(config dict, data description, weights, the whole metadata record) of a generator file."""
    st = _safetensors()
    try:
        weights = st.load_file(str(path))
        with st.safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # not a safetensors file, truncated, ...
        raise GeneratorFileError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    if raw is None:
        raise GeneratorFileError(f"{path} holds no '{META_KEY}' metadata: it was not written by "
                          "`python -m distgan.export --format safetensors`")
    try:
        meta = json.loads(raw)
        return meta["config"], meta["data"], weights, meta
    except (ValueError, KeyError, TypeError) as e:
        raise GeneratorFileError(f"{path}: its '{META_KEY}' metadata is damaged ({e})") from None
