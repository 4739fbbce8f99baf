"""The GPU acceptance run: every CUDA path and figure of distgan in one command.

    bash scripts/setup.sh && .venv/bin/python -m bench.gpu --json gpu.json   # on one GPU, ~8 min
    python -m bench.gpu --dry-run                                            # same code, CPU, tiny sizes

Sections (each a module of this package, run in this order):

1. ``correctness``: the debug preset end to end (train, resume, sample, export,
   FID on a few hundred images) for fp32, bf16 and fp16, each with channels_last,
   fused Adam, EMA and a cosine schedule, and once with ``train.compile=true``:
   the resumed copy must say it resumed and end bitwise equal to the straight
   run in every checkpointed state; host syncs per step.
2. ``distributed``: two processes sharing the GPU over gloo (CUDA tensors) with
   synced BN and spectral norm, replicas compared every step; NCCL when there
   are two or more GPUs.
3. ``syncbn``: distgan's SyncBatchNorm2d against torch's fused batch-norm kernels.
4. ``throughput``: the DCGAN 64x64 n=128 d=100 step at batch 64 and the largest
   batch that fits, per precision and fast path, against a bare PyTorch loop;
   peak memory; the top costs of one profiled step.
5. ``data``: decoded 64x64 JPEG images/s per loader worker against the GPU step.
6. ``inception``: the FID Inception's features on the device against the CPU's
   on a fixed batch (TF32 off).
7. ``fid``: Inception images/s and a 10,000-sample FID of the debug run.

Every row is a figure or has a status: ``pass``, ``fail``, ``n/a`` (the check
ran but compares nothing on this device, e.g. CUDA host syncs or device-vs-CPU
features on the CPU: never counted as passed) or ``skipped`` (not run here,
e.g. fp16 or NCCL on the CPU). The run prints the table and the count of each
status, names each failed check and exits 1 when any failed. ``--dry-run``
runs the same functions on the CPU at tiny sizes (the test suite runs it, so
the script cannot rot before a device is lent).

``--inception-tol ABS`` overrides the Inception comparisons' tolerance; it
exists so the tests can prove the failure path with a real comparison
(``--inception-tol 0`` fails every one of them: a check passes only when the
difference is strictly below its tolerance).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Plan:
    """Sizes of one acceptance run: the full GPU plan or the CPU dry run."""
    dry: bool
    device: str
    debug_steps: int  # steps of each correctness run (checkpoint and resume at half)
    small_fid: int  # generated images of each correctness run's FID
    dist_steps: int
    res: int  # throughput model: DCGAN res x res, width n, z_dim d
    width: int
    z_dim: int
    batch: int
    max_batch: int  # upper end of the largest-batch search
    warmup: int  # steps before timing (cuDNN autotuning, compile)
    timed: int  # timed steps per case
    data_images: int  # JPEG images for the pipeline measurement
    workers: tuple[int, ...]
    fid_num: int  # generated (and real) images of the large FID
    inception_batch: int
    compare_images: int  # the fixed batch of the Inception device-vs-CPU comparison

    @classmethod
    def for_device(cls, dry: bool) -> "Plan":
        if dry:
            return cls(True, "cpu", debug_steps=4, small_fid=4, dist_steps=3, res=16, width=8, z_dim=16, batch=8,
                       max_batch=32, warmup=1, timed=2, data_images=64, workers=(1,), fid_num=4,
                       inception_batch=4, compare_images=4)
        return cls(False, "cuda", debug_steps=20, small_fid=500, dist_steps=20, res=64, width=128, z_dim=100,
                   batch=64, max_batch=8192, warmup=15, timed=40, data_images=4096, workers=(1, 2, 4),
                   fid_num=10_000, inception_batch=500, compare_images=16)


STATUSES = ("pass", "fail", "n/a", "skipped")  # a row's status; "" for a figure
MARKS = {"pass": "ok", "fail": "FAIL", "n/a": "n/a", "skipped": "skip", "": ""}


@dataclass
class Row:
    section: str
    case: str
    value: float | str
    unit: str = ""
    reference: float | None = None
    ok: bool | None = None  # None: a figure, or a check that is n/a or skipped here
    note: str = ""
    status: str = ""  # one of STATUSES; "" for a figure

    @property
    def ratio(self) -> float | None:
        if isinstance(self.value, (int, float)) and self.reference:
            return float(self.value) / self.reference
        return None


@dataclass
class Report:
    """The rows of the table, in order; failed checks make the run exit non-zero."""
    rows: list[Row] = field(default_factory=list)
    section: str = ""

    def figure(self, case: str, value: float | str, unit: str = "", reference: float | None = None,
               note: str = "") -> None:
        self.rows.append(Row(self.section, case, value, unit, reference, None, note))

    def check(self, case: str, ok: bool, value: float | str = "", unit: str = "", note: str = "") -> bool:
        self.rows.append(Row(self.section, case, value, unit, None, bool(ok), note, "pass" if ok else "fail"))
        return bool(ok)

    def na(self, case: str, why: str, value: float | str = "", unit: str = "") -> None:
        """A check that ran but cannot tell right from wrong on this device: counted apart, never as passed."""
        self.rows.append(Row(self.section, case, value, unit, None, None, why, "n/a"))

    def skip(self, case: str, why: str) -> None:
        self.rows.append(Row(self.section, case, "skipped", "", None, None, why, "skipped"))

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.status == "fail"]

    def counts(self) -> dict[str, int]:
        """Rows per status (figures are not counted)."""
        return {s: sum(r.status == s for r in self.rows) for s in STATUSES}

    def summary(self) -> str:
        c = self.counts()
        return (f"checks: {c['pass']} passed, {c['fail']} failed, {c['n/a']} not applicable on this device "
                f"(not counted as passed), {c['skipped']} skipped")

    def table(self) -> str:
        lines = [f"{'section':<12} {'case':<60} {'value':>12} {'reference':>11} {'ratio':>7}  {'':4} unit / note"]
        for r in self.rows:
            v = f"{r.value:.4g}" if isinstance(r.value, float) else str(r.value)
            ref = f"{r.reference:.4g}" if r.reference is not None else "-"
            ratio = f"{r.ratio:.3f}" if r.ratio is not None else "-"
            mark = MARKS[r.status]
            tail = " / ".join(x for x in (r.unit, r.note) if x)
            lines.append(f"{r.section:<12} {r.case:<60} {v:>12} {ref:>11} {ratio:>7}  {mark:4} {tail}")
        return "\n".join(lines)

    def to_json(self, path: str | Path, meta: dict[str, Any]) -> None:
        from distgan.fsutil import atomic_write_text

        rows = []
        for r in self.rows:
            d = asdict(r)
            d["ratio"] = r.ratio
            if isinstance(d["value"], float) and not math.isfinite(d["value"]):
                d["value"] = str(d["value"])
            rows.append(d)
        atomic_write_text(path, json.dumps({"meta": meta, "rows": rows, "counts": self.counts(),
                                            "failed": [f"{r.section}: {r.case}" for r in self.failures]},
                                           indent=1))


def sync(device: str) -> None:
    """Wait for the device (timings on CUDA measure finished work, not queued launches)."""
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_mib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
