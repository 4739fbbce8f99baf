"""Generate images from a trained run.

    python -m distgan.sample --run runs/mnist_cdcgan --num 100 --out digits.png        # a row per digit
    python -m distgan.sample --run runs/mnist_cdcgan --num 3000 --labels 0,3,7 --seed 1 --out fake.npz
    python -m distgan.sample --run RUN --num 40 --labels 3,3:0.5+8:0.5,8 --out mix.png  # weighted labels
    python -m distgan.sample --run RUN --label-sweep 3,8 --steps 10 --num 8 --out sweep.png
    python -m distgan.sample --run RUN --interpolate 10 --out interp.png               # slerp, a row per class
    python -m distgan.sample --run celeba_run --num 16 --attrs "Male=1,Smiling=0;Male=0,Smiling=1" --out a.png

Label specs (comma-separated, one grid row each): a class name or index (``7``),
or a weighted / multi-class mix ``3:0.5+8:0.5`` (De Matteis's weighting and
multi-class conditioning; a term without ``:w`` has weight 1). Attribute specs:
``Name=value`` pairs separated by commas, combinations separated by ``;``;
attributes not named are 0. ``--num`` is the total image count, split evenly
over the rows; for ``--label-sweep`` it is the number of rows (latents) and for
``--interpolate`` the number of endpoint pairs per label (default 1).

``.npz`` output: ``images`` uint8 (N, H, W, C); ``labels`` int64 (N,) class
indices, or float32 (N, C) label weights when any label is weighted/mixed, or
float32 (N, A) attributes; ``z`` float32 (N, d); ``classes``/``attributes``;
``seed``; ``step``. ``.png`` output: one grid, one row per label / latent.
The same ``--seed`` gives the same images.
"""
from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from distgan.api import (
    SampleError,
    blocks,
    condition_vectors,
    latent,
    lerp,
    load_generator,
    new_seed,
    run_generator,
    slerp,
)
from distgan.errors import cli_main
from distgan.fsutil import atomic_open, atomic_write_bytes


@dataclass
class Plan:
    """What to generate: latents, per-image conditions, and the grid shape."""
    z: torch.Tensor  # (N, d)
    y: np.ndarray | None  # (N, y_dim) float conditions
    cols: int  # images per grid row


# ----------------------------------------------------------------------------- parsing

def parse_labels(text: str, info) -> list[dict[str, float]]:
    """``"0,3:0.5+8:0.5"`` -> ``[{"0": 1.0}, {"3": 0.5, "8": 0.5}]`` (names checked against the run)."""
    rows = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise SampleError(f"empty label in --labels {text!r} (expected e.g. 0,3,7 or 3:0.5+8:0.5)")
        row: dict[str, float] = {}
        for term in item.split("+"):
            name, _, w = term.strip().partition(":")
            try:
                weight = float(w) if w else 1.0
            except ValueError:
                raise SampleError(f"bad weight {w!r} in label {item!r} (expected NAME:WEIGHT, e.g. 3:0.5)") from None
            info.class_index(name)  # unknown names fail here, listing the classes
            row[name] = row.get(name, 0.0) + weight
        rows.append(row)
    return rows


def parse_attrs(text: str, info) -> list[dict[str, float]]:
    """``"Male=1,Smiling=0;Male=0"`` -> one dict per ``;``-separated combination."""
    rows = []
    for combo in text.split(";"):
        row: dict[str, float] = {}
        for pair in (p.strip() for p in combo.split(",") if p.strip()):
            name, eq, v = pair.partition("=")
            if not eq:
                raise SampleError(f"bad attribute {pair!r} in --attrs (expected NAME=VALUE, e.g. Male=1)")
            try:
                row[name.strip()] = float(v)
            except ValueError:
                raise SampleError(f"bad value {v!r} for attribute {name!r} (expected 0 or 1)") from None
        info.attr_vector(row)  # unknown names fail here, listing the attributes
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- plans

def plain_plan(info, vecs: np.ndarray | None, n: int, seed: int, shared_noise: bool) -> Plan:
    """``n`` images over the condition rows; with ``shared_noise`` column j uses one latent in every row."""
    if vecs is None:
        return Plan(latent(n, info.z_dim, seed), None, max(1, int(np.ceil(np.sqrt(n)))))
    which = blocks(n, len(vecs))
    cols = int(np.ceil(n / len(vecs)))
    if shared_noise:
        pos = np.concatenate([np.arange((which == r).sum()) for r in range(len(vecs))])
        z = latent(cols, info.z_dim, seed)[pos]
    else:
        z = latent(n, info.z_dim, seed)
    return Plan(z, vecs[which], cols)


def sweep_plan(info, a: str, b: str, steps: int, rows: int, seed: int) -> Plan:
    """Rows of fixed latents; columns move the label weight from class ``a`` (left) to ``b`` (right)."""
    if steps < 2:
        raise SampleError(f"--steps must be >= 2 for a sweep, got {steps}")
    ea, eb = info.label_vector({a: 1.0}), info.label_vector({b: 1.0})
    w = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    row_y = (1 - w) * ea + w * eb  # (steps, C)
    z = latent(rows, info.z_dim, seed).repeat_interleave(steps, 0)
    return Plan(z, np.tile(row_y, (rows, 1)).astype(np.float32), steps)


def interpolation_plan(info, vecs: np.ndarray | None, k: int, pairs: int, seed: int, method: str) -> Plan:
    """Per endpoint pair, one row per label walking the latent from one random point to another.

    Every label row of a pair shares the same path, so rows differ only by the label.
    """
    if k < 2:
        raise SampleError(f"--interpolate needs at least 2 steps, got {k}")
    ends = latent(2 * pairs, info.z_dim, seed)
    path = (slerp if method == "slerp" else lerp)(ends[:pairs], ends[pairs:], torch.linspace(0, 1, k))
    nlab = 1 if vecs is None else len(vecs)
    z = path[:, None].expand(pairs, nlab, k, info.z_dim).reshape(-1, info.z_dim)  # pair, label, step
    y = None if vecs is None else np.tile(np.repeat(vecs, k, axis=0), (pairs, 1))
    return Plan(z, y, k)


# ----------------------------------------------------------------------------- output

def save_png_grid(images: np.ndarray, cols: int, path: str | Path, pad: int = 2) -> None:
    """uint8 (N, H, W, C) -> one PNG, ``cols`` images per row, white padding; written atomically.

    Tiled by torchvision's ``make_grid`` (as the training grids are); grey
    images stay a one-channel PNG.
    """
    n, h, w, c = images.shape
    rows = int(np.ceil(n / cols))
    blank = np.full((rows * cols - n, h, w, c), 255, np.uint8)  # white cells: every row is ``cols`` wide
    tiles = torch.from_numpy(np.concatenate([images, blank])).permute(0, 3, 1, 2)
    grid = make_grid(tiles, nrow=cols, padding=pad, pad_value=255).permute(1, 2, 0).numpy()
    pil = Image.fromarray(grid[..., 0] if c == 1 else np.ascontiguousarray(grid[..., :3]))
    buf = io.BytesIO()
    pil.save(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def save_npz(path: str | Path, images: np.ndarray, plan: Plan, info, seed: int) -> None:
    out = {"images": images, "z": plan.z.numpy().astype(np.float32), "seed": np.int64(seed),
           "step": np.int64(info.step), "classes": np.array(info.classes, dtype=str),
           "attributes": np.array(info.attributes, dtype=str)}
    if plan.y is not None:
        onehot = info.condition == "classes" and bool(np.all(np.isin(plan.y, (0.0, 1.0)))
                                                      and np.all(plan.y.sum(1) == 1))
        out["labels"] = plan.y.argmax(1).astype(np.int64) if onehot else plan.y.astype(np.float32)
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **out)


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distgan.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory (holds config.yaml, checkpoints/)")
    p.add_argument("--checkpoint", default="latest", help="latest, best or a step number (default latest)")
    p.add_argument("--num", type=int, help="images in total (rows for --label-sweep, pairs for --interpolate)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--labels", help="class labels, one row each: 0,3,7 or weighted 3:0.5+8:0.5")
    g.add_argument("--attrs", help="attributes: Male=1,Smiling=0 (combinations separated by ;)")
    g.add_argument("--label-sweep", metavar="A,B", help="sweep the label weight from class A to class B")
    p.add_argument("--steps", type=int, default=10, help="columns of a --label-sweep (default 10)")
    p.add_argument("--interpolate", type=int, metavar="K", help="latent interpolation with K steps per row")
    p.add_argument("--interp", choices=["slerp", "lerp"], default="slerp", help="interpolation path (default slerp)")
    p.add_argument("--shared-noise", action="store_true", help="column j uses the same latent in every row")
    p.add_argument("--seed", type=int, help="noise seed (default: random, printed)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="use the EMA generator (default: when the checkpoint has one)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", required=True, help="output FILE.npz or FILE.png")
    return p


def run(args: argparse.Namespace) -> str:
    """Do what the parsed command line asks; returns a one-line summary."""
    out = Path(args.out)
    if out.suffix not in (".npz", ".png"):
        raise SampleError(f"--out {out}: the file name must end in .npz or .png")
    G, info = load_generator(args.run, args.checkpoint, args.device, args.ema)
    seed = new_seed() if args.seed is None else args.seed
    if args.label_sweep:
        if args.interpolate:
            raise SampleError("--label-sweep and --interpolate cannot be combined")
        ends = [s.strip() for s in args.label_sweep.split(",")]
        if len(ends) != 2:
            raise SampleError(f"--label-sweep takes two classes A,B, got {args.label_sweep!r}")
        plan = sweep_plan(info, ends[0], ends[1], args.steps, args.num or 8, seed)
    else:
        spec_l = parse_labels(args.labels, info) if args.labels else None
        spec_a = parse_attrs(args.attrs, info) if args.attrs else None
        vecs = condition_vectors(info, spec_l, spec_a)
        if args.interpolate:
            plan = interpolation_plan(info, vecs, args.interpolate, args.num or (1 if vecs is not None else 8),
                                      seed, args.interp)
        else:
            if not args.num or args.num < 1:
                raise SampleError("--num N (N >= 1) is required: how many images to generate")
            plan = plain_plan(info, vecs, args.num, seed, args.shared_noise)
    images = run_generator(G, info, plan.z, plan.y)
    if out.suffix == ".png":
        save_png_grid(images, plan.cols, out)
    else:
        save_npz(out, images, plan, info, seed)
    rows = int(np.ceil(len(images) / plan.cols))
    return (f"wrote {len(images)} images ({rows} x {plan.cols}) to {out} from {info.checkpoint} "
            f"(step {info.step}, {'EMA' if info.ema else 'raw'} G), seed {seed}")


@cli_main()  # SampleError, CheckpointError, ...: one error line
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
