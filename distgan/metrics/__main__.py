"""Command line: evaluate a trained run, or write reference statistics.

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
import logging
import os
import sys


def _init_distributed() -> None:
    import torch
    import torch.distributed as tdist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _device() -> str:
    import torch

    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distgan.metrics", description=__doc__.split("\n")[0])
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
    s = sub.add_parser("stats", help="write Inception reference statistics (pytorch-fid .npz) for a shard set")
    s.add_argument("--shards", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--resolution", type=int, default=0, help="resize to this side first (default: the shards')")
    s.add_argument("--num", type=int, default=0, help="use the first N samples (0 = all)")
    s.add_argument("--weights", default="", help="Inception weights file (default: packaged)")
    s.add_argument("--weights-sha256", default="", help="sha256 pin for an unknown TorchScript weights file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    _init_distributed()
    from distgan import dist
    from distgan.errors import UserError
    from distgan.shards.manifest import ShardError

    try:
        if args.cmd == "stats":
            from distgan.metrics.frechet import save_stats
            from distgan.metrics.inception import RESIZE_POLICY, InceptionFeatures
            from distgan.metrics.refstats import compute_real_stats
            from distgan.shards import read_manifest

            m = read_manifest(args.shards)
            res = args.resolution or m.height
            net = InceptionFeatures(args.weights, args.weights_sha256).to(_device())
            st = compute_real_stats(args.shards, res, lambda x: net(x.to(_device())).cpu(), net.dim, args.num)
            if dist.rank_world()[0] == 0:
                save_stats(args.out, st.mu, st.sigma, count=st.count, extractor=net.name, weights_sha256=net.sha256,
                           manifest_digest=m.digest(), resolution=res, resize=RESIZE_POLICY)
                print(json.dumps({"out": args.out, "count": st.count, "weights_sha256": net.sha256,
                                  "resolution": res, "resize": RESIZE_POLICY}))
            return 0
        from distgan.metrics.run import evaluate_run
        from distgan.metrics.training import append_records

        overrides = {k: v for k, v in (("kid_features", args.kid_features), ("num_real", args.num_real))
                     if v is not None}
        checkpoint = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
        records = evaluate_run(args.run, [args.cmd], checkpoint, args.num, args.real, args.ema, overrides,
                               device=_device())
        if dist.rank_world()[0] == 0:
            for r in records:
                print(json.dumps(r))
            if args.append:
                append_records(args.run, records)
        return 0
    except (UserError, ValueError, FileNotFoundError, ShardError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
