"""Metrics during training: the small object the training loop calls.

    # before the loop, on every rank (after resuming: only the kept past counts for the best)
    metrics = TrainMetrics(cfg, run_dir, out.tb, device, start_step=step + 1, checkpointer=ckpt)  # metrics.names
    final = FinalMetrics(cfg, run_dir, out.tb, device)                                            # metrics.final
    # in the loop, once per step on every rank, after that step's checkpoint (each one when set):
    metrics.after_step(step, g_eval, ema=ema is not None)
    final.after_step(step, g_eval, ema=ema is not None)

:class:`TrainMetrics` does the work: ``due(step)``, ``__call__`` (evaluate; True
for a new best of ``metrics.main``), ``mark_best``; :meth:`TrainMetrics.after_step`
puts them together and keeps ``checkpoints/best``. :class:`FinalMetrics` is the
protocol score at the end (``metrics.final`` with ``metrics.final_num_fake``
samples), evaluated once at ``train.steps`` with the same hooks.

Records go to ``RUN_DIR/metrics.jsonl`` and TensorBoard (``metrics/<name>``) from
rank 0; the lines logged here go through ``distgan.log`` (the rank's log file,
and rank 0's console). The best value of the main metric survives resumption:
it is read back from ``metrics.jsonl`` at start-up.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

import torch.nn as nn

from distgan import dist
from distgan.config import Config
from distgan.errors import describe_os_error
from distgan.log import get_logger
from distgan.metrics.evaluate import Evaluator, pixel_policy
from distgan.metrics.generate import conditioning_for
from distgan.metrics.registry import lower_is_better, main_record, records
from distgan.rundir import METRICS, append_jsonl, ckpt_path, mark_best, read_jsonl


class SavesCheckpoints(Protocol):
    """What the hook needs of the run's checkpointer (the training loop hands it in): both collective."""

    def has(self, step: int) -> bool: ...

    def save(self, step: int) -> None: ...

log = get_logger("metrics")


def _publish(records: list[dict], step: int, run_dir: Path, writer: Any, what: str) -> None:
    """Rank 0: the records to ``metrics.jsonl``, TensorBoard (``metrics/<name>``) and the log."""
    if dist.rank_world()[0] != 0:
        return
    try:
        append_jsonl(run_dir / METRICS, records)
    except OSError as e:  # a lost record must not stop a healthy run: say so, keep training
        log.warning(f"step {step}: {run_dir / METRICS} not appended "
                    f"({describe_os_error(e)}); training continues (values in TensorBoard and this log)")
    if writer is not None:
        for r in records:
            writer.add_scalar(f"metrics/{r['name']}", r["value"], step)
        writer.flush()
    log.info(f"step {step} {what}: " + " ".join(f"{r['name']}={r['value']:.5g}" for r in records))


def _evaluator(cfg: Config, mc: Any, device: Any) -> Evaluator:
    """The evaluator of the metrics ``mc`` (``cfg.metrics`` or the final ones) for this run's G and data."""
    cond = conditioning_for(cfg.model, cfg.data.shards, cfg.data.attributes)
    real = cfg.metrics.real_shards or cfg.data.shards  # the reference set; G's labels follow data.shards
    return Evaluator(mc, real, cfg.data.resolution, cond, cfg.model.z_dim, device=device, seed=cfg.train.seed,
                     **pixel_policy(cfg))


class TrainMetrics:
    """Evaluate at ``metrics.every`` steps and at the end; track the best main-metric value.

    ``start_step``: the first step this process trains; records of later steps
    (a previous attempt that got further than its last checkpoint) do not count
    for the best. ``checkpointer`` saves a new best's step when it has no
    checkpoint yet (:meth:`after_step`).
    """

    def __init__(self, cfg: Config, run_dir: str | Path, writer: Any = None, device: Any = "cpu",
                 start_step: int | None = None, checkpointer: SavesCheckpoints | None = None):
        self.cfg, self.run_dir, self.writer, self.checkpointer = cfg, Path(run_dir), writer, checkpointer
        self.main = main_record(list(cfg.metrics.names), cfg.metrics.main)
        self.lower = lower_is_better(self.main)
        self.evaluator = _evaluator(cfg, cfg.metrics, device)
        kept = [r for r in read_jsonl(Path(run_dir) / METRICS) if r.get("name") == self.main
                and (start_step is None or r.get("step", 0) < start_step)]  # resumed: only the kept past
        past = [r["value"] for r in kept]
        self.best = (min(past) if self.lower else max(past)) if past else None
        self.recorded = {int(r.get("step", 0)) for r in kept}  # steps whose main metric is on record

    def due(self, step: int, total: int) -> bool:
        every = self.cfg.metrics.every
        return (every > 0 and step % every == 0) or step == total

    def __call__(self, step: int, G: nn.Module, ema: bool = False) -> bool:
        """Evaluate ``G`` on every rank; rank 0 logs; returns True (on all ranks) for a new best."""
        records = self.evaluator.evaluate(G, step=step, ema=ema)
        _publish(records, step, self.run_dir, self.writer, "metrics")
        value = next(r["value"] for r in records if r["name"] == self.main)
        self.recorded.add(step)
        better = self.best is None or (value < self.best if self.lower else value > self.best)
        if better:
            self.best = value
        return better

    def mark_best(self, step: int) -> None:
        """Point ``checkpoints/best`` at step ``step`` (rank 0; the checkpoint must exist)."""
        if dist.rank_world()[0] == 0:
            if not ckpt_path(self.run_dir, step).is_file():
                raise FileNotFoundError(f"cannot mark step {step} as best: {ckpt_path(self.run_dir, step)} "
                                        "does not exist (save the checkpoint first)")
            mark_best(self.run_dir, step)

    def catch_up(self, step: int, G: nn.Module, ema: bool = False) -> None:
        """A resumed run: the evaluation due at the checkpointed step ``step`` when it has no record.

        The checkpoint of a due step is written before its evaluation, so a process that dies while
        evaluating (the final FID, a halving rung's score) leaves a checkpoint without the record; the
        next attempt evaluates it here, before training on, instead of going on (or ending) without it.
        Collective like :meth:`after_step`; every rank reads the same ``metrics.jsonl``.
        """
        if step > 0 and step not in self.recorded:
            self.after_step(step, G, ema=ema)

    def after_step(self, step: int, G: nn.Module, ema: bool = False) -> None:
        """The training loop's metrics block: evaluate when due, keep ``checkpoints/best``.

        Call on every rank at the end of each step (after that step's checkpoint,
        if any). A new best at a step without a checkpoint is saved first through
        the (collective) checkpointer, so ``best`` always points at a file.
        """
        if not self.due(step, self.cfg.train.end_step):  # the end of this run or its budget
            return
        if self(step, G, ema=ema):
            if self.checkpointer is None:
                raise RuntimeError("TrainMetrics.after_step needs the run's checkpointer to keep checkpoints/best")
            if not self.checkpointer.has(step):  # rank 0 decides: every rank must join the save
                self.checkpointer.save(step)
            self.mark_best(step)


class FinalMetrics:
    """``metrics.final``: evaluated once, at ``train.steps`` (the horizon, not a ``train.stop_at`` budget), with
    ``metrics.final_num_fake`` samples; the same hooks as :class:`TrainMetrics` (``due``, ``after_step``,
    ``catch_up``), no best checkpoint. A run killed during this evaluation, which may take the longest of
    any (10,000 samples through the Inception), gets it on resume, from the final checkpoint.
    """

    def __init__(self, cfg: Config, run_dir: str | Path, writer: Any = None, device: Any = "cpu"):
        self.run_dir, self.writer, self.step = Path(run_dir), writer, cfg.train.steps
        mc = dataclasses.replace(cfg.metrics, names=list(cfg.metrics.final), num_fake=cfg.metrics.final_num_fake,
                                 main="")
        self.names = set(records(list(mc.names)))
        self.evaluator = _evaluator(cfg, mc, device)

    def due(self, step: int, total: int) -> bool:
        return step == self.step

    def recorded(self) -> bool:
        """Whether ``metrics.jsonl`` holds this evaluation (every rank reads the same file)."""
        return any(r.get("name") in self.names and int(r.get("step", -1)) == self.step
                   for r in read_jsonl(self.run_dir / METRICS))

    def after_step(self, step: int, G: nn.Module, ema: bool = False) -> None:
        """Evaluate when ``step`` is the horizon; on every rank together."""
        if step == self.step:
            _publish(self.evaluator.evaluate(G, step=step, ema=ema), step, self.run_dir, self.writer, "final metrics")

    def catch_up(self, step: int, G: nn.Module, ema: bool = False) -> None:
        """A resumed run at its horizon without the final records (killed while evaluating them)."""
        if step == self.step and not self.recorded():
            self.after_step(step, G, ema=ema)
