"""Metrics during training: the small object the training loop calls.

    # in the loop, once per step on every rank, after that step's checkpoint:
    if cfg.metrics.names:
        loop_step(cfg, run_dir, step, g_eval, ema is not None, log.tb, device, save)

:class:`TrainMetrics` does the work: ``due(step)``, ``__call__`` (evaluate; True
for a new best of ``metrics.main``), ``mark_best``.

Records go to ``RUN_DIR/metrics.jsonl`` and TensorBoard (``metrics/<name>``) from
rank 0. The best value of the main metric survives resumption: it is read back
from ``metrics.jsonl`` at start-up.
"""
from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from distgan import dist
from distgan.config import Config
from distgan.errors import describe_os_error
from distgan.metrics.evaluate import Evaluator, pixel_policy
from distgan.metrics.generate import conditioning_for
from distgan.metrics.registry import lower_is_better, main_record
from distgan.rundir import METRICS, append_jsonl, read_jsonl

log = logging.getLogger("distgan.metrics")
METRICS_FILE = METRICS  # the name callers of this module use


def append_records(run_dir: str | Path, records: list[dict[str, Any]]) -> None:
    """Append records to ``RUN_DIR/metrics.jsonl`` (one JSON object per line, flushed and fsynced)."""
    append_jsonl(Path(run_dir) / METRICS_FILE, records)


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record in ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)


class _ToRunLog(logging.Handler):
    """Forward ``distgan.metrics`` messages (cache hits, classifier training, results) to the run's
    per-rank log file (the trainer's ``distgan.run.<rank>`` logger) and, on rank 0, to stdout,
    while its training hook is alive (after ``train()`` returns it goes quiet)."""

    def __init__(self, rank: int, owner: "TrainMetrics"):
        super().__init__(logging.INFO)
        self.rank, self.owner = rank, weakref.ref(owner)

    def emit(self, record: logging.LogRecord) -> None:
        if self.owner() is None:
            return
        msg = record.getMessage()
        logging.getLogger(f"distgan.run.{self.rank}").info(msg)
        if self.rank == 0:
            print(msg, flush=True)


def _route_to_run_log(owner: "TrainMetrics") -> None:
    mlog = logging.getLogger("distgan.metrics")
    for h in [h for h in mlog.handlers if isinstance(h, _ToRunLog)]:
        mlog.removeHandler(h)  # from an earlier train() in this process
    mlog.addHandler(_ToRunLog(dist.rank_world()[0], owner))
    mlog.setLevel(logging.INFO)


class TrainMetrics:
    """Evaluate at ``metrics.every`` steps and at the end; track the best main-metric value."""

    def __init__(self, cfg: Config, run_dir: str | Path, writer: Any = None, device: Any = "cpu",
                 start_step: int | None = None):
        self.cfg, self.run_dir, self.writer = cfg, Path(run_dir), writer
        _route_to_run_log(self)
        self.main = main_record(list(cfg.metrics.names), cfg.metrics.main)
        self.lower = lower_is_better(self.main)
        cond = conditioning_for(cfg.model.cond, cfg.data.shards, cfg.data.attributes)
        self.evaluator = Evaluator(cfg.metrics, cfg.data.shards, cfg.data.resolution, cond, cfg.model.z_dim,
                                   device=device, seed=cfg.train.seed, **pixel_policy(cfg))
        past = [r["value"] for r in read_records(run_dir) if r.get("name") == self.main
                and (start_step is None or r.get("step", 0) < start_step)]  # resumed: only the kept past
        self.best = (min(past) if self.lower else max(past)) if past else None

    def due(self, step: int, total: int) -> bool:
        every = self.cfg.metrics.every
        return (every > 0 and step % every == 0) or step == total

    def __call__(self, step: int, G: nn.Module, ema: bool = False) -> bool:
        """Evaluate ``G`` on every rank; rank 0 logs; returns True (on all ranks) for a new best."""
        records = self.evaluator.evaluate(G, step=step, ema=ema)
        if dist.rank_world()[0] == 0:
            try:
                append_records(self.run_dir, records)
            except OSError as e:  # a lost record must not stop a healthy run: say so, keep training
                log.warning(f"warning: step {step}: {Path(self.run_dir) / METRICS_FILE} not appended "
                            f"({describe_os_error(e)}); training continues (values in TensorBoard and this log)")
            if self.writer is not None:
                for r in records:
                    self.writer.add_scalar(f"metrics/{r['name']}", r["value"], step)
                self.writer.flush()
            log.info(f"step {step} metrics: " + " ".join(f"{r['name']}={r['value']:.5g}" for r in records))
        value = next(r["value"] for r in records if r["name"] == self.main)
        better = self.best is None or (value < self.best if self.lower else value > self.best)
        if better:
            self.best = value
        return better

    def mark_best(self, step: int) -> None:
        """Point ``checkpoints/best`` at step ``step`` (rank 0; the checkpoint must exist)."""
        from distgan.train.state import ckpt_path, mark_best

        if dist.rank_world()[0] == 0:
            if not ckpt_path(self.run_dir, step).is_file():
                raise FileNotFoundError(f"cannot mark step {step} as best: {ckpt_path(self.run_dir, step)} "
                                        "does not exist (save the checkpoint first)")
            mark_best(self.run_dir, step)


_HOOKS: "weakref.WeakKeyDictionary[Any, TrainMetrics]" = weakref.WeakKeyDictionary()


def loop_step(cfg: Config, run_dir: str | Path, step: int, G: nn.Module, ema: bool, writer: Any,
              device: Any, save: Callable[[int], None]) -> None:
    """The training loop's metrics block: evaluate when due, keep ``checkpoints/best``.

    Call on every rank at the end of each step (after that step's checkpoint, if
    any). ``save(step)`` is the loop's own (collective) checkpoint function: a new
    best at a step without a checkpoint is saved first, so ``best`` always points
    at a file. The hook object lives as long as ``save`` (one ``train()`` call).
    """
    from distgan.train.state import ckpt_path

    hook = _HOOKS.get(save)
    if hook is None:
        hook = _HOOKS[save] = TrainMetrics(cfg, run_dir, writer, device, start_step=step)
    if not hook.due(step, cfg.train.steps):
        return
    if hook(step, G, ema=ema):
        exists = ckpt_path(run_dir, step).is_file() if dist.rank_world()[0] == 0 else None
        if not dist.broadcast_object(exists):  # rank 0 decides: every rank must join save()
            save(step)
        hook.mark_best(step)
