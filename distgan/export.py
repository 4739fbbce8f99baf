"""Export a run's generator as a standalone file that runs without distgan.

    python -m distgan.export --run runs/mnist_cdcgan --format torchscript --out mnist_g.pt
    python -m distgan.export --run runs/mnist_cdcgan --format onnx --out mnist_g.onnx [--checkpoint best]
    python -m distgan.export --run runs/mnist_cdcgan --format safetensors --out mnist_g.safetensors

safetensors is the format for sharing weights with other distgan users: G's
raw weights plus its config and label space in the file's metadata, loaded by
``distgan.load_generator("mnist_g.safetensors")`` without the run directory
(see :mod:`distgan.weights`). The TorchScript and ONNX exports below are for
running G without distgan.

The exported model takes ``z`` float32 (B, z_dim) standard-normal noise and,
for conditional runs, ``y`` float32 (B, C) label vectors (one-hot for one
class; any weights for weighted / multi-class samples; 0/1 attribute vectors
for attribute runs). It returns ``images`` float32 (B, C_img, H, W) in [0, 1]
(the run's pixel normalisation already undone). The same facts are stored in
the file as JSON (TorchScript: extra file ``distgan.json``; ONNX: metadata
key ``distgan``). Using it elsewhere needs only torch or onnxruntime:

    g = torch.jit.load("mnist_g.pt"); images = g(torch.randn(8, 64), torch.eye(10)[:8])
    s = onnxruntime.InferenceSession("mnist_g.onnx"); s.run(None, {"z": z, "y": y})[0]

The export checks itself: it runs the saved file on a fresh batch and compares
with the original generator (max abs difference is printed; > 1e-4 fails).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from distgan.api import GeneratorInfo, SampleError, load_generator
from distgan.errors import cli_main
from distgan.fsutil import atomic_write_bytes
from distgan.pixels import unit_affine
from distgan.weights import save_generator_file

TOLERANCE = 1e-4
FORMATS = ("torchscript", "onnx", "safetensors")


class Standalone(nn.Module):
    """G plus the output mapping back to [0, 1] pixels; ``forward(z, y)`` with float label vectors.

    The mapping is :func:`distgan.pixels.unit_affine` held as buffers, so the
    traced TorchScript / ONNX graph carries it and needs no distgan to run.
    """

    def __init__(self, G: nn.Module, info: GeneratorInfo):
        super().__init__()
        self.G = G
        c = info.channels
        scale, shift = unit_affine(info.normalize, info.mean, info.std, c)
        self.register_buffer("scale", scale.view(1, c, 1, 1))
        self.register_buffer("shift", shift.view(1, c, 1, 1))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (self.G(z, y) * self.scale + self.shift).clamp(0.0, 1.0)


def metadata(info: GeneratorInfo, fmt: str) -> dict[str, Any]:
    """What a user of the exported file needs to know (stored inside it)."""
    return {"format": f"distgan-generator-{fmt}", "inputs": ["z", "y"] if info.y_dim else ["z"],
            "z_dim": info.z_dim, "y_dim": info.y_dim, "condition": info.condition,
            "classes": info.classes, "attributes": info.attributes, "channels": info.channels,
            "resolution": info.resolution, "output": "images float32 (B, C, H, W) in [0, 1]",
            "z_distribution": "standard normal", "run_dir": info.run_dir, "step": info.step,
            "checkpoint": Path(info.checkpoint).name, "ema": info.ema}


def example_inputs(info: GeneratorInfo, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A deterministic (z, y) batch: y cycles through one-hot classes (or random 0/1 attributes)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, info.z_dim, generator=g)
    if info.condition == "none":
        return (z,)
    if info.condition == "classes":
        y = torch.eye(info.num_classes)[torch.arange(n) % info.num_classes]
    else:
        y = torch.randint(0, 2, (n, info.y_dim), generator=g).float()
    return z, y


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch marks torch.jit deprecated with a FutureWarning on every call; the format still works
    and many deployment tools load it, so keep the command's output readable."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit\.")
        yield


def to_torchscript(model: Standalone, info: GeneratorInfo) -> bytes:
    with _quiet_jit():
        traced = torch.jit.trace(model, example_inputs(info, 2), check_trace=True)
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={"distgan.json": json.dumps(metadata(info, "torchscript"))})
    return buf.getvalue()


def to_onnx(model: Standalone, info: GeneratorInfo) -> bytes:
    import onnx  # noqa: PLC0415 - optional package ([export] extra), only for --format onnx

    args = example_inputs(info, 2)
    names = ["z", "y"][:len(args)]
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():  # z and y share the batch dim; torch notes it merged the names
        warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used")
        prog = torch.onnx.export(model, args, input_names=names, output_names=["images"], dynamo=True,
                                 dynamic_shapes=tuple({0: batch} for _ in args), verbose=False)
    proto = prog.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "distgan", json.dumps(metadata(info, "onnx"))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def run_exported(path: str | Path, fmt: str, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    """Run an exported file the way an outside user would (torch.jit.load / onnxruntime)."""
    if fmt == "torchscript":
        with torch.no_grad(), _quiet_jit():
            return torch.jit.load(str(path)).eval()(*inputs).numpy()
    import onnxruntime as ort  # noqa: PLC0415 - optional package ([export] extra), only to run an .onnx file

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feed)[0]


def export(run_dir: str | Path, fmt: str, out: str | Path, checkpoint: str | int = "latest",
           ema: bool | None = None) -> float:
    """Write the standalone generator to ``out``; returns the verified max abs difference."""
    if fmt not in FORMATS:
        raise SampleError(f"unknown export format {fmt!r}; available: {', '.join(FORMATS)}")
    G, info = load_generator(run_dir, checkpoint, "cpu", ema)
    model = Standalone(G, info).eval()
    if fmt == "safetensors":
        save_generator_file(G, info, out)
    else:
        atomic_write_bytes(out, to_torchscript(model, info) if fmt == "torchscript" else to_onnx(model, info))
    check = example_inputs(info, 5, seed=1)  # a batch size the export never saw
    with torch.no_grad():
        want = model(*check).numpy()
        if fmt == "safetensors":  # loaded back as a user would, without the run directory
            got = Standalone(*load_generator(out)).eval()(*check).numpy()
        else:
            got = run_exported(out, fmt, check)
    diff = float(np.abs(got - want).max())
    if diff > TOLERANCE:
        raise RuntimeError(f"exported {fmt} generator {out} differs from the original by {diff:.3g} "
                           f"(tolerance {TOLERANCE})")
    return diff


@cli_main()  # SampleError, CheckpointError, ...: one error line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distgan.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--format", required=True, choices=FORMATS, help="export format")
    p.add_argument("--out", required=True,
                   help="output file (.pt for TorchScript, .onnx for ONNX, .safetensors for safetensors)")
    p.add_argument("--checkpoint", default="latest", help="latest, best or a step number (default latest)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="export the EMA generator (default: when the checkpoint has one)")
    args = p.parse_args(argv)
    diff = export(args.run, args.format, args.out, args.checkpoint, args.ema)
    print(f"wrote {args.format} generator to {args.out} (checked against the original: max abs diff {diff:.2g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
