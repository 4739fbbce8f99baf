"""Rebuild a trained run's generator from its directory, and evaluate it.

    G, cfg, info = load_generator("runs/debug", checkpoint="best", ema=True)
    records = evaluate_run("runs/debug", ["fid"], num=10000)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from distgan import api
from distgan.checkpoint import CheckpointError
from distgan.config import Config, updated
from distgan.metrics.evaluate import Evaluator, pixel_policy
from distgan.metrics.generate import conditioning_for


def load_generator(run_dir: str | Path, checkpoint: str | int = "latest", ema: bool = True,
                   device: str | torch.device = "cpu") -> tuple[nn.Module, Config, dict[str, Any]]:
    """(G with the checkpoint's weights, the run's config, {"step", "ema", "checkpoint"}).

    The evaluation view of :func:`distgan.api.load_generator` (same files, same
    checks): ``ema=True`` takes the checkpoint's EMA weights when it has them
    (and says so in the returned info), ``ema=False`` always takes the raw G.
    A checkpoint that does not load raises :class:`CheckpointError`, as the
    trainer's own loader does.
    """
    try:
        G, info = api.load_generator(run_dir, checkpoint, device, ema=None if ema else False)
    except api.UnreadableCheckpoint as e:
        raise CheckpointError(str(e)) from None
    return G, info.config, {"step": info.step, "ema": info.ema, "checkpoint": info.checkpoint}


def evaluate_run(run_dir: str | Path, names: list[str], checkpoint: str | int = "latest", num: int = 0,
                 real: str = "", ema: bool = True, overrides: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Records for ``names`` on a trained run (all ranks together when run distributed)."""
    G, cfg, meta = load_generator(run_dir, checkpoint, ema, device)
    mc = updated(dataclasses.replace(cfg.metrics, names=list(names)), overrides or {}, "metrics",
                 source="command line")
    if num:
        mc.num_fake = num
    cond = conditioning_for(cfg.model, cfg.data.shards, cfg.data.attributes)
    ev = Evaluator(mc, cfg.data.shards, cfg.data.resolution, cond, cfg.model.z_dim,
                   real=real or cfg.metrics.real_shards, device=device, seed=cfg.train.seed, **pixel_policy(cfg))
    records = ev.evaluate(G, step=meta["step"], ema=meta["ema"])
    for r in records:
        r["provenance"]["checkpoint"] = meta["checkpoint"]
    return records
