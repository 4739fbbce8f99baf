"""How a condition (class label or attributes) enters G and D.

A :class:`GCond` / :class:`DCond` owns every conditioning-specific piece, so each
G and D family stays one class: extra latent dims, label maps, a label branch,
conditional norms, extra D heads. ``model.cond`` picks a (G side, D side) pair;
``model.cond_g`` / ``model.cond_d`` override either side
(:func:`distgan.modelspec.resolve_modes`):

    cond          G side                         D side
    none          none                           none
    channels      one-hot concat to z (De Matteis) label maps concat to image
    embed_concat  embedding concat to z (002)    embedding maps / concat to flat image
    embed_mul     z * embedding (Lecture 9a)       embedding maps
    projection    channels                       projection head (Viel)
    acgan         channels                       class head (Viel; Lecture 9a)
    cbn           categorical BN only (003)      label maps
    multilabel    label branch (003)             attribute maps (003)

``model.cond_norm`` adds categorical BN to any G side (Bordon et al. final).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from distgan.models.labels import LabelSpace, embed, need
from distgan.models.norms import CategoricalNorm, make_norm


@dataclass
class DOut:
    """What a discriminator returns: adversarial logits, features, optional class logits."""
    logits: torch.Tensor  # (B,)
    features: torch.Tensor  # (B, F) flattened last hidden features (feature matching, heads)
    class_logits: torch.Tensor | None = None  # (B, num_classes) for AC-GAN
    patch_logits: torch.Tensor | None = None  # (B, P) PatchGAN: the loss averages over patches


class GCond(nn.Module):
    """The G side: latent input, optional label branch, (categorical) norms."""

    def __init__(self, mode: str, space: LabelSpace, z_dim: int, embed_dim: int = 10, weight: float = 1.0,
                 cond_norm: bool = False):
        super().__init__()
        if (mode != "none" or cond_norm) and space.kind == "none":
            raise ValueError(f"G conditioning '{mode}' needs labelled data, but the shards have no "
                             "classes (use model.cond=none)")
        self.mode, self.space, self.weight, self.cond_norm = mode, space, weight, cond_norm
        if mode == "embed_concat":
            self.embed = nn.Embedding(space.num_categories, embed_dim)
        elif mode == "embed_mul":
            self.embed = MulEmbedding(space.num_categories, z_dim)
        self.extra = {"channels": space.vector_dim, "embed_concat": embed_dim}.get(mode, 0)
        self.branch: nn.Module | None = None

    def input_dim(self, z_dim: int) -> int:
        return z_dim + self.extra

    def input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.mode == "channels":
            return torch.cat([z, self.weight * self.space.vector(need(y)).to(z.dtype)], 1)
        if self.mode == "embed_concat":
            return torch.cat([z, embed(self.embed, self.space.categories(need(y))).to(z.dtype)], 1)
        if self.mode == "embed_mul":
            return z * embed(self.embed, self.space.categories(need(y))).to(z.dtype)
        return z

    # ---- label branch (Bordon et al.): label vector -> transposed convs -> maps merged with the noise branch
    def branch_channels(self, ch: int) -> int:
        """Channels of the first feature map that the label branch supplies (half of them)."""
        return ch // 2 if self.mode == "branch" else 0

    def build_branch(self, out_ch: int, size: int, norm: str, depth: int, act: Callable[[], nn.Module]) -> None:
        layers: list[nn.Module] = [nn.ConvTranspose2d(self.space.vector_dim, out_ch, size, 1, 0, bias=False),
                                   make_norm(norm, out_ch), act()]
        for _ in range(depth):  # Bordon et al.: extra label deconvolutions learn the labels sooner
            layers += [nn.ConvTranspose2d(out_ch, out_ch, 3, 1, 1, bias=False), make_norm(norm, out_ch), act()]
        self.branch = nn.Sequential(*layers)

    def branch_maps(self, y: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        v = self.space.vector(need(y)).to(dtype)
        return self.branch(v[:, :, None, None])

    # ---- norms: plain, or categorical over classes / attribute combinations
    def norm(self, name: str, channels: int) -> nn.Module:
        if self.cond_norm:
            return CategoricalNorm(name, channels, self.space.num_categories)
        return make_norm(name, channels)

    def normed(self, norm: nn.Module, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if isinstance(norm, CategoricalNorm):
            return norm(h, self.space.categories(need(y)))
        return norm(h)


class MulEmbedding(nn.Embedding):
    """Label embedding that multiplies the noise (Lecture 9a AC-GAN).

    Initialised N(0, 1) under every scheme: z * e(y) then keeps z's unit scale and
    each class starts as a distinct random re-weighting of z (an init near 1 would
    make all classes look alike; one near 0 would shrink the input to nothing).
    """

    def reset_for_init(self, std: float) -> None:
        nn.init.normal_(self.weight, 0.0, 1.0)


class DCond(nn.Module):
    """The D side: extra input channels (or flat dims), projection and class heads."""

    def __init__(self, mode: str, space: LabelSpace, embed_dim: int = 10, weight: float = 1.0,
                 proj_features: int = 0, image_channels: int = 0):
        super().__init__()
        if mode not in ("none", "image") and space.kind == "none":
            raise ValueError(f"D conditioning '{mode}' needs labelled data, but the shards have no "
                             "classes (use model.cond=none)")
        if mode == "acgan" and space.kind != "classes":
            raise ValueError("model.cond=acgan needs class labels; multi-label attributes use model.cond=multilabel")
        self.mode, self.space, self.weight, self.proj_features = mode, space, weight, proj_features
        if mode == "embed_concat":
            self.embed = nn.Embedding(space.num_categories, embed_dim)
        self.extra = {"channels": space.vector_dim, "embed_concat": embed_dim, "image": image_channels}.get(mode, 0)

    def input_extra(self) -> int:
        return self.extra

    def input(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Append the condition: as constant maps to an image, as dims to a flat (MLP) input."""
        if self.mode == "image":
            return torch.cat([x, need(y).to(x.dtype)], 1)
        if self.mode == "channels":
            v = self.weight * self.space.vector(need(y)).to(x.dtype)
        elif self.mode == "embed_concat":
            v = embed(self.embed, self.space.categories(need(y))).to(x.dtype)
        else:
            return x
        if x.dim() == 2:
            return torch.cat([x, v], 1)
        return torch.cat([x, v[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], 1)

    def build_heads(self, feat_ch: int, flat_dim: int, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """``feat_ch``: channels of the last hidden map; ``flat_dim``: its flattened size."""
        if self.mode == "projection":
            dim = self.proj_features or feat_ch
            self.proj_in = wrap(nn.Linear(feat_ch, dim)) if self.proj_features else nn.Identity()
            self.proj_embed = nn.Embedding(self.space.num_categories, dim)
        elif self.mode == "acgan":
            self.class_head = wrap(nn.Linear(flat_dim, self.space.num_categories))

    def output(self, h: torch.Tensor, logits: torch.Tensor, y: torch.Tensor | None) -> DOut:
        feats = h.flatten(1)
        if self.mode == "projection":
            # Miyato & Koyama: logit += <embed(y), phi(x)>, phi = sum-pooled last features
            phi = self.proj_in(h.sum((2, 3)) if h.dim() == 4 else h)
            logits = logits + (embed(self.proj_embed, self.space.categories(need(y))) * phi).sum(1)
        class_logits = self.class_head(feats) if self.mode == "acgan" else None
        return DOut(logits=logits, features=feats, class_logits=class_logits)
