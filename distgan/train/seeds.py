"""The seeds and RNG streams of a training run: what is derived from ``train.seed``, and how a
rank's streams are captured and restored (tensors and plain data: weights_only-loadable).

G and D are initialised from ``train.seed`` itself on every rank (identical replicas);
the training noise then comes from one seed per rank derived below.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

# The strides are primes far apart, so the derived seeds of nearby runs, ranks and resume
# steps do not coincide. Changing a value changes every run's noise: resumed runs would
# no longer continue bitwise.
RANK_STRIDE = 7919  # seed s, rank r -> s * 7919 + r: distinct per rank, reproducible per run
RESEED_STRIDE = 1_000_003  # resume at another world size: the rank seed * 1_000_003 + step
DIVERSITY_OFFSET = 4242  # the health monitor's own noise generator: seed + 4242


def rank_seed(seed: int, rank: int) -> int:
    """Seed of this rank's training RNG streams on a fresh run: other noise per rank, the same per run."""
    return seed * RANK_STRIDE + rank


def reseed(seed: int, rank: int, step: int) -> int:
    """Seed for a run resumed at ``step`` with another world size: the saved per-rank streams
    cannot all continue, so every rank starts a fresh stream, distinct per rank and resume step."""
    return rank_seed(seed, rank) * RESEED_STRIDE + step


def diversity_seed(seed: int) -> int:
    """Seed of the private generator behind the health monitor's diversity check (kept apart
    from the training streams, so turning the check on or off leaves training bitwise the same)."""
    return seed + DIVERSITY_OFFSET


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This rank's RNG states (python, numpy, torch, CUDA) as tensors and plain data (weights_only-loadable)."""
    py = random.getstate()
    np_st = np.random.get_state()
    st = {"python": list(py[1]), "python_pos": py[2],
          "numpy": torch.from_numpy(np_st[1].astype(np.int64)), "numpy_pos": int(np_st[2]),
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate((3, tuple(st["python"]), st["python_pos"]))
    np.random.set_state(("MT19937", st["numpy"].numpy().astype(np.uint32), st["numpy_pos"], 0, 0.0))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])
