"""Where a run's records go: TensorBoard (and W&B / MLflow, ``log.trackers``), stats.jsonl, progress bar,
sample PNGs, and the per-rank log file.

Text lines go through :mod:`distgan.log` (the ``distgan.train`` logger). A
:class:`RunLogger` adds the rank's file ``RUN_DIR/logs/rankR.log`` to that
channel for the run's lifetime: it receives every ``distgan`` line of the rank
(metrics, checkpoints, health) plus the logged scalars (at DEBUG level, so they
stay off the console, where the progress bar shows them). While the bar is open,
console lines are written around it (bar cleared, line written, bar redrawn).
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from distgan.config import Config, config_to_dict
from distgan.errors import describe_os_error
from distgan.log import add_file, get_logger, remove_file
from distgan.rundir import METRICS, STATS, TB, rank_log, read_jsonl_since, samples_dir
from distgan.train.samples import grid_tensor, save_grid
from distgan.train.stats import JsonlSink
from distgan.train.trackers import Trackers, check_available

_BAR_KEYS = ("loss_d", "loss_g", "d_real", "d_fake", "images_per_s")

log = get_logger("train")
_open_files: list[logging.Handler] = []  # rank files of RunLoggers in this process not closed yet


class _AroundBar(logging.Filter):
    """Emits a console record with the progress bar cleared and redrawn around it (then drops
    it from the normal path), so log lines never garble the bar."""

    def __init__(self, handler: logging.Handler, bar: tqdm):
        super().__init__()
        self.handler, self.bar = handler, bar

    def filter(self, record: logging.LogRecord) -> bool:
        with self.bar.external_write_mode():
            self.handler.emit(record)
        return False


class RunLogger:
    """Rank 0 writes everything; other ranks only keep their own log file."""

    def __init__(self, run_dir: Path, cfg: Config, enabled: bool, rank: int = 0):
        self.run_dir, self.cfg, self.enabled = Path(run_dir), cfg, enabled
        while _open_files:  # a train() that raised in this process left its file attached
            remove_file(_open_files.pop())
        self._file = add_file(rank_log(self.run_dir, rank), level=logging.DEBUG)
        _open_files.append(self._file)
        self._around_bar: list[tuple[logging.Handler, logging.Filter]] = []
        self.tb = None
        self.bar = None
        self.pixels: tuple | None = None  # (normalize mode, mean, std): how G's output maps to pixels
        self.jsonl = JsonlSink(self.run_dir / STATS) if enabled else None
        # log.tensorboard=false predates log.trackers and still turns TensorBoard off
        names = [t for t in cfg.log.trackers if t != "tensorboard" or cfg.log.tensorboard]
        check_available(names)  # on every rank: a missing package must not leave the other ranks waiting
        self.trackers = None
        metrics = self.run_dir / METRICS
        self._records_at = metrics.stat().st_size if metrics.is_file() else 0  # resumed: only new records
        if enabled and any(t != "tensorboard" for t in names):
            self.trackers = Trackers(self.run_dir, names, cfg.log.project, self.run_dir.resolve().name)
        if enabled and "tensorboard" in names:
            # tensorboard is slow to import and only rank 0 of a run that keeps it needs it
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

            self.tb = SummaryWriter(str(self.run_dir / TB))
            self.tb.add_text("config", "```\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False) + "\n```", 0)

    def start(self, step: int, total: int) -> None:
        self.t0 = time.time()
        if self.enabled and self.cfg.log.progress:
            self.bar = tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True,
                            file=sys.stderr, mininterval=1.0)
            for h in get_logger().handlers:  # the console (the rank files do not share the terminal)
                if not isinstance(h, logging.FileHandler):
                    f = _AroundBar(h, self.bar)
                    h.addFilter(f)
                    self._around_bar.append((h, f))

    def hparams(self, cfg: Config, world_size: int) -> None:
        """Hyper-parameters into TensorBoard's HPARAMS tab and the trackers' configs (scalars, strings and
        booleans of the config)."""
        flat = {f"{sec}.{k}": v for sec, d in config_to_dict(cfg).items() for k, v in d.items()
                if isinstance(v, (int, float, str, bool))}
        flat["dist.world_size"] = world_size
        if self.trackers is not None:
            self.trackers.hparams(flat)
        if self.tb is not None:
            self.tb.add_hparams(flat, {"hparams/world_size": float(world_size)}, run_name=".")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        log.debug(f"step {step} " + " ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())))
        if not self.enabled:
            return
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.trackers is not None:
            self.trackers.scalars(step, values)
        try:
            self.jsonl.write({"step": step, "time": round(time.time() - self.t0, 3), **values})
        except OSError as e:  # losing a log line must not stop a healthy run: say so and go on
            log.warning(f"step {step}: {self.jsonl.path} not appended ({describe_os_error(e)}); "
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
        path = samples_dir(self.run_dir) / f"step_{step:08d}.png"
        try:
            save_grid(images, per_row, path, self.pixels)
        except OSError as e:  # a lost picture must not stop a healthy run: say so and go on
            log.warning(f"sample grid {path} not written ({describe_os_error(e)}); training continues")
        if self.tb is not None or self.trackers is not None:
            grid = grid_tensor(images, per_row, self.pixels)
            if self.tb is not None:
                self.tb.add_image("samples", grid, step)
            if self.trackers is not None:
                hwc = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
                self.trackers.image(step, "samples", hwc)
        return path

    def metric_records(self) -> None:
        """Forward the records appended to ``metrics.jsonl`` since the last call to the trackers."""
        if self.trackers is None:
            return
        records, self._records_at = read_jsonl_since(self.run_dir / METRICS, self._records_at)
        self.trackers.records(records)

    def close(self) -> None:
        for h, f in self._around_bar:
            h.removeFilter(f)
        self._around_bar = []
        if self.bar is not None:
            self.bar.n = self.bar.total if self.bar.n >= self.bar.total else self.bar.n
            self.bar.close()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
        if self.trackers is not None:
            self.trackers.close()
            self.trackers = None
        if self._file in _open_files:
            _open_files.remove(self._file)
            remove_file(self._file)
