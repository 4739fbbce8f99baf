"""Command line: compare two image sets, evaluate a trained run, or write reference statistics.

    python -m distgan.metrics NAMES A B [--num N] [--seed S] [--features-cache DIR]
        NAMES: two-set metrics of distgan.metrics.registry (e.g. fid, kid, fd_dinov2), comma-joined;
               one extraction per set and feature network
        A, B: image folder | .npz (images [, labels]) | shard dir | run dir (--num samples) |
              stats .npz (mu/sigma, Frechet distances only). A is evaluated against the reference B.
    python -m distgan.metrics fid --run runs/debug [--checkpoint latest|best|STEP] [--num 10000]
                                  [--real SHARDS_DIR|FILE.npz] [--ema/--no-ema]
    python -m distgan.metrics classifier --run runs/debug          # any metric name works with --run
    python -m distgan.metrics kid --run runs/debug [--kid-features inception|classifier]
    python -m distgan.metrics fd_dinov2 A B --dinov2-weights vit_large_patch14_dinov2.lvd142m.safetensors
    python -m distgan.metrics stats --shards shards/mnist --out mnist_fid.npz [--resolution R] [--num N]

Every feature network's settings are flags named after its config keys
(metrics.inception_backend: --inception-backend; metrics.features.dinov2.weights:
--dinov2-weights; ...);
with --run they override the run's config. Results print as JSON lines (the
metrics.jsonl record format, with provenance); ``--append`` also appends them to
the run's ``metrics.jsonl``. Under torchrun (RANK/WORLD_SIZE set) every rank joins
a gloo/nccl group and embeds 1/R of the images.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as tdist

from distgan import dist
from distgan.config import DistConfig, MetricsConfig, updated
from distgan.errors import UserError, cli_main
from distgan.extras import MissingExtra
from distgan.fsutil import atomic_write_text
from distgan.log import setup_console
from distgan.metrics.frechet import save_stats
from distgan.metrics.protocol import ExtractorContext
from distgan.metrics.refstats import compute_real_stats
from distgan.metrics.registry import FEATURE_NETS, REGISTRY, needs, two_set_names
from distgan.metrics.run import evaluate_run
from distgan.metrics.twoset import compare
from distgan.ranks import launch_ranks
from distgan.rendezvous import RendezvousError, rendezvous
from distgan.rundir import METRICS, append_jsonl, config_path, read_config
from distgan.shards.manifest import ShardError, read_manifest

ERRORS = (UserError, ValueError, FileNotFoundError, ShardError, MissingExtra)  # one error line, exit 2
ALIASES = {"inception_weights": ("--weights",), "inception_sha256": ("--weights-sha256",)}  # earlier spellings


def _init_distributed(run: str = "") -> None:
    """Under torchrun, join the ranks' group as training does: waits bounded by ``dist.timeout_s`` (the
    run's, else its default), a rank that never arrives named; nccl on GPUs, gloo otherwise."""
    ranks = launch_ranks()
    if ranks.world <= 1 or tdist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(ranks.local_rank)
    timeout_s, key = DistConfig().timeout_s, "dist.timeout_s, at its default here"
    if run:
        timeout_s, key = read_config(run).dist.timeout_s, f"dist.timeout_s in {config_path(run)}"
    try:
        rendezvous(timeout_s, timeout_key=key)
    except RendezvousError as e:
        raise UserError(f"rank {ranks.rank}: rendezvous failed ({e.kind}): {e}") from e


def _device() -> str:
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


def _field(key: str) -> tuple[Any, dataclasses.Field]:
    """Type and field of a network setting: a flat ``metrics.*`` key or ``features.<net>.<field>``."""
    if key.startswith("features."):
        _, net, name = key.split(".")
        cls = FEATURE_NETS[net].settings
    else:
        cls, name = MetricsConfig, key
    return typing.get_type_hints(cls)[name], next(f for f in dataclasses.fields(cls) if f.name == name)


def _add_network_flags(p: argparse.ArgumentParser, keys: list[str], default_note: str) -> None:
    """One flag per network setting (``inception_backend`` -> ``--inception-backend``,
    ``features.dinov2.weights`` -> ``--dinov2-weights``), typed and documented as the field."""
    for key in keys:
        tp, f = _field(key)
        kw: dict[str, Any] = {"default": None, "dest": key, "metavar": f.name.upper(),
                              "help": f"{f.metadata.get('doc', '')} ({default_note})"}
        if typing.get_origin(tp) is Literal:
            kw["choices"] = typing.get_args(tp)
        elif tp is int:
            kw["type"] = int
        flag = key.removeprefix("features.").replace(".", "-").replace("_", "-")
        p.add_argument("--" + flag, *ALIASES.get(key, ()), **kw)


def _options(nets: list[str]) -> list[str]:
    """The settings of the networks ``nets``, as keys below ``metrics``."""
    keys = []
    for k in nets:
        net = FEATURE_NETS[k]
        keys += list(net.options)
        if net.settings is not None:
            keys += [f"features.{k}.{f.name}" for f in dataclasses.fields(net.settings)]
    return list(dict.fromkeys(keys))


def _given(args: argparse.Namespace, keys: list[str]) -> dict[str, Any]:
    """The network settings given on the command line (None = not given)."""
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _two_set_keys() -> list[str]:
    """Settings of the networks the two-set metrics use (with the config defaults, e.g. kid on Inception)."""
    return _options(list(needs([REGISTRY[n] for n in two_set_names()], MetricsConfig())))


def _two_set_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distgan.metrics NAMES A B",
                                description="Metrics between two image sets; one JSON record per line. "
                                            "A is evaluated against the reference B (precision: A inside B's "
                                            "manifold; intra_fid: A's class c against B's class c).")
    p.add_argument("names", help=f"{', '.join(two_set_names())}; comma-join several")
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
    _add_network_flags(p, _two_set_keys(), "default: the metrics config's")
    p.add_argument("--out", default="", help="also append the records to this JSON-lines file")
    return p


def _two_set(argv: list[str]) -> int:
    args = _two_set_parser().parse_args(argv)
    mc = updated(MetricsConfig(batch_size=args.batch_size, cache_dir=args.cache_dir, kid_subsets=args.kid_subsets,
                               kid_subset_size=args.kid_subset_size), _given(args, _two_set_keys()), "metrics",
                 source="command line")
    records = compare(args.names, args.a, args.b, mc, num=args.num, seed=args.seed,
                      checkpoint=int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint,
                      ema=args.ema, device=_device(), features_cache=args.features_cache)
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
    return not (argv[0] in REGISTRY and not REGISTRY[argv[0]].two_set)  # e.g. classifier: a run's metric only


@cli_main(*ERRORS)
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _is_two_set(argv):
        setup_console(launch_ranks().rank, info_to_stderr=True)  # stdout carries the JSON records
        return _two_set(argv)
    p = argparse.ArgumentParser(prog="python -m distgan.metrics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    run_keys = _options(list(FEATURE_NETS))
    for name, metric in REGISTRY.items():
        s = sub.add_parser(name, help=f"evaluate {name} on a trained run: {metric.doc}")
        s.add_argument("--run", required=True, help="run directory (config.yaml + checkpoints/)")
        s.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
        s.add_argument("--num", type=int, default=0, help="generated samples (default: metrics.num_fake)")
        s.add_argument("--real", default="", help="real data: a shard directory or a stats .npz")
        s.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                       help="use the EMA generator when the checkpoint has one (default: yes)")
        s.add_argument("--append", action="store_true", help="also append the records to RUN/metrics.jsonl")
        s.add_argument("--kid-features", choices=typing.get_args(typing.get_type_hints(MetricsConfig)["kid_features"]),
                       default=None)
        s.add_argument("--num-real", type=int, default=None, help="real samples (0 = all)")
        _add_network_flags(s, run_keys, "default: the run's config")
    s = sub.add_parser("stats", help="write Inception reference statistics (pytorch-fid .npz) for a shard set")
    s.add_argument("--shards", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--resolution", type=int, default=0, help="resize to this side first (default: the shards')")
    s.add_argument("--num", type=int, default=0, help="use the first N samples (0 = all)")
    stats_keys = list(FEATURE_NETS["inception"].options)
    _add_network_flags(s, stats_keys, "default: the metrics config's")
    args = p.parse_args(argv)
    _init_distributed(getattr(args, "run", ""))
    setup_console(launch_ranks().rank, info_to_stderr=True)  # stdout carries the JSON records
    if args.cmd == "stats":
        m = read_manifest(args.shards)
        res = args.resolution or m.height
        ex = FEATURE_NETS["inception"].extractor(ExtractorContext(MetricsConfig(**_given(args, stats_keys)),
                                                              _device()))
        st = compute_real_stats(args.shards, res, ex.embed, ex.dim, args.num)
        if dist.rank_world()[0] == 0:
            save_stats(args.out, st.mu, st.sigma, count=st.count, extractor=ex.name, weights_sha256=ex.sha256,
                       manifest_digest=m.digest(), resolution=res, resize=ex.resize)
            print(json.dumps({"out": args.out, "count": st.count, "weights_sha256": ex.sha256,
                              "resolution": res, "resize": ex.resize}))
        return 0
    overrides = {k: v for k, v in (("kid_features", args.kid_features), ("num_real", args.num_real))
                 if v is not None}
    overrides.update(_given(args, run_keys))
    checkpoint = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
    records = evaluate_run(args.run, [args.cmd], checkpoint, args.num, args.real, args.ema, overrides,
                           device=_device())
    if dist.rank_world()[0] == 0:
        for r in records:
            print(json.dumps(r))
        if args.append:
            append_jsonl(Path(args.run) / METRICS, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
