"""Where a run's output goes: TensorBoard, stats.jsonl, progress bar, per-rank log, sample PNGs."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from distgan.config import Config, config_to_dict
from distgan.errors import describe_os_error
from distgan.train.samples import grid_tensor, save_grid
from distgan.train.stats import JsonlSink

_BAR_KEYS = ("loss_d", "loss_g", "d_real", "d_fake", "images_per_s")


class RunLogger:
    """Rank 0 writes everything; other ranks only keep their own log file."""

    def __init__(self, run_dir: Path, cfg: Config, enabled: bool, rank: int = 0):
        self.run_dir, self.cfg, self.enabled = Path(run_dir), cfg, enabled
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.log = logging.getLogger(f"distgan.run.{rank}")
        self.log.setLevel(logging.INFO)
        self.log.handlers.clear()
        fh = logging.FileHandler(self.run_dir / "logs" / f"rank{rank}.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        self.log.addHandler(fh)
        self.log.propagate = False
        self.tb = None
        self.bar = None
        self.pixels: tuple | None = None  # (normalize mode, mean, std): how G's output maps to pixels
        self.jsonl = JsonlSink(self.run_dir / "stats.jsonl") if enabled else None
        if enabled and cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"))
            self.tb.add_text("config", "```\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False) + "\n```", 0)

    def info(self, msg: str) -> None:
        self.log.info(msg)
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(msg)

    def start(self, step: int, total: int) -> None:
        self.t0 = time.time()
        if self.enabled and self.cfg.log.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True,
                            file=sys.stderr, mininterval=1.0)

    def hparams(self, cfg: Config, world_size: int) -> None:
        """Hyper-parameters into TensorBoard's HPARAMS tab (scalars, strings and booleans of the config)."""
        if self.tb is None:
            return
        flat = {f"{sec}.{k}": v for sec, d in config_to_dict(cfg).items() for k, v in d.items()
                if isinstance(v, (int, float, str, bool))}
        flat["dist.world_size"] = world_size
        self.tb.add_hparams(flat, {"hparams/world_size": float(world_size)}, run_name=".")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.log.info(f"step {step} " + " ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())))
        if not self.enabled:
            return
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        try:
            self.jsonl.write({"step": step, "time": round(time.time() - self.t0, 3), **values})
        except OSError as e:  # losing a log line must not stop a healthy run: say so and go on
            self.info(f"warning: step {step}: {self.jsonl.path} not appended ({describe_os_error(e)}); "
                      "training continues (the scalars are in this log)")
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix({k: f"{values[k]:.3g}" for k in _BAR_KEYS if k in values}, refresh=False)
            self.bar.refresh()

    @torch.no_grad()
    def sample_grid(self, step: int, G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None,
                    per_row: int) -> Path:
        device = next(G.parameters()).device
        was_training = G.training
        G.eval()
        images = G(z.to(device), None if y is None else y.to(device)).float().cpu()
        G.train(was_training)
        path = self.run_dir / "samples" / f"step_{step:08d}.png"
        try:
            save_grid(images, per_row, path, self.pixels)
        except OSError as e:  # a lost picture must not stop a healthy run: say so and go on
            self.info(f"warning: sample grid {path} not written ({describe_os_error(e)}); training continues")
        if self.tb is not None:
            self.tb.add_image("samples", grid_tensor(images, per_row, self.pixels), step)
        return path

    def close(self) -> None:
        if self.bar is not None:
            self.bar.n = self.bar.total if self.bar.n >= self.bar.total else self.bar.n
            self.bar.close()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
