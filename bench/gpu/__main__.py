"""python -m bench.gpu [--dry-run] [--json FILE] [--only SECTION ...] [--work DIR] [--inception-tol ABS]:
see bench/gpu/__init__.py."""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

SECTIONS = ("correctness", "distributed", "syncbn", "throughput", "data", "inception", "fid")
NEEDS_SHARDS = ("correctness", "distributed", "fid")  # the others make their own inputs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    p.add_argument("--dry-run", action="store_true", help="the same checks on the CPU at tiny sizes")
    p.add_argument("--json", help="also write the rows (and the failed checks) to this JSON file")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    p.add_argument("--work", help="keep the runs and shards in this directory (default: a temporary one)")
    p.add_argument("--inception-tol", type=float, metavar="ABS",
                   help="override the Inception comparisons' tolerance (max abs feature difference); "
                        "0 fails them, which the tests use to prove that a failed check exits 1")
    a = p.parse_args(argv)
    # deterministic cuBLAS for the bitwise resume check; must be set before CUDA initialises
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    from bench.gpu import Plan, Report

    if not a.dry_run and not torch.cuda.is_available():
        print("error: python -m bench.gpu needs a CUDA device (torch.cuda.is_available() is False); "
              "use --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    plan = Plan.for_device(a.dry_run)
    sections = a.only or list(SECTIONS)
    rep = Report()
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="distgan-gpu-check-") as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        _run_sections(plan, rep, sections, work, a.inception_tol)
    wall = time.time() - t_start
    device = torch.cuda.get_device_name(0) if plan.device == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    print(f"\ndistgan GPU acceptance run on {device}, torch {torch.__version__}, "
          f"{'dry run' if plan.dry else 'full'}; {wall:.0f} s\n")
    print(rep.table())
    print(f"\n{rep.summary()}")
    if a.json:
        rep.to_json(a.json, {"device": device, "torch": torch.__version__, "dry_run": plan.dry,
                             "wall_s": round(wall, 1), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                             "gpus": torch.cuda.device_count() if plan.device == "cuda" else 0,
                             "sections": sections})
    for r in rep.failures:
        print(f"FAILED: {r.section}: {r.case} ({r.value}{' ' + r.note if r.note else ''})", file=sys.stderr)
    return 1 if rep.failures else 0


def _run_sections(plan, rep, sections: list[str], work: Path, inception_tol: float | None) -> None:
    """Each section in order; one that raises is a failed check named after it, the rest still run."""
    from bench.gpu import correctness, data_fid, distributed, inception, syncbn, throughput
    from distgan.shards import write_shards

    shards = work / "mnist"
    if set(sections) & set(NEEDS_SHARDS) and not (shards / "manifest.json").is_file():
        write_shards("mnist-embedded", None, shards, shard_size=500, progress=False)
    fid_run, fast_rate = None, 0.0
    for name in sections:
        rep.section = name
        t = time.time()
        try:
            if name == "correctness":
                fid_run = correctness.run(plan, rep, shards, work / "correctness")
            elif name == "distributed":
                distributed.run(plan, rep, shards, work / "distributed")
            elif name == "syncbn":
                syncbn.run(plan, rep)
            elif name == "throughput":
                fast_rate = throughput.run(plan, rep, work / "throughput")
            elif name == "data":
                data_fid.run_data(plan, rep, work / "data", fast_rate)
            elif name == "inception":
                inception.run(plan, rep, inception_tol)
            elif name == "fid":
                if fid_run is None:  # --only fid: a short fp32 debug run of its own
                    from distgan.train import train

                    fid_run = work / "fid_run"
                    train(correctness.debug_config(shards, plan.debug_steps, []), fid_run)
                data_fid.run_fid(plan, rep, fid_run, shards, work / "correctness" / "refstats")
        except Exception as e:  # a crashed section is a failed check; the others still give their figures
            traceback.print_exc()
            rep.check(f"{name} section ran", False, note=f"{type(e).__name__}: {str(e)[:300]}")
        print(f"[bench.gpu] {name} done in {time.time() - t:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
