"""Section 1: the debug preset end to end on the device, per precision and fast path.

Each variant trains the CPU debug preset (with ``model.channels_last`` and
``train.fused_adam``) straight to N steps, resumes a copy from step N/2 to N,
then checks: every logged loss finite; the resumed run's weights and optimizer
states bitwise equal to the straight run's (deterministic algorithms are on for
this section, as the CPU path is bitwise); the run's last sample grid equal to
the grid regenerated from the checkpoint; ``python -m distgan.sample`` equal to
``distgan.api.generate`` with the same seed; the TorchScript export verified; a
small FID finite. Host syncs per training step are counted separately for the
default path and ``train.sync_free`` (CUDA's sync debug mode; per-step = the
difference of two run lengths, so start-up and the final save cancel).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from bench.gpu import Plan, Report

ROOT = Path(__file__).resolve().parents[2]
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


def _max_state_diff(a: dict, b: dict) -> float:
    """Largest absolute difference over G, D and both optimizers' states (inf: structure differs)."""
    worst = 0.0
    for key in ("G", "D"):
        for name, t in a[key].items():
            worst = max(worst, float((t.double() - b[key][name].double()).abs().max()) if t.numel() else 0.0)
    for key in ("opt_d", "opt_g"):
        for pid, st in a[key]["state"].items():
            for k, v in st.items():
                w = b[key]["state"][pid][k]
                worst = max(worst, float((torch.as_tensor(v).double() - torch.as_tensor(w).double()).abs().max()))
    return worst


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
    from distgan.export import export
    from distgan.rundir import list_checkpoints
    from distgan.train import train
    from distgan.train.state import load_file

    n, half = plan.debug_steps, plan.debug_steps // 2
    extra = [*VARIANTS[name], "model.channels_last=true", "train.fused_adam=true"]
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
    a, b = (load_file(dict(list_checkpoints(r))[n]) for r in (straight, resumed))
    diff = _max_state_diff(a, b)
    rep.check(f"{name}: resume from step {half} bitwise", diff == 0.0, diff, "max abs diff")
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
        total, sites = syncs_per_step(plan, shards, work, extra)
        note = ", ".join(f"{k} x{v:g}" for k, v in sorted(sites.items())) or "none"
        if "sync_free" in label:
            rep.check(f"host syncs per step, {label}", total == 0, total, "syncs/step", note)
        else:
            rep.figure(f"host syncs per step, {label}", total, "syncs/step", note=note)
    return runs["fp32"]
