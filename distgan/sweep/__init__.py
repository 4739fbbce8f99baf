"""Ablation sweeps: a grid of runs as one Slurm job array (or a local pool), then a table and a plot.

    python -m distgan.sweep configs/sweeps/debug_grid.yaml --dry-run
    python -m distgan.sweep configs/sweeps/debug_grid.yaml --cluster slurm --wait
    python -m distgan.sweep collect runs/sweeps/debug_grid
"""
from distgan.sweep.collect import collect
from distgan.sweep.spec import Sweep, SweepError, load_sweep

__all__ = ["Sweep", "SweepError", "collect", "load_sweep"]
