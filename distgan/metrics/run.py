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

from distgan.config import Config, load_config
from distgan.metrics.evaluate import Evaluator, pixel_policy
from distgan.metrics.generate import conditioning_for


def load_generator(run_dir: str | Path, checkpoint: str | int = "latest", ema: bool = True,
                   device: str | torch.device = "cpu") -> tuple[nn.Module, Config, dict[str, Any]]:
    """(G with the checkpoint's weights, the run's config, {"step", "ema", "checkpoint"}).

    ``ema=True`` takes the checkpoint's EMA weights when it has them (and says
    so in the returned info); ``ema=False`` always takes the raw G.
    """
    from distgan.models import build_models, data_info
    from distgan.shards import read_manifest
    from distgan.train.state import load_file, resolve_checkpoint

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run directory: {cfg_path} does not exist")
    cfg = load_config(cfg_path)
    manifest = read_manifest(cfg.data.shards)
    info = data_info(cfg, manifest)  # the trainer's view: chosen attributes, pixel mapping
    G, _ = build_models(cfg.model, info)
    path = resolve_checkpoint(run_dir, checkpoint)
    state = load_file(path)
    use_ema = bool(ema and state.get("ema") is not None)
    G.load_state_dict(state["ema"] if use_ema else state["G"])  # the EMA state is a G state dict
    return G.to(device).eval(), cfg, {"step": int(state["step"]), "ema": use_ema, "checkpoint": str(path)}


def evaluate_run(run_dir: str | Path, names: list[str], checkpoint: str | int = "latest", num: int = 0,
                 real: str = "", ema: bool = True, overrides: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Records for ``names`` on a trained run (all ranks together when run distributed)."""
    G, cfg, meta = load_generator(run_dir, checkpoint, ema, device)
    mc = dataclasses.replace(cfg.metrics, names=list(names), **(overrides or {}))
    if num:
        mc.num_fake = num
    cond = conditioning_for(cfg.model.cond, cfg.data.shards, cfg.data.attributes)
    ev = Evaluator(mc, cfg.data.shards, cfg.data.resolution, cond,
                   cfg.model.z_dim, real=real, device=device, seed=cfg.train.seed, **pixel_policy(cfg))
    records = ev.evaluate(G, step=meta["step"], ema=meta["ema"])
    for r in records:
        r["provenance"]["checkpoint"] = meta["checkpoint"]
    return records
