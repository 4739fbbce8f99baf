"""The two-optimizer GAN trainer: ``train(cfg, run_dir)`` (re-running resumes).

``distgan.train.train`` is imported lazily so that light users of the
subpackage (checkpoint readers, sample tools) do not pull in the whole loop.
"""
from __future__ import annotations

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from distgan.train.loop import train  # noqa: PLC0415 - PEP 562: light users never load the loop

        return train
    raise AttributeError(f"module 'distgan.train' has no attribute {name!r}")
