"""``train.reuse_fakes``: the G phase backpropagates the D phase's fakes (one G forward per step).

- with the same noise in both phases the reuse path equals the default path (two G
  forwards) in float64, so it changes cost, not what is learned;
- on 2 gloo ranks with DDP it equals one process with the double batch (gradients
  reduced once, through the graph built in the D phase);
- the trainer with 2 real ranks, synced BN and spectral norm keeps its replicas
  bitwise equal after every step (``train.check_replicas_every=1``);
- combinations that would forward G more than once per backward are refused.
"""
from __future__ import annotations

import pytest
from mp import run_ranks, run_trainer

STEPS, B = 3, 4


def _train(wrap, chunk: slice, reuse: bool, same_noise: bool):
    """STEPS steps of the real D and G phases on one chunk of a fixed float64 data/noise stream;
    returns all weights of G and D flattened."""
    import torch

    from distgan.config import ModelConfig
    from distgan.models import DataInfo, build_models
    from distgan.train import objectives
    from distgan.train.engine import gan_models
    from distgan.train.objectives import LossSettings, d_loss_fn, g_loss_fn
    from distgan.train.phases import Phase, run_phase
    from distgan.train.precision import Precision
    from distgan.train.schedule import make_scheduler

    mc = ModelConfig(arch="dcgan", cond="none", norm="none", z_dim=4, width=4)
    info = DataInfo(channels=1, resolution=8)
    gen = torch.Generator().manual_seed(5)
    reals = torch.rand(STEPS, 2 * B, 1, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1
    noise = torch.randn(STEPS, 2, 2 * B, 4, generator=gen, dtype=torch.float64)
    prec = Precision("fp32", torch.device("cpu"))
    torch.manual_seed(0)
    G, D = build_models(mc, info)
    G, D = G.double(), D.double()
    G_p, D_p = wrap(G), wrap(D)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-2, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-2, betas=(0.5, 0.999))
    phases = [Phase(name="D", model=D_p, opt=opt_d, sched=make_scheduler(opt_d, STEPS, "constant", 1e-2, 0),
                    scaler=prec.make_scaler(), loss_fn=d_loss_fn, others=[] if reuse else [G_p]),
              Phase(name="G", model=G_p, opt=opt_g, sched=make_scheduler(opt_g, STEPS, "constant", 1e-2, 0),
                    scaler=prec.make_scaler(), loss_fn=g_loss_fn, others=[D_p], new_batch=False)]
    m = gan_models(G_p, D_p, G, D, mc, info)
    settings = LossSettings(reuse_fakes=reuse)
    for s in range(STEPS):
        batch = {"real": reals[s, chunk]}
        for pi, ph in enumerate(phases):
            z = noise[s, 0 if same_noise else pi, chunk]
            objectives.sample_latent = lambda n, m_, dev, y=None, z=z: (z, None)
            run_phase(ph, m, [batch], settings, prec, s)
        assert objectives.FAKES_KEY not in batch  # the G phase consumed (and released) the fakes
    return torch.cat([p.detach().flatten() for p in list(G.parameters()) + list(D.parameters())])


def reuse_rank() -> dict:
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel as DDP

    tdist.init_process_group("gloo")
    me = tdist.get_rank()
    big_reuse = _train(lambda m: m, slice(0, 2 * B), reuse=True, same_noise=False)
    big_twice = _train(lambda m: m, slice(0, 2 * B), reuse=False, same_noise=True)
    big_default = _train(lambda m: m, slice(0, 2 * B), reuse=False, same_noise=False)
    ddp_reuse = _train(DDP, slice(me * B, (me + 1) * B), reuse=True, same_noise=False)
    # both ranks past their last collective before either tears its group down: a rank whose peer
    # closed the connection first was seen to abort in gloo's teardown ("terminate called ...")
    tdist.barrier()
    tdist.destroy_process_group()
    return {"reuse_vs_same_noise": float((big_reuse - big_twice).abs().max()),
            "ddp_vs_big": float((big_reuse - ddp_reuse).abs().max()),
            "reuse_vs_default": float((big_reuse - big_default).abs().max())}


@pytest.mark.multiproc
@pytest.mark.timeout(200)
def test_reuse_fakes_equals_two_forwards_and_ddp_equals_big_batch():
    for res in run_ranks(__file__, "reuse_rank", world=2, timeout=180):
        assert res["reuse_vs_same_noise"] < 1e-12, res  # same z in both phases: same updates
        assert res["ddp_vs_big"] < 1e-9, res  # 2 ranks x B == 1 process x 2B
        assert res["reuse_vs_default"] > 1e-4, res  # fresh G-phase noise really is a different run


@pytest.mark.multiproc
@pytest.mark.timeout(300)
def test_trainer_with_reuse_fakes_keeps_replicas_equal(mnist_shards, tmp_path):
    out = run_trainer(2, tmp_path / "run", [f"data.shards={mnist_shards}", "train.reuse_fakes=true",
                                            "train.check_replicas_every=1", "model.norm=sync_batch",
                                            "model.spectral_norm=true", "train.steps=6", "log.every=2",
                                            "log.progress=false"], timeout=280)
    assert all(o["completed"] and o["step"] == 6 and o["world_size"] == 2 for o in out)


@pytest.mark.parametrize("override", ["train.n_critic=2", "train.grad_accum=2"])
def test_reuse_fakes_refuses_more_than_one_g_forward_per_backward(debug_cfg, tmp_path, override):
    from distgan.train import train

    with pytest.raises(ValueError, match="train.reuse_fakes=true needs train.n_critic=1"):
        train(debug_cfg("train.reuse_fakes=true", override, "train.steps=2"), tmp_path / "run")
