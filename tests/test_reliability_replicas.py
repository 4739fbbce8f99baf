"""The trainer's replica check sees buffer desyncs where they happen (2 real ranks, gloo).

The buffers are compared at the end of a step BEFORE the broadcast that makes
plain batch-norm statistics equal again; a broadcast first would copy rank 0's
spectral-norm vectors over rank 1's and hide the desync.
"""
from __future__ import annotations

import pytest
from mp import ROOT, run_ranks

pytestmark = pytest.mark.multiproc


def desync_rank(shards: str, run_dir: str) -> str:
    """Train 2 ranks; after the G phase of step 2 (D runs unwrapped there) rank 1's D gets a
    different spectral-norm vector. Returns the replica check's error ('' when none)."""
    import torch.distributed as tdist

    from distgan.config import load_config
    from distgan.train import loop, train

    real = loop.run_phase

    def run_phase(phase, models, micro, settings, prec, step, *rest):
        out = real(phase, models, micro, settings, prec, step, *rest)
        if phase.name == "G" and step == 1 and tdist.get_rank() == 1:
            # spectral norm's power-iteration vector u (torch.nn.utils.parametrizations naming)
            u = next(b for k, b in models.D_raw.named_buffers() if k.endswith("weight.0._u"))
            u.add_(1e-6)
        return out

    loop.run_phase = run_phase
    cfg = load_config(ROOT / "configs" / "debug.yaml",
                      [f"data.shards={shards}", "log.progress=false", "train.steps=4", "train.ckpt_every=4",
                       "model.spectral_norm=true", "model.norm_d=batch", "train.check_replicas_every=1",
                       "dist.expect_world_size=2"])
    try:
        train(cfg, run_dir)
    except RuntimeError as e:
        return str(e)
    return ""


@pytest.mark.timeout(300)
def test_spectral_norm_desync_on_one_rank_is_caught_at_its_step(mnist_shards, tmp_path):
    errors = run_ranks(__file__, "desync_rank", world=2, args=[str(mnist_shards), str(tmp_path / "run")],
                       timeout=280)
    for err in errors:  # every rank stops, naming the buffer and the rank
        assert "replicas differ: D." in err and "weight.0._u on rank 1 != rank 0" in err, err
