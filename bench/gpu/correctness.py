"""Section 1: the debug preset end to end on the device, per precision and fast path.

Each variant trains the CPU debug preset (with ``model.channels_last``,
``train.fused_adam``, EMA and a cosine schedule, so that every kind of state a
checkpoint holds changes each step) straight to N steps, resumes a copy from
step N/2 to N, then checks: every logged loss finite; the copy really resumed
(its log says "resumed from step N/2" and its records start at N/2 + 1, equal
to the straight run's); its step-N checkpoint bitwise equal to the straight
run's in every entry: G, D, EMA, both optimizers, LR schedules and loss scalers,
data position, RNG streams (deterministic algorithms are on for this section,
as the CPU path is bitwise); the run's last sample grid equal to the grid
regenerated from the checkpoint; ``python -m distgan.sample`` equal to
``distgan.api.generate`` with the same seed; the TorchScript export verified; a
small FID finite. Host syncs per training step are counted separately for the
default path and ``train.sync_free`` (CUDA's sync debug mode; per-step = the
difference of two run lengths, so start-up and the final save cancel); the CPU
has no host syncs to count, so there they are n/a.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.gpu import Plan, Report

ROOT = Path(__file__).resolve().parents[2]
# entries the resume comparison needs in both checkpoints: without them it would compare less than it says
REQUIRED = ("step", "G", "D", "ema", "opt_d", "opt_g", "sched_d", "sched_g", "scaler_d", "scaler_g", "data", "rng")
# switched on for every variant: EMA and a moving LR make a checkpoint's every entry change each step
STATEFUL = ["train.ema=true", "train.schedule=cosine"]
VARIANTS = {"fp32": ["train.precision=fp32"], "bf16": ["train.precision=bf16"],
            "fp16": ["train.precision=fp16"], "fp32 compile": ["train.precision=fp32", "train.compile=true"]}


def debug_config(shards: Path, steps: int, extra: list[str]):
    from distgan.config import load_config

    return load_config(ROOT / "configs" / "debug.yaml",
                       [f"data.shards={shards}", f"train.steps={steps}", f"train.ckpt_every={max(1, steps // 2)}",
                        "train.keep_ckpts=10", "log.every=1", f"log.sample_every={steps}", "log.progress=false",
                        "log.tensorboard=false", *extra])


def _finite_losses(run: Path) -> tuple[bool, str]:
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    bad = [(r["step"], k) for r in rows for k in ("loss_d", "loss_g") if not math.isfinite(r.get(k, float("nan")))]
    return bool(rows) and not bad, f"{len(rows)} log rows" + (f", non-finite: {bad[:3]}" if bad else "")


def state_differences(a: Any, b: Any, path: str = "") -> tuple[float, list[str]]:
    """(largest numeric difference, paths not bitwise equal) between two checkpoint trees.

    Walks dicts, lists and tuples; tensors must match in shape, dtype and every
    element (``torch.equal``: a NaN never matches); plain values must be equal.
    A key on one side only, or a non-finite difference, counts as inf.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        worst, bad = 0.0, []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                worst, bad = math.inf, [*bad, f"{p} (in one checkpoint only)"]
                continue
            w, d = state_differences(a[k], b[k], p)
            worst, bad = max(worst, w), bad + d
        return worst, bad
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return math.inf, [f"{path} (length {len(a)} vs {len(b)})"]
        worst, bad = 0.0, []
        for i, (x, y) in enumerate(zip(a, b)):
            w, d = state_differences(x, y, f"{path}[{i}]")
            worst, bad = max(worst, w), bad + d
        return worst, bad
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return math.inf, [f"{path} ({a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)})"]
        if torch.equal(a, b):
            return 0.0, []
        d = float((a.double() - b.double()).abs().max())
        return (d if math.isfinite(d) and d > 0 else math.inf), [path]
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return math.inf, [f"{path} ({type(a).__name__} vs {type(b).__name__})"]
    if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
        return 0.0, []
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    d = abs(float(a) - float(b)) if numbers else math.inf
    return (d if math.isfinite(d) else math.inf), [f"{path} ({a!r} vs {b!r})"]


def _resumed_copy_continued(straight: Path, resumed: Path, half: int, n: int) -> tuple[bool, str]:
    """The copy said it resumed from ``half`` (not 0) and its records continue the straight run's.

    Timing fields differ between any two runs; every other logged scalar (losses,
    D outputs, gradient norms, LRs) must be equal, step for step.
    """
    from distgan.rundir import STATS, rank_log, read_jsonl

    said = [int(m) for m in re.findall(r"resumed from step (\d+)", rank_log(resumed, 0).read_text())]
    rows = {r["step"]: r for r in read_jsonl(resumed / STATS)}
    ref = {r["step"]: r for r in read_jsonl(straight / STATS)}

    def scalars(r: dict) -> dict:
        return {k: v for k, v in r.items() if not (k.startswith("time") or k == "images_per_s")}

    unequal = [s for s in rows if s in ref and scalars(rows[s]) != scalars(ref[s])]
    ok = said == [half] and sorted(rows) == list(range(half + 1, n + 1)) and not unequal
    return ok, (f"log says resumed from step(s) {said}; records at steps {sorted(rows)}"
                + (f", differ from the straight run's at {unequal}" if unequal else
                   ", equal to the straight run's"))


def _grid_matches(run: Path, step: int, device: str) -> tuple[bool, str]:
    """The run's sample grid (made by the training process) vs the same grid from the checkpoint."""
    from PIL import Image

    from distgan.api import load_generator
    from distgan.train.samples import fixed_inputs, grid_tensor

    G, info = load_generator(run, "latest", device)
    cfg = info.config
    classes = len(info.classes) if info.condition == "classes" else 0
    z, y, per_row = fixed_inputs(cfg.log.num_samples, cfg.model.z_dim, classes, cfg.train.seed)
    with torch.no_grad():
        images = G(z.to(device), None if y is None else y.to(device)).float().cpu()
    pixels = (cfg.data.normalize, info.mean, info.std)
    mine = (grid_tensor(images, per_row, pixels).mul(255).add(0.5).clamp(0, 255).permute(1, 2, 0)
            .to(torch.uint8).numpy())
    theirs = np.asarray(Image.open(run / "samples" / f"step_{step:08d}.png").convert("RGB"))
    diff = np.abs(mine.astype(int) - theirs.astype(int))
    return int(diff.max()) <= 1, f"max {int(diff.max())} grey levels, {int((diff > 0).sum())} pixels differ"


def _sample_cli_matches(run: Path, work: Path, device: str) -> tuple[bool, str]:
    from distgan import sample
    from distgan.api import generate, load_generator

    out = work / "cli.npz"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = sample.main(["--run", str(run), "--num", "24", "--seed", "7", "--out", str(out), "--device", device])
    if rc:
        return False, f"python -m distgan.sample exited {rc}"
    G, info = load_generator(run, "latest", device)
    with torch.no_grad():
        want = generate(G, info, 24, seed=7)
    got = np.load(out)["images"]
    return bool(np.array_equal(got, want)), f"{int((got != want).sum())} of {got.size} values differ"


def _small_fid(run: Path, shards: Path, plan: Plan, cache: Path) -> float:
    from distgan.metrics.run import evaluate_run

    rec = evaluate_run(run, ["fid"], num=plan.small_fid, real=str(shards), device=plan.device,
                       overrides={"num_real": plan.small_fid, "cache_dir": str(cache),
                                  "batch_size": plan.inception_batch})
    return float(rec[0]["value"])


def variant(name: str, plan: Plan, rep: Report, shards: Path, work: Path) -> Path:
    """Train, resume, sample, export and evaluate one variant; returns its straight run dir."""
    from distgan.checkpoint import load_file
    from distgan.export import export
    from distgan.rundir import list_checkpoints
    from distgan.train import train

    n, half = plan.debug_steps, plan.debug_steps // 2
    extra = [*VARIANTS[name], "model.channels_last=true", "train.fused_adam=true", *STATEFUL]
    straight, resumed = work / name.replace(" ", "_") / "straight", work / name.replace(" ", "_") / "resumed"
    train(debug_config(shards, n, extra), straight)
    ok, note = _finite_losses(straight)
    rep.check(f"{name}: losses finite", ok, note=note)
    # the resumed run starts from exactly what a run stopped at N/2 leaves behind
    (resumed / "checkpoints").mkdir(parents=True)
    src = dict(list_checkpoints(straight))[half]
    shutil.copy(src, resumed / "checkpoints")
    (resumed / "checkpoints" / "latest").write_text(src.name + "\n")
    train(debug_config(shards, n, extra), resumed)
    ok, note = _resumed_copy_continued(straight, resumed, half, n)
    rep.check(f"{name}: resumed copy continued from step {half}", ok, note=note)
    a, b = (load_file(dict(list_checkpoints(r))[n]) for r in (straight, resumed))
    missing = [k for k in REQUIRED if k not in a or k not in b]
    diff, bad = state_differences(a, b)
    note = (f"missing {missing}; " if missing else "") + (f"differ: {', '.join(bad[:4])}" if bad else
                                                            f"all {len(a)} entries equal: {', '.join(sorted(a))}")
    rep.check(f"{name}: resume from step {half} bitwise", not bad and not missing, diff, "max abs diff", note)
    ok, note = _grid_matches(straight, n, plan.device)
    rep.check(f"{name}: run's sample grid == grid from checkpoint", ok, note=note)
    ok, note = _sample_cli_matches(straight, straight.parent, plan.device)
    rep.check(f"{name}: distgan.sample == api.generate (seed 7)", ok, note=note)
    d = export(straight, "torchscript", straight.parent / "g.pt")
    rep.check(f"{name}: torchscript export verified", d <= 1e-4, d, "max abs diff")
    fid = _small_fid(straight, shards, plan, work / "refstats")
    rep.check(f"{name}: FID {plan.small_fid} images finite", math.isfinite(fid), fid, "FID")
    return straight


def syncs_per_step(plan: Plan, shards: Path, work: Path, extra: list[str]) -> tuple[float, dict[str, float]]:
    """Host-device syncs per training step (and per call site) with ``extra`` overrides."""
    from distgan.train import train

    def count(steps: int) -> Counter:
        cfg = debug_config(shards, steps, ["data.device_cache=true", f"log.every={steps}",
                                           f"train.ckpt_every={steps}", *extra])
        sites: Counter = Counter()
        if plan.device == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train(cfg, work / f"sync_{len(list(work.glob('sync_*')))}")
        finally:
            if plan.device == "cuda":
                torch.cuda.set_sync_debug_mode(0)
        for w in caught:
            if "synchroniz" in str(w.message):
                sites[f"{Path(w.filename).name}:{w.lineno}"] += 1
        return sites

    short, long_ = plan.debug_steps, 2 * plan.debug_steps
    a, b = count(short), count(long_)
    per_site = {k: (b[k] - a[k]) / (long_ - short) for k in set(a) | set(b) if b[k] != a[k]}
    return sum(per_site.values()), per_site


def run(plan: Plan, rep: Report, shards: Path, work: Path) -> Path:
    """Every variant (fp16 only on CUDA); returns the fp32 run for the FID section."""
    torch.use_deterministic_algorithms(True, warn_only=True)  # resume must be bitwise
    try:
        runs = {}
        for name in VARIANTS:
            if "fp16" in name and plan.device != "cuda":
                rep.skip(name, "fp16 autocast needs CUDA")
                continue
            runs[name] = variant(name, plan, rep, shards, work)
    finally:
        torch.use_deterministic_algorithms(False)
    for label, extra in (("default path", []), ("fused Adam + sync_free", ["train.fused_adam=true",
                                                                          "train.sync_free=true"])):
        total, sites = syncs_per_step(plan, shards, work, extra)  # on the CPU too: the code path must not rot
        note = ", ".join(f"{k} x{v:g}" for k, v in sorted(sites.items())) or "none"
        case = f"host syncs per step, {label}"
        if plan.device != "cuda":  # CUDA's sync debug mode only: the count is 0 whatever the code does
            rep.na(case, "CUDA's sync debug mode counts them; the CPU has none to count", total, "syncs/step")
        elif "sync_free" in label:
            rep.check(case, total == 0, total, "syncs/step", note)
        else:
            rep.figure(case, total, "syncs/step", note=note)
    return runs["fp32"]
