"""The phase objectives: batches with attributes / sources, fake labels, AC and pix2pix losses,
what each adversarial loss logs."""
import pytest
import torch

from distgan import losses
from distgan.config import Config
from distgan.models import DataInfo, build_models
from distgan.train import stats
from distgan.train.engine import gan_models
from distgan.train.objectives import (
    BatchPrep,
    d_loss_fn,
    g_loss_fn,
    loss_settings,
    phase_batch,
    r1_loss_fn,
    sample_latent,
)


def _setup(arch="dcgan", cond="acgan", attrs=(), **model):
    cfg = Config()
    cfg.model.arch, cfg.model.cond, cfg.model.z_dim, cfg.model.width = arch, cond, 8, 4
    for k, v in model.items():
        setattr(cfg.model, k, v)
    info = DataInfo(channels=1, resolution=16, num_classes=10, attributes=list(attrs))
    torch.manual_seed(0)
    G, D = build_models(cfg.model, info)
    return cfg, gan_models(G, D, G, D, cfg.model, info), loss_settings(cfg)


def test_phase_batch_selects_attributes_in_config_order_and_normalises_sources():
    raw = {"image": torch.full((2, 1, 4, 4), 255, dtype=torch.uint8), "src": torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
           "attrs": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "label": torch.tensor([3, 4])}
    b = phase_batch(raw, torch.device("cpu"), BatchPrep(attr_index=[2, 0]))
    assert b["attrs"].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert b["real"].max() == 1.0 and b["src"].min() == -1.0 and b["label"].tolist() == [3, 4]
    assert "attrs" not in phase_batch(raw, torch.device("cpu"), BatchPrep())  # only multilabel runs use them


def test_fake_attributes_follow_the_real_batch():
    _, m, _ = _setup(cond="multilabel", attrs=["Male", "Black_Hair"])
    assert m.num_classes == 4 and m.space.kind == "attrs"
    real = torch.tensor([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 2)
    _, y = sample_latent(8, m, torch.device("cpu"), real)
    assert sorted(map(tuple, y.tolist())) == sorted(map(tuple, real.tolist()))
    cats = m.space.categories(torch.tensor([[0.5, 0.25]]))  # soft attributes mix the 4 combinations
    assert cats.sum().item() == pytest.approx(1.0) and cats[0, 0].item() == pytest.approx(0.5 * 0.75)


def test_acgan_d_loss_adds_the_class_loss_on_real_and_fake():
    _, m, s = _setup()
    assert s.acgan
    m.D.eval()  # deterministic D for recomputing the parts by hand
    batch = {"real": torch.rand(6, 1, 16, 16) * 2 - 1, "label": torch.randint(0, 10, (6,))}
    torch.manual_seed(1)
    stats.reset()
    loss = d_loss_fn(m, batch, s)
    torch.manual_seed(1)
    z, y_fake = sample_latent(6, m, torch.device("cpu"))
    with torch.no_grad():
        fake = m.G(z, y_fake)
        o_r, o_f = m.D(batch["real"]), m.D(fake)
    want = (losses.adversarial("bce").d_loss(o_r.logits, o_f.logits)
            + losses.aux_class_loss(o_r.class_logits, batch["label"])
            + losses.aux_class_loss(o_f.class_logits, y_fake))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert "loss_d_aux" in stats.collect()


def test_pix2pix_g_loss_is_cgan_plus_lambda_l1():
    cfg, m, s = _setup("pix2pix", "none", dropout=0.0)
    assert s.paired and s.l1_weight == 100.0 and m.paired
    m.G.eval(), m.D.eval()
    batch = {"real": torch.rand(2, 1, 16, 16) * 2 - 1, "src": torch.rand(2, 1, 16, 16) * 2 - 1}
    loss = g_loss_fn(m, batch, s)
    fake = m.G(batch["src"])
    adv = losses.adversarial("bce").g_loss(m.D(fake, batch["src"]).patch_logits)
    want = adv + 100.0 * (fake - batch["real"]).abs().mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert d_loss_fn(m, batch, s).item() > 0


@pytest.mark.parametrize("name", ["bce", "hinge"])
def test_phases_log_the_scores_of_the_runs_loss(name):
    cfg, m, _ = _setup(cond="none")
    cfg.train.loss = name
    s = loss_settings(cfg)
    m.G.eval(), m.D.eval()  # deterministic models for recomputing the outputs by hand
    batch = {"real": torch.rand(6, 1, 16, 16) * 2 - 1}
    stats.reset()
    torch.manual_seed(1)
    d_loss_fn(m, batch, s)
    torch.manual_seed(1)
    z, _ = sample_latent(6, m, torch.device("cpu"))
    with torch.no_grad():
        real_out, fake_out = m.D(batch["real"]).logits, m.D(m.G(z)).logits
    logged = stats.collect()
    want = {k: v.float().mean().item() for k, v in losses.adversarial(name).scores(real_out, fake_out).items()}
    assert set(want) <= set(logged) and all(logged[k] == pytest.approx(v, abs=1e-6) for k, v in want.items())
    if name == "bce":  # the probabilities TensorBoard has always shown
        assert logged["d_real"] == pytest.approx(torch.sigmoid(real_out).mean().item(), abs=1e-6)
    else:  # a critic value is no probability: no d_real / d_fake under a hinge loss
        assert not {"d_real", "d_fake"} & set(logged) and logged["d_real_raw"] == pytest.approx(real_out.mean().item())
    g_loss_fn(m, batch, s)
    logged_g = stats.collect()
    assert {f"{k}_g" for k in losses.adversarial(name).scores(None, fake_out)} <= set(logged_g)
    assert ("d_fake_g" in logged_g) == (name == "bce")


def test_d_loss_with_r1_adds_half_gamma_times_ds_squared_gradient_at_the_real_batch():
    cfg, m, _ = _setup(cond="projection")
    m.G.eval(), m.D.eval()
    batch = {"real": torch.rand(6, 1, 16, 16) * 2 - 1, "label": torch.randint(0, 10, (6,))}
    plain = loss_settings(cfg)
    cfg.train.r1_gamma = 10.0
    s = loss_settings(cfg)
    torch.manual_seed(1)
    base = d_loss_fn(m, batch, plain).item()
    torch.manual_seed(1)
    stats.reset()
    loss = d_loss_fn(m, batch, s)
    x = batch["real"].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(m.D(x, batch["label"]).logits.sum(), x)
    r1 = grad.pow(2).flatten(1).sum(1).mean().item()
    assert stats.collect()["loss_d_r1"] == pytest.approx(r1, rel=1e-5)
    assert loss.item() == pytest.approx(base + 5.0 * r1, rel=1e-5)
    assert not batch["real"].requires_grad  # the batch itself is left as it was
    loss.backward()  # the penalty's double backward reaches D's weights
    assert all(p.grad is not None for p in m.D.parameters() if p.requires_grad)


def test_lazy_r1_phase_loss_is_the_penalty_alone_weighted_by_its_interval():
    cfg, m, _ = _setup(cond="acgan")
    m.D.eval()
    cfg.train.r1_gamma, cfg.train.r1_every = 2.0, 4
    s = loss_settings(cfg)
    batch = {"real": torch.rand(6, 1, 16, 16) * 2 - 1, "label": torch.randint(0, 10, (6,))}
    stats.reset()
    loss = r1_loss_fn(m, batch, s)
    x = batch["real"].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(m.D(x, batch["label"]).logits.sum(), x)
    r1 = grad.pow(2).flatten(1).sum(1).mean().item()
    assert loss.item() == pytest.approx(0.5 * 2.0 * 4 * r1, rel=1e-5)
    assert stats.collect()["loss_d_r1"] == pytest.approx(r1, rel=1e-5)
    torch.manual_seed(1)
    lazy = d_loss_fn(m, batch, s).item()
    cfg.train.r1_gamma = 0.0
    torch.manual_seed(1)
    assert lazy == d_loss_fn(m, batch, loss_settings(cfg)).item()  # the D phase itself carries no penalty
