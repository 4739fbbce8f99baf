"""What a condition ``y`` is and how it is encoded for G and D.

A :class:`LabelSpace` is either ``classes`` (K class labels) or ``attrs`` (A
binary attributes, Bordon et al.). Every conditioning mode reads ``y`` through it:

- ``vector(y)``: the float vector that label channels / the label branch see:
  one-hot (or weighted / multi-class) class vectors; for attributes either
  ``onehot`` (two channels per attribute, [not a, a], Bordon et al.'s final choice)
  or ``number`` (one channel: the combination index (i+1)/2^A, the single-number
  encoding Bordon et al. tried and found weaker).
- ``categories(y)``: what categorical layers (embeddings, conditional BN,
  projection, AC head) index: the class, or the combination of attributes.
  For attributes, combination i has attribute j set when bit (A-1-j) of i is 1,
  so with [Male, Black_Hair] the order is female/non-black, female/black,
  male/non-black, male/black (Bordon et al.'s figure rows).

``y`` forms: long (B,) category indices, float (B, K) class weights, or float
(B, A) attribute values in [0, 1] (soft values mix the combinations).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def _is_index(y: torch.Tensor) -> bool:
    return y.dtype in (torch.long, torch.int32, torch.int64)


@dataclass(frozen=True)
class LabelSpace:
    kind: str  # "none" | "classes" | "attrs"
    size: int = 0  # K classes or A attributes
    encoding: str = "onehot"  # attrs only: "onehot" | "number"

    @property
    def num_categories(self) -> int:
        """Classes, or 2^A attribute combinations."""
        return 2 ** self.size if self.kind == "attrs" else self.size

    @property
    def vector_dim(self) -> int:
        if self.kind == "attrs":
            return 1 if self.encoding == "number" else 2 * self.size
        return self.size

    def attrs(self, y: torch.Tensor) -> torch.Tensor:
        """(B, A) float attribute values (a long y is a combination index)."""
        if not _is_index(y):
            return y.float()
        bits = 2 ** torch.arange(self.size - 1, -1, -1, device=y.device)
        return ((y[:, None] & bits) > 0).float()

    def vector(self, y: torch.Tensor) -> torch.Tensor:
        """Float (B, vector_dim) conditioning vector."""
        if self.kind == "classes":
            return F.one_hot(y, self.size).float() if _is_index(y) else y.float()
        a = self.attrs(y)
        if self.encoding == "number":
            w = 2.0 ** torch.arange(self.size - 1, -1, -1, device=a.device)
            return ((a * w).sum(1, keepdim=True) + 1.0) / self.num_categories
        return torch.stack([1.0 - a, a], 2).flatten(1)

    def categories(self, y: torch.Tensor) -> torch.Tensor:
        """Long (B,) category indices, or float (B, K) category weights for soft labels."""
        if self.kind == "classes" or _is_index(y):
            return y
        a = self.attrs(y)
        combos = self.attrs(torch.arange(self.num_categories, device=a.device))  # (K, A)
        # P(combination k) = prod_j a_j^bit (1 - a_j)^(1 - bit): one-hot for 0/1 attributes
        p = a[:, None, :] * combos[None] + (1 - a[:, None, :]) * (1 - combos[None])
        return p.prod(2)

    def index(self, y: torch.Tensor) -> torch.Tensor:
        """Long (B,) hard category (argmax for soft labels)."""
        c = self.categories(y)
        return c if _is_index(c) else c.argmax(1)


def embed(emb: nn.Embedding, cats: torch.Tensor) -> torch.Tensor:
    """Embedding lookup for indices, weighted mix of rows for category weights."""
    return emb(cats) if _is_index(cats) else cats.to(emb.weight.dtype) @ emb.weight


def need(y: torch.Tensor | None) -> torch.Tensor:
    if y is None:
        raise ValueError("this model is conditional: pass labels or attributes y")
    return y
