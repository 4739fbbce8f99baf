"""Command line: compare two image sets, evaluate a trained run, or write reference statistics.

    python -m distgan.metrics NAMES A B [--num N] [--seed S] [--features-cache DIR]
        NAMES: fid, kid, precision_recall, intra_fid, comma-joined (one extraction per set)
        A, B: image folder | .npz (images [, labels]) | shard dir | run dir (--num samples) |
              stats .npz (mu/sigma, FID only). A is evaluated against the reference B.
    python -m distgan.metrics fid --run runs/debug [--checkpoint latest|best|STEP] [--num 10000]
                                  [--real SHARDS_DIR|FILE.npz] [--ema/--no-ema]
    python -m distgan.metrics classifier --run runs/debug
    python -m distgan.metrics kid --run runs/debug [--kid-features inception|classifier]
    python -m distgan.metrics stats --shards shards/mnist --out mnist_fid.npz [--resolution R] [--num N]

Results print as JSON lines (the metrics.jsonl record format, with provenance);
``--append`` also appends them to the run's ``metrics.jsonl``. Under torchrun
(RANK/WORLD_SIZE set) every rank joins a gloo/nccl group and embeds 1/R of the images.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as tdist

from distgan import dist
from distgan.errors import UserError
from distgan.fsutil import atomic_write_text
from distgan.log import setup_console
from distgan.metrics.frechet import save_stats
from distgan.metrics.inception import BACKENDS, RESIZE_POLICY, InceptionFeatures
from distgan.metrics.refstats import compute_real_stats
from distgan.metrics.run import evaluate_run
from distgan.metrics.twoset import compare
from distgan.rundir import METRICS, append_jsonl
from distgan.shards.manifest import ShardError, read_manifest


def _init_distributed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _device() -> str:
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


BACKEND_HELP = "what runs the Inception on the CPU: auto (onnxruntime when installed), torch, onnxruntime"


def _two_set_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distgan.metrics NAMES A B",
                                description="Metrics between two image sets; one JSON record per line. "
                                            "A is evaluated against the reference B (precision: A inside B's "
                                            "manifold; intra_fid: A's class c against B's class c).")
    p.add_argument("names", help="fid, kid, precision_recall, intra_fid; comma-join several")
    p.add_argument("a", help="image folder, .npz, shard dir, run dir or stats .npz")
    p.add_argument("b", help="image folder, .npz, shard dir, run dir or stats .npz")
    p.add_argument("--num", type=int, default=0, help="samples to generate from a run directory")
    p.add_argument("--seed", type=int, default=0, help="sampling seed for run directories and KID subsets")
    p.add_argument("--checkpoint", default="latest", help="run directories: latest, best or a step number")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="run directories: EMA weights (default: when the checkpoint has them)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--features-cache", default="", help="save/reuse the features of folders, .npz and runs here")
    p.add_argument("--cache-dir", default="", help="reference cache for shard dirs (default ~/.cache/distgan/refstats)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--weights", default="", help="Inception weights file (default: packaged)")
    p.add_argument("--weights-sha256", default="", help="sha256 pin for an unknown TorchScript weights file")
    p.add_argument("--inception-backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    p.add_argument("--out", default="", help="also append the records to this JSON-lines file")
    return p


def _two_set(argv: list[str]) -> int:
    args = _two_set_parser().parse_args(argv)
    records = compare(args.names, args.a, args.b, num=args.num, seed=args.seed,
                      checkpoint=int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint,
                      ema=args.ema, batch_size=args.batch_size, cache_dir=args.cache_dir,
                      features_cache=args.features_cache, kid_subsets=args.kid_subsets,
                      kid_subset_size=args.kid_subset_size, weights=args.weights,
                      weights_sha256=args.weights_sha256, device=_device(), backend=args.inception_backend)
    lines = [json.dumps(r) for r in records]
    print("\n".join(lines))
    if args.out:
        old = Path(args.out).read_text() if Path(args.out).is_file() else ""
        atomic_write_text(Path(args.out), old + "".join(line + "\n" for line in lines))
    return 0


def _is_two_set(argv: list[str]) -> bool:
    """``NAMES A B`` (two positionals after the names) rather than ``fid --run ...`` or ``stats``."""
    if not argv or argv[0] in ("stats", "-h", "--help") or any(a == "--run" or a.startswith("--run=") for a in argv):
        return False
    return argv[0] not in ("classifier",)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _is_two_set(argv):
        setup_console(_rank(), info_to_stderr=True)  # stdout carries the JSON records
        try:
            return _two_set(argv)
        except (UserError, ValueError, FileNotFoundError, ShardError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    p = argparse.ArgumentParser(prog="python -m distgan.metrics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("fid", "classifier", "kid"):
        s = sub.add_parser(name, help=f"evaluate {name} on a trained run")
        s.add_argument("--run", required=True, help="run directory (config.yaml + checkpoints/)")
        s.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
        s.add_argument("--num", type=int, default=0, help="generated samples (default: metrics.num_fake)")
        s.add_argument("--real", default="", help="real data: a shard directory or a stats .npz")
        s.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                       help="use the EMA generator when the checkpoint has one (default: yes)")
        s.add_argument("--append", action="store_true", help="also append the records to RUN/metrics.jsonl")
        s.add_argument("--kid-features", choices=["inception", "classifier"], default=None)
        s.add_argument("--num-real", type=int, default=None, help="real samples (0 = all)")
        s.add_argument("--inception-backend", default=None, choices=BACKENDS,
                       help=BACKEND_HELP + " (default: the run's metrics.inception_backend)")
    s = sub.add_parser("stats", help="write Inception reference statistics (pytorch-fid .npz) for a shard set")
    s.add_argument("--shards", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--resolution", type=int, default=0, help="resize to this side first (default: the shards')")
    s.add_argument("--num", type=int, default=0, help="use the first N samples (0 = all)")
    s.add_argument("--weights", default="", help="Inception weights file (default: packaged)")
    s.add_argument("--weights-sha256", default="", help="sha256 pin for an unknown TorchScript weights file")
    s.add_argument("--inception-backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    args = p.parse_args(argv)
    _init_distributed()
    setup_console(_rank(), info_to_stderr=True)  # stdout carries the JSON records
    try:
        if args.cmd == "stats":
            m = read_manifest(args.shards)
            res = args.resolution or m.height
            net = InceptionFeatures(args.weights, args.weights_sha256, args.inception_backend).to(_device())
            st = compute_real_stats(args.shards, res, lambda x: net(x.to(_device())).cpu(), net.dim, args.num)
            if dist.rank_world()[0] == 0:
                save_stats(args.out, st.mu, st.sigma, count=st.count, extractor=net.name, weights_sha256=net.sha256,
                           manifest_digest=m.digest(), resolution=res, resize=RESIZE_POLICY)
                print(json.dumps({"out": args.out, "count": st.count, "weights_sha256": net.sha256,
                                  "resolution": res, "resize": RESIZE_POLICY}))
            return 0
        overrides = {k: v for k, v in (("kid_features", args.kid_features), ("num_real", args.num_real),
                                       ("inception_backend", args.inception_backend)) if v is not None}
        checkpoint = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
        records = evaluate_run(args.run, [args.cmd], checkpoint, args.num, args.real, args.ema, overrides,
                               device=_device())
        if dist.rank_world()[0] == 0:
            for r in records:
                print(json.dumps(r))
            if args.append:
                append_jsonl(Path(args.run) / METRICS, records)
        return 0
    except (UserError, ValueError, FileNotFoundError, ShardError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
