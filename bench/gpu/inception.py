"""Section 6: the FID Inception's features on the device against the CPU's, on a fixed batch.

Every FID the GPU run reports rests on the device computing the same 2048-d
pool features as the CPU, where the network was checked against the reference
implementation. So one fixed batch (``Plan.compare_images`` 64x64 RGB images,
generated from a seed on the CPU: the same inputs on every machine) goes
through :class:`~distgan.metrics.inception.InceptionFeatures` with the PyTorch
backend on the CPU and on the device, TF32 switched off meanwhile (the metric
is fp32; training turns TF32 on in this process), and the largest absolute
feature difference must stay below :data:`DEVICE_TOL`.

On the CPU (the dry run) the "device" is the CPU, so that comparison compares
nothing and is reported as n/a; instead the ONNX Runtime backend (another
runtime and other kernels, what CPU evaluations use by default) is compared
with PyTorch's features on the same batch, within :data:`ORT_TOL`. On a GPU
that CPU-only comparison is skipped: it costs a one-time ONNX export there and
says nothing about the device.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from bench.gpu import Plan, Report
from distgan.metrics import inception_ort

# fp32 on both sides, but cuDNN picks other convolution algorithms (implicit GEMM,
# Winograd, FFT) and summation orders than oneDNN over the network's 94 convolutions,
# and grid_sample's resize differs in the last bits. Measured on the CPU on this batch
# (pool features: mean 0.2, max 3.8): the fp32 features are 7e-6 from a float64 pass,
# so two fp32 orders differ by ~1e-5; rounding every conv's inputs and weights to TF32
# moves them by 8e-3, and a half-pixel resize shift by 0.5. 1e-3 absolute leaves 100x
# room for cuDNN's algorithms and still catches a TF32 leak or a wrong resize/layout.
DEVICE_TOL = 1e-3
# what distgan itself requires of an ONNX Runtime session before using it (measured: 4e-6 on this batch)
ORT_TOL = inception_ort.PROBE_TOLERANCE


def fixed_batch(n: int, res: int = 64) -> torch.Tensor:
    """``n`` uint8 RGB images (N, 3, res, res): stripes of per-image frequency plus seeded
    noise, so the features are those of structured images, not of pure noise; made on the
    CPU from a seed, so every machine feeds the network the same bytes."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(res, dtype=torch.float32), torch.arange(res, dtype=torch.float32),
                            indexing="ij")
    out = []
    for i in range(n):
        base = (torch.sin(xx / (3 + i % 7)) + torch.cos(yy / (2 + i % 5))) * 60 + 120
        noise = torch.randn(3, res, res, generator=gen) * 20
        out.append((base + noise).clamp(0, 255).round().to(torch.uint8))
    return torch.stack(out)


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """fp32 matmuls and convolutions on CUDA for the duration; the previous settings after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference; inf when the shapes differ or a value is not finite."""
    if a.shape != b.shape:
        return math.inf
    d = float((a.double() - b.double()).abs().max())
    return d if math.isfinite(d) else math.inf


def run(plan: Plan, rep: Report, tol: float | None = None) -> None:
    """The device-vs-CPU comparison (n/a on the CPU) and, in the dry run, ONNX Runtime vs PyTorch.

    ``tol`` overrides both tolerances (``--inception-tol``).
    """
    from distgan.metrics.inception import InceptionFeatures

    x = fixed_batch(plan.compare_images)
    net = InceptionFeatures(backend="torch").eval()
    cpu = net(x)
    size = f"{plan.compare_images} images 64x64 -> 299"
    scale = f"features max |f| {float(cpu.abs().max()):.3g}"
    case = f"Inception features, device == CPU (fp32, TF32 off), {size}"
    if plan.device == "cpu":
        rep.na(case, "the device is the CPU: nothing to compare (ONNX Runtime vs PyTorch below)")
    else:
        limit = DEVICE_TOL if tol is None else tol
        with tf32_off():
            dev = net.to(plan.device)(x.to(plan.device)).cpu()
        diff = _max_diff(dev, cpu)
        rep.check(case, diff < limit, diff, "max abs diff", f"tolerance {limit:g}; {scale}")
    ort_case = f"Inception features, ONNX Runtime == PyTorch on the CPU, {size}"
    if plan.device != "cpu":
        rep.skip(ort_case, "a CPU-only comparison: the dry run makes it")
    elif not inception_ort.available():
        rep.skip(ort_case, "onnxruntime / onnxscript are not installed")
    else:
        limit = ORT_TOL if tol is None else tol
        diff = _max_diff(InceptionFeatures(backend="onnxruntime")(x), cpu)
        rep.check(ort_case, diff < limit, diff, "max abs diff", f"tolerance {limit:g}; {scale}")
