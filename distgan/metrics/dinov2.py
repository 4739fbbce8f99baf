"""The feature network of FD-DINOv2: DINOv2 ViT-L/14 (from timm), the CLS token of 224x224 images.

Stein et al. ("Exposing flaws of generative model evaluation metrics and their
unfair treatment of diffusion models", NeurIPS 2023) found that the Frechet
distance on DINOv2 features follows human judgement where the Inception's does
not; EDM2 and torch-fidelity report it beside FID. The protocol is theirs
(dgm-eval): images to RGB, resized to 224x224 with PIL's bicubic filter, scaled
to [0, 1], normalised with the ImageNet mean and std; the feature is the
normalised CLS token (1024-d for ViT-L).

Its settings (:class:`Dinov2Settings`) live under ``metrics.features.dinov2``.
Weights are never downloaded: ``metrics.features.dinov2.weights`` (command line
``--dinov2-weights``) names a local file, either the timm model's
``model.safetensors`` (Hugging Face hub ``timm/vit_large_patch14_dinov2.lvd142m``)
or DINOv2's own ``dinov2_vitl14_pretrain.pth``; its sha256 goes into every
record. ``metrics.features.dinov2.arch`` (``--dinov2-arch``) is the timm
architecture it is loaded into.

    net = Dinov2Features(build_network("vit_large_patch14_dinov2.lvd142m", read_state_dict(path), str(path)))
    feats = net(images)          # uint8 or [-1, 1] NCHW, 1 or 3 channels, any size -> (B, 1024)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from distgan.config import option
from distgan.errors import UserError, load_failure
from distgan.extras import require
from distgan.metrics.protocol import Extractor, ExtractorContext, file_sha256
from distgan.pixels import pixel_values

DEFAULT_ARCH = "vit_large_patch14_dinov2.lvd142m"
INPUT_SIZE = 224
MEAN = (0.485, 0.456, 0.406)  # ImageNet, as DINOv2 was trained
STD = (0.229, 0.224, 0.225)
RESIZE_POLICY = "uint8 -> rgb -> pil-bicubic 224x224 -> /255 -> imagenet mean/std"
WEIGHTS_KEY, ARCH_KEY = "metrics.features.dinov2.weights", "metrics.features.dinov2.arch"
WEIGHTS_FLAG = "--dinov2-weights"


@dataclass
class Dinov2Settings:
    """``metrics.features.dinov2``: where the weights are and which timm model they load into."""

    weights: str = option("", "local DINOv2 weights file (.safetensors or .pth), never downloaded; sha256 recorded")
    arch: str = option(DEFAULT_ARCH, "timm architecture the weights load into")


class Dinov2Error(UserError, ValueError):
    """DINOv2 weights are missing or do not load into ``metrics.features.dinov2.arch``; the message names the
    file."""


def _where_weights_come_from(arch: str) -> str:
    return (f"nothing is downloaded at run time: on a machine with internet access fetch the timm model '{arch}' "
            f"(Hugging Face hub timm/{arch}, file model.safetensors) and copy the file here")


def weights_path(weights: str, arch: str = DEFAULT_ARCH) -> Path:
    """The configured weights file, or one error line saying which key to set and where the file comes from."""
    if not weights:
        raise Dinov2Error(f"the DINOv2 features (fd_dinov2) need a local weights file: set {WEIGHTS_KEY}=PATH "
                          f"(command line: {WEIGHTS_FLAG} PATH); {_where_weights_come_from(arch)}")
    p = Path(weights).expanduser()
    if not p.is_file():
        raise Dinov2Error(f"DINOv2 weights '{p}' ({WEIGHTS_KEY} / {WEIGHTS_FLAG}) do not exist; "
                          f"{_where_weights_come_from(arch)}")
    return p


def check_weights_set(settings: Dinov2Settings) -> None:
    """Refuse a config that asks for DINOv2 features without naming a weights file.

    Only the key is checked: a config is validated where a job is launched, and
    the file may exist only where the job runs (its absence is reported there).
    """
    if not settings.weights:
        weights_path("", settings.arch)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch state dict (read weights-only: no code in it runs)."""
    try:
        sd = load_file(str(path)) if path.suffix == ".safetensors" else \
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: one line naming it
        raise Dinov2Error(f"DINOv2 weights '{path}' ({WEIGHTS_KEY}) are not a readable safetensors or torch "
                          f"state-dict file ({load_failure(e)})") from None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise Dinov2Error(f"DINOv2 weights '{path}' ({WEIGHTS_KEY}) hold no state dict (a mapping of names to "
                          "tensors)")
    sd = dict(sd)
    sd.pop("mask_token", None)  # DINOv2's own checkpoints keep their masked-modelling token, unused here
    return sd


def resample_position_embedding(pos: torch.Tensor, grid: int, prefix: int) -> torch.Tensor:
    """DINOv2's own interpolation of its square position-embedding grid to ``grid`` x ``grid``.

    DINOv2 stores embeddings for 518x518 inputs (a 37x37 grid) and interpolates
    them at every forward pass: bicubic, scale factor (grid + 0.1) / 37, no
    antialiasing. Done here once at load time, the same way, because timm's own
    loader resamples with antialiasing, which would shift every feature slightly.
    """
    head, patches = pos[:, :prefix], pos[:, prefix:]
    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1]:
        raise Dinov2Error(f"position embedding of {patches.shape[1]} patches is not a square grid")
    if side == grid:
        return pos
    dim = patches.shape[2]
    scale = (grid + 0.1) / side
    x = patches.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    x = F.interpolate(x, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    x = x.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos.dtype)
    return torch.cat([head, x], dim=1)


def build_network(arch: str, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The timm ``arch`` for 224x224 inputs, without a classifier head, holding ``state``; eval mode, frozen."""
    timm = require("timm", "fid", "the DINOv2 features of fd_dinov2")
    try:
        net = timm.create_model(arch, pretrained=False, img_size=INPUT_SIZE, num_classes=0)
    except RuntimeError as e:  # timm: "Unknown model (...)"
        raise Dinov2Error(f"{ARCH_KEY}='{arch}' is not a timm model ({e}); the FD-DINOv2 "
                          f"network is {DEFAULT_ARCH}") from None
    state = dict(state)
    if "pos_embed" in state and state["pos_embed"].shape != net.pos_embed.shape:
        prefix = 0 if getattr(net, "no_embed_class", False) else net.num_prefix_tokens
        state["pos_embed"] = resample_position_embedding(state["pos_embed"], net.patch_embed.grid_size[0], prefix)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        why = " ".join(str(e).split())[:300]
        raise Dinov2Error(f"DINOv2 weights '{source}' ({WEIGHTS_KEY}) do not fit timm model '{arch}' "
                          f"({ARCH_KEY}): {why}") from None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [-1, 1] NCHW images (1 or 3 channels) -> (B, 3, 224, 224) normalised, as dgm-eval feeds DINOv2.

    The resize is PIL's bicubic on uint8 pixels (what torchvision's Resize does to
    a PIL image), one image at a time; a grey image is resized once and then
    repeated to RGB, the same pixels as resizing three equal channels.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"DINOv2 expects NCHW images with 1 or 3 channels, got {tuple(images.shape)}")
    pixels = pixel_values(images).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    size = (INPUT_SIZE, INPUT_SIZE)
    resized = [np.asarray(Image.fromarray(p[..., 0] if p.shape[2] == 1 else p).resize(size, Image.Resampling.BICUBIC))
               for p in pixels]
    x = torch.from_numpy(np.stack(resized))
    x = x[..., None].expand(-1, -1, -1, 3) if x.ndim == 3 else x
    x = x.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


class Dinov2Features(nn.Module):
    """Images (uint8 or [-1, 1], 1 or 3 channels, any size) -> (B, D) CLS features of a DINOv2 ViT."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.dim = int(net.num_features)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.net.parameters()).device
        return self.net(preprocess(images).to(device)).float()  # num_classes=0: the normalised CLS token


def dinov2_extractor(ctx: ExtractorContext) -> Extractor:
    """DINOv2 of ``ctx.settings`` (:class:`Dinov2Settings`) on ``ctx.device``, for fd_dinov2."""
    arch = ctx.settings.arch
    path = weights_path(ctx.settings.weights, arch)
    sha256 = file_sha256(path)
    net = Dinov2Features(build_network(arch, read_state_dict(path), str(path))).to(ctx.device)
    timm = require("timm", "fid", "the DINOv2 features of fd_dinov2")
    return Extractor(f"{arch}_cls{INPUT_SIZE}", net.dim, lambda x: net(x).cpu(), sha256, RESIZE_POLICY,
                     {"weights": str(path), "timm_model": arch, "timm_version": timm.__version__})
