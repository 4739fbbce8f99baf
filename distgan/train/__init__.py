"""The two-optimizer GAN trainer: ``train(cfg, run_dir)`` (re-running resumes)."""
from distgan.train.loop import train

__all__ = ["train"]
