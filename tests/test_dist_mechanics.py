"""Distributed mechanics with 4 real gloo processes (one launch shared by every assertion).

- synced BN on R=4 (world) and R=2 (a sub-group) equals single-process BN over the
  R*b batch in float64: outputs, input gradients, parameter gradients, running stats,
  for a D-like step (real and fake batches in separate forwards, one summed loss);
- the DDP D and G phases on 2 ranks x batch b equal 1 process x batch 2b (BN-free models);
- check_replicas names the first differing tensor; plain-BN running stats may differ.
"""
from __future__ import annotations

import re

import pytest
from mp import run_ranks

pytestmark = pytest.mark.multiproc

B, C = 3, 5  # per-rank batch, channels


def _sync_bn_case(group, ranks: list[int]) -> dict:
    """Max abs errors of synced BN on ``ranks`` against the big-batch float64 reference."""
    import torch
    import torch.distributed as tdist
    import torch.nn as nn

    from distgan.syncbn import SyncBatchNorm2d

    R = len(ranks)
    me = ranks.index(tdist.get_rank())
    gen = torch.Generator().manual_seed(7 + R)
    real = torch.randn(R * B, C, 4, 4, generator=gen, dtype=torch.float64) * 3 + 2
    fake = torch.randn(R * B, C, 4, 4, generator=gen, dtype=torch.float64) * 0.5 - 1
    wr = torch.randn(R * B, C, 4, 4, generator=gen, dtype=torch.float64)
    wf = torch.randn(R * B, C, 4, 4, generator=gen, dtype=torch.float64)

    ref = nn.BatchNorm2d(C).double()
    nn.init.normal_(ref.weight, 1.0, 0.3, generator=gen)
    nn.init.normal_(ref.bias, 0.0, 0.3, generator=gen)
    mine = SyncBatchNorm2d(C, process_group=group).double()
    mine.load_state_dict(ref.state_dict())

    errs: dict[str, float] = {}
    for it in range(2):  # the second pass also exercises updated running stats
        xr, xf = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
        yr, yf = ref(xr), ref(xf)
        ((yr * wr).sum() + (yf * wf).sum()).backward()

        sl = slice(me * B, (me + 1) * B)
        mr, mf = real[sl].clone().requires_grad_(True), fake[sl].clone().requires_grad_(True)
        mine.zero_grad()
        zr, zf = mine(mr), mine(mf)  # two forwards: statistics per batch, like the D phase
        ((zr * wr[sl]).sum() + (zf * wf[sl]).sum()).backward()  # one backward
        pg = torch.cat([mine.weight.grad, mine.bias.grad])
        tdist.all_reduce(pg, group=group)  # each rank holds its share of the parameter gradient
        cmp = {"out": ((zr, yr[sl]), (zf, yf[sl])), "grad_x": ((mr.grad, xr.grad[sl]), (mf.grad, xf.grad[sl])),
               "grad_param": ((pg, torch.cat([ref.weight.grad, ref.bias.grad])),),
               "running": ((mine.running_mean, ref.running_mean), (mine.running_var, ref.running_var))}
        for k, pairs in cmp.items():
            errs[k] = max([errs.get(k, 0.0)] + [float((a - b).detach().abs().max()) for a, b in pairs])
        ref.zero_grad()
        real, fake = fake * 2 + 1, real * 0.5 - 3
    # eval mode: running statistics, no communication
    with torch.no_grad():
        errs["eval"] = float((mine.eval()(real[:B]) - ref.eval()(real[:B])).abs().max())
    return errs


def _ddp_vs_big_batch(group, pair: list[int], steps: int = 3, b: int = 4) -> dict:
    """2 ranks x batch b through the real D/G phases (DDP) vs 1 process x batch 2b; also 2 ranks x
    2 accumulated micro-batches of b/2. Returns weight differences and DDP all-reduce counts."""
    import torch
    import torch.distributed as tdist
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    from distgan.config import ModelConfig
    from distgan.models import DataInfo, build_models
    from distgan.train import objectives
    from distgan.train.engine import gan_models
    from distgan.train.objectives import LossSettings, d_loss_fn, g_loss_fn
    from distgan.train.phases import Phase, run_phase
    from distgan.train.precision import Precision
    from distgan.train.schedule import make_scheduler

    torch.set_default_dtype(torch.float64)
    mc = ModelConfig(arch="dcgan", cond="none", norm="none", z_dim=4, width=4)
    info = DataInfo(channels=1, resolution=8)
    gen = torch.Generator().manual_seed(11)
    reals = torch.rand(steps, 2 * b, 1, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(steps, 2, 2 * b, 4, generator=gen)  # (step, phase, sample, z)
    prec = Precision("fp32", torch.device("cpu"))
    reduces = {"n": 0}

    def counting_hook(state, bucket):  # DDP's default all-reduce, counted
        reduces["n"] += 1
        return allreduce_hook(state, bucket)

    def ddp(m):
        w = DDP(m, process_group=group)
        w.register_comm_hook(group, counting_hook)
        return w

    def build(wrap, chunks: list[slice]):
        torch.manual_seed(0)
        G, D = build_models(mc, info)
        G_p, D_p = (wrap(G), wrap(D))
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-2, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-2, betas=(0.5, 0.999))
        phases = [Phase(name="D", model=D_p, opt=opt_d, sched=make_scheduler(opt_d, steps, "constant", 1e-2, 0),
                        scaler=prec.make_scaler(), loss_fn=d_loss_fn, others=[G_p]),
                  Phase(name="G", model=G_p, opt=opt_g, sched=make_scheduler(opt_g, steps, "constant", 1e-2, 0),
                        scaler=prec.make_scaler(), loss_fn=g_loss_fn, others=[D_p], new_batch=False)]
        m = gan_models(G_p, D_p, G, D, mc, info)
        for s in range(steps):
            for pi, ph in enumerate(phases):
                order = iter([noise[s, pi, c] for c in chunks])  # one noise slice per micro-batch, in order
                objectives.sample_latent = lambda n, m_, dev, y=None, order=order: (next(order), None)
                run_phase(ph, m, [{"real": reals[s, c]} for c in chunks], LossSettings(), prec, s)
        return torch.cat([p.detach().flatten() for p in list(G.parameters()) + list(D.parameters())])

    me = pair.index(tdist.get_rank())
    torch.manual_seed(0)
    init = torch.cat([p.detach().flatten() for m in build_models(mc, info) for p in m.parameters()])
    big = build(lambda m: m, [slice(0, 2 * b)])
    small = build(ddp, [slice(me * b, (me + 1) * b)])
    plain_reduces, reduces["n"] = reduces["n"], 0
    h = b // 2
    accum = build(ddp, [slice(me * b, me * b + h), slice(me * b + h, (me + 1) * b)])
    torch.set_default_dtype(torch.float32)
    return {"max_abs_diff": float((big - small).abs().max()), "accum_diff": float((big - accum).abs().max()),
            "moved": float((big - init).abs().max()), "reduces": plain_reduces, "reduces_accum": reduces["n"],
            "phase_steps": 2 * steps}


def _nonfinite_on_one_rank() -> dict:
    """A NaN loss on rank 3 only: every rank raises (or skips) together, nobody hangs."""
    import torch
    import torch.distributed as tdist
    import torch.nn as nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    from distgan.train.phases import NonFiniteLoss, Phase, run_phase
    from distgan.train.precision import Precision
    from distgan.train.schedule import make_scheduler

    torch.manual_seed(0)
    lin = nn.Linear(3, 1)
    model = DDP(lin)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    poison = {"on": True}

    def loss_fn(m, batch, s):
        loss = model(batch["real"]).pow(2).mean()
        return loss * float("nan") if poison["on"] and tdist.get_rank() == 3 else loss

    ph = Phase(name="D", model=model, opt=opt, sched=make_scheduler(opt, 5, "constant", 0.1, 0),
               scaler=torch.amp.GradScaler("cpu", enabled=False), loss_fn=loss_fn)
    prec, batch = Precision("fp32", torch.device("cpu")), {"real": torch.ones(2, 3)}
    res = {}
    try:
        run_phase(ph, None, batch, None, prec, step=7)
        res["raised"] = ""
    except NonFiniteLoss as e:
        res["raised"] = str(e)
    before = lin.weight.detach().clone()
    res["skipped"] = not run_phase(ph, None, batch, None, prec, step=7, skip_nonfinite=True)
    res["unchanged"] = bool(torch.equal(before, lin.weight))
    poison["on"] = False
    res["then_stepped"] = run_phase(ph, None, batch, None, prec, step=8) and not torch.equal(before, lin.weight)
    return res


def mechanics_rank() -> dict:
    import torch
    import torch.distributed as tdist
    import torch.nn as nn

    from distgan import dist

    tdist.init_process_group("gloo")
    rank = tdist.get_rank()
    pair = [0, 1] if rank < 2 else [2, 3]
    g01, g23 = tdist.new_group([0, 1]), tdist.new_group([2, 3])
    group = g01 if rank < 2 else g23
    out = {"bn4": _sync_bn_case(None, [0, 1, 2, 3]), "bn2": _sync_bn_case(group, pair),
           "ddp": _ddp_vs_big_batch(group, pair)}
    out["nonfinite"] = _nonfinite_on_one_rank()
    # replica check: equal models pass; plain-BN running stats may differ (each rank's own
    # batches); a perturbed spectral-norm vector on rank 3 is named on every rank
    torch.manual_seed(0)
    m = nn.Sequential(nn.utils.spectral_norm(nn.Conv2d(1, 2, 3)), nn.BatchNorm2d(2))
    dist.check_replicas(m, "M")
    if rank == 3:
        m[1].running_var[0] += 1e-3
    dist.check_replicas(m, "M")
    if rank == 3:
        m[0].weight_u[0] += 1e-7
    try:
        dist.check_replicas(m, "M")
        out["replica_error"] = ""
    except RuntimeError as e:
        out["replica_error"] = str(e)
    tdist.destroy_process_group()
    return out


@pytest.fixture(scope="module")
def results():
    return run_ranks(__file__, "mechanics_rank", world=4, timeout=240)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", ["bn4", "bn2"])
def test_sync_bn_equals_big_batch_bn_in_float64(results, case):
    for rank, res in enumerate(results):
        errs = res[case]
        if True:
            assert set(errs) == {"out", "grad_x", "grad_param", "running", "eval"}
            for k, v in errs.items():
                assert v < 1e-12, (rank, case, k, v)


@pytest.mark.timeout(300)
def test_ddp_two_ranks_match_one_rank_with_double_batch(results):
    for res in results:
        d = res["ddp"]
        assert d["moved"] > 1e-3  # the phases really trained
        assert d["max_abs_diff"] < 1e-9, d


@pytest.mark.timeout(300)
def test_grad_accumulation_matches_big_batch_and_skips_allreduce_on_micro_steps(results):
    for res in results:
        d = res["ddp"]
        assert d["accum_diff"] < 1e-9, d
        # tiny models: one gradient bucket, so one all-reduce per optimizer step with or without
        # accumulation (the first micro-step ran under no_sync)
        assert d["reduces"] == d["reduces_accum"] == d["phase_steps"], d


@pytest.mark.timeout(300)
def test_nonfinite_loss_on_one_rank_stops_or_skips_on_every_rank(results):
    for rank, res in enumerate(results):
        nf = res["nonfinite"]
        where = r"\(nan\) on this rank" if rank == 3 else r"on another rank \(this rank's: [0-9.]+\)"
        assert re.search(f"non-finite D loss {where} in phase D of step 8 \\(after 7 completed steps\\)",
                         nf["raised"]), nf["raised"]
        assert nf["skipped"] and nf["unchanged"] and nf["then_stepped"], nf


@pytest.mark.timeout(300)
def test_check_replicas_names_first_differing_tensor(results):
    for res in results:
        assert "M.0.weight_u on rank 3 != rank 0" in res["replica_error"]
