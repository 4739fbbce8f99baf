"""Report statistics from anywhere; collect them in one place.

``report("loss_d", tensor)`` keeps the detached value on its device (no host
sync inside the step). ``collect()`` runs at log intervals: it moves
the means to the host once, averages them across ranks, and hands the result to
the sinks (TensorBoard, ``stats.jsonl``, progress bar) on rank 0.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from distgan import dist

_pending: dict[str, list[torch.Tensor]] = defaultdict(list)


def report(name: str, value: torch.Tensor | float) -> None:
    """Record one observation of ``name`` (a scalar or a tensor whose mean is taken)."""
    if isinstance(value, torch.Tensor):
        _pending[name].append(value.detach().float().mean())
    else:
        _pending[name].append(torch.tensor(float(value)))


def reset() -> None:
    _pending.clear()


def collect() -> dict[str, float]:
    """Means of everything reported since the last call, averaged over ranks.

    Every rank must call this at the same step. Names are sorted so the
    all-reduce layout agrees on every rank (ranks report the same names).
    """
    names = sorted(_pending)
    if not names:
        return {}
    dev = next((v[0].device for v in _pending.values() if v), torch.device("cpu"))
    vals = torch.stack([torch.stack([t.to(dev) for t in _pending[n]]).mean() if _pending.get(n)
                        else torch.tensor(float("nan"), device=dev) for n in names])
    vals = dist.all_reduce_mean(vals).cpu().tolist()
    reset()
    return dict(zip(names, vals))


class JsonlSink:
    """Append one JSON object per call to a file (flushed each time)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
