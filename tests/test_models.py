"""The G/D families: shapes, parameter counts, conditioning modes, heads, norms, init."""
import pytest
import torch
from torch.nn.utils import parametrize

from distgan.config import Config
from distgan.models import DataInfo, build_models, dcgan, select_attributes
from distgan.models.labels import LabelSpace
from distgan.models.norms import CategoricalNorm, make_norm
from distgan.models.spectral import raw_weight


def _build(arch="dcgan", cond="channels", res=16, channels=1, classes=10, attrs=(), **model):
    cfg = Config()
    mc = cfg.model
    mc.arch, mc.cond, mc.z_dim, mc.width = arch, cond, 8, 8
    for k, v in model.items():
        setattr(mc, k, v)
    torch.manual_seed(0)
    return build_models(mc, DataInfo(channels=channels, resolution=res, num_classes=classes, attributes=list(attrs)))


def _count(m):
    return sum(p.numel() for p in m.parameters())


def _dcgan_g_params(nz, n, nc):
    """The standard DCGAN 64x64 generator (Radford et al.; PyTorch DCGAN tutorial): bias-free
    transposed convs nz->8n->4n->2n->n->nc with 4x4 kernels, BN (weight+bias) after all but the last."""
    convs = [nz * 8 * n, 8 * n * 4 * n, 4 * n * 2 * n, 2 * n * n, n * nc]
    return sum(16 * c for c in convs) + 2 * (8 + 4 + 2 + 1) * n


def _dcgan_d_params(n, nc):
    """Standard DCGAN 64x64 discriminator: bias-free 4x4 convs nc->n->2n->4n->8n->1, BN on 2n, 4n, 8n."""
    convs = [nc * n, n * 2 * n, 2 * n * 4 * n, 4 * n * 8 * n, 8 * n]
    return sum(16 * c for c in convs) + 2 * (2 + 4 + 8) * n


@pytest.mark.parametrize("n", [64, 128])
def test_dcgan_parameter_counts_match_the_standard_architecture(n):
    G, D = _build(cond="none", res=64, channels=3, z_dim=100, width=n)
    assert _count(G) == _dcgan_g_params(100, n, 3)
    assert _count(D) == _dcgan_d_params(n, 3)
    if n == 64:  # the published totals of the reference implementation
        assert (_count(G), _count(D)) == (3_576_704, 2_765_568)


@pytest.mark.parametrize("res,z", [(32, 64), (64, 256), (128, 100)])
def test_dcgan_resolutions_and_latents(res, z):
    G, D = _build(cond="none", res=res, channels=3, z_dim=z, width=4)
    x = G(torch.randn(2, z))
    assert x.shape == (2, 3, res, res) and x.abs().max() <= 1
    assert D(x).logits.shape == (2,)


@pytest.mark.parametrize("cond", ["none", "projection", "acgan", "cbn"])
def test_dcgan_at_28_pixels_grows_from_a_7x7_stem(cond):
    """28 = 7 * 2^2: G maps z to 7x7 at 2n channels, then 14x14 at n, then 28x28 (the
    InfoGAN-style topology of the Fashion-MNIST benchmark); D mirrors it down to 7x7."""
    G, D = _build(cond=cond, res=28, z_dim=16, width=8)
    assert G.stem.kernel_size == (7, 7) and G.stem.out_channels == 16
    assert [b["conv"].out_channels for b in G.blocks] == [8]
    y = torch.tensor([1, 7])
    x = G(torch.randn(2, 16), y)
    assert x.shape == (2, 1, 28, 28)
    out = D(x, y)
    assert out.logits.shape == (2,) and D.out.kernel_size == (7, 7)
    assert out.features.shape == (2, 16 * 7 * 7)
    if cond == "acgan":
        assert out.class_logits.shape == (2, 10)


def test_upsample_family_is_the_lecture_9a_gan():
    G, D = _build("upsample", "none", res=28, z_dim=100, width=64, norm="none")
    assert G.stem.out_features == 7 * 7 * 256  # FC 100 -> 7x7x256
    assert [c.out_channels for c in G.convs] == [128, 64] and G.convs[0].kernel_size == (5, 5)
    assert D.out.in_features == 6272  # FC 6272 -> 1
    assert any(isinstance(m, torch.nn.Dropout) for m in D.modules())
    x = G(torch.randn(3, 100))
    assert x.shape == (3, 1, 28, 28)


def test_mlp_family_is_the_toutouh_cgan():
    G, D = _build("mlp", "embed_concat", res=28, z_dim=100, width=256, norm="none", dropout=0.3)
    assert [lin.in_features for lin in G.linears] == [110, 256, 512] and G.out.out_features == 784
    assert G.cond.embed.weight.shape == (10, 10) and D.cond.embed.weight.shape == (10, 10)
    assert D.features[0].in_features == 794 and D.out.in_features == 256
    y = torch.arange(4)
    x = G(torch.randn(4, 100), y)
    assert x.shape == (4, 1, 28, 28) and D(x, y).logits.shape == (4,)


def test_pix2pix_unet_and_patchgan():
    G, D = _build("pix2pix", "none", res=32, channels=3, width=8, dropout=0.5)
    src = torch.rand(2, 3, 32, 32) * 2 - 1
    x = G(src)
    out = D(x, src)
    assert x.shape == src.shape and x.abs().max() <= 1
    assert out.patch_logits.shape == (2, 4) and out.logits.shape == (2,)  # 2x2 patches at 32x32
    assert D.features[0].in_channels == 6  # (image, source) pairs
    assert sum(isinstance(m, torch.nn.Dropout) for m in G.modules()) == 3
    with pytest.raises(ValueError, match="source images"):
        G(torch.randn(2, 8))
    with pytest.raises(ValueError, match="model.cond=none"):
        _build("pix2pix", "channels", res=32)


@pytest.mark.parametrize("arch,cond,extra", [
    ("dcgan", "channels", {}), ("dcgan", "embed_concat", {}), ("dcgan", "embed_mul", {}),
    ("dcgan", "cbn", {}), ("dcgan", "acgan", {}), ("dcgan", "projection", {"cond_g": "embed_concat"}),
    ("upsample", "acgan", {"cond_g": "embed_mul", "kernel": 3}),
    ("mlp", "embed_concat", {"norm": "none", "init": "default"}),
])
def test_conditional_generator_follows_the_label(arch, cond, extra):
    G, _ = _build(arch, cond, res=16, **extra)
    G.eval()  # running BN statistics: the batch composition must not matter
    z = torch.randn(4, 8)
    a, b = G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.full((4,), 7))
    assert not torch.allclose(a, b, atol=1e-6)
    assert torch.equal(a, G(z, torch.zeros(4, dtype=torch.long)))
    # a soft label vector that is one-hot gives exactly the index's image
    torch.testing.assert_close(G(z, torch.nn.functional.one_hot(torch.full((4,), 7), 10).float()), b)


def test_projection_and_ac_heads():
    _, D = _build(cond="acgan")
    out = D(torch.randn(5, 1, 16, 16), torch.arange(5))
    assert out.class_logits.shape == (5, 10) and out.logits.shape == (5,)
    _, D = _build(cond="projection", proj_features=12)
    D.eval()
    x = torch.randn(5, 1, 16, 16)
    o0, o1 = D(x, torch.zeros(5, dtype=torch.long)), D(x, torch.ones(5, dtype=torch.long))
    assert o0.class_logits is None and o0.logits.shape == (5,) and D.cond.proj_embed.weight.shape == (10, 12)
    assert not torch.allclose(o0.logits, o1.logits)
    torch.testing.assert_close(o0.features, o1.features)  # the label only enters through the projection


def test_two_binary_attributes_give_four_bn_parameter_sets():
    G, D = _build(cond="multilabel", attrs=["Male", "Black_Hair"], cond_norm=True, label_branch_depth=2)
    cbns = [m for m in G.modules() if isinstance(m, CategoricalNorm)]
    assert cbns and all(m.gamma.weight.shape[0] == 4 and m.beta.weight.shape[0] == 4 for m in cbns)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in G.cond.branch) == 3  # 1 + 2 extra deconvs
    assert D.features[0].in_channels == 1 + 4  # two one-hot channels per attribute
    G.eval()
    z = torch.randn(4, 8).repeat(4, 1)
    attrs = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]]).repeat_interleave(4, 0)
    x = G(z, attrs)
    torch.testing.assert_close(x, G(z, torch.arange(4).repeat_interleave(4)))  # combination index == vector
    assert x.shape == (16, 1, 16, 16) and D(x, attrs).logits.shape == (16,)
    per_combo = x.view(4, 4, -1)
    assert all(not torch.allclose(per_combo[i], per_combo[j]) for i in range(4) for j in range(i))


def test_attribute_encodings():
    a = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]])
    num = LabelSpace("attrs", 2, "number")
    torch.testing.assert_close(num.vector(a), torch.tensor([[0.25], [0.5], [0.75], [1.0]]))
    one = LabelSpace("attrs", 2, "onehot")
    torch.testing.assert_close(one.vector(a)[1], torch.tensor([1.0, 0, 0, 1]))
    torch.testing.assert_close(one.categories(a), torch.eye(4))
    assert one.attrs(torch.tensor([2])).tolist() == [[1.0, 0.0]]


def test_number_encoding_is_one_channel():
    cfg = Config()
    cfg.model.cond, cfg.model.z_dim, cfg.model.width = "multilabel", 8, 8
    G, D = build_models(cfg.model, DataInfo(1, 16, attributes=["Male", "Smiling"], attr_encoding="number"))
    assert D.features[0].in_channels == 2 and G.cond.branch[0].in_channels == 1


def test_unknown_attribute_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown attribute.*'Bald'.*Male, Smiling"):
        select_attributes(["Male", "Bald"], ["Male", "Smiling"])
    assert select_attributes(["Smiling", "Male"], ["Male", "Eyeglasses", "Smiling"]) == [2, 0]


def test_norms_by_name_and_errors():
    assert isinstance(make_norm("instance", 4), torch.nn.InstanceNorm2d)
    assert isinstance(make_norm("none", 4), torch.nn.Identity)
    assert make_norm("batch", 4, affine=False).weight is None
    with pytest.raises(ValueError, match="unknown norm 'group'"):
        make_norm("group", 4)
    G, D = _build(cond="none", norm_g="none", norm_d="instance")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in list(G.modules()) + list(D.modules()))
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in D.modules())


def test_spectral_norm_keeps_top_singular_value_near_one():
    _, D = _build(cond="projection", spectral_norm=True, norm="none")
    opt = torch.optim.Adam(D.parameters(), lr=0.05)
    y = torch.randint(0, 10, (8,))
    for _ in range(5):  # large updates move the raw weights far from their initial scale
        opt.zero_grad()
        (-D(torch.randn(8, 1, 16, 16), y).logits.mean()).backward()
        opt.step()
    with torch.no_grad():
        for _ in range(30):  # the power iteration runs once per training-mode forward
            D(torch.randn(8, 1, 16, 16), y)
    layers = [m for m in D.modules() if parametrize.is_parametrized(m, "weight")]
    assert len(layers) == 3  # two convs and the output conv at 16x16
    raws = []
    for m in layers:
        raws.append(torch.linalg.matrix_norm(raw_weight(m).detach().flatten(1), ord=2).item())
        top = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(top.item() - 1.0) < 0.05
    assert max(abs(r - 1.0) for r in raws) > 0.3  # ... though the raw weights are far from norm 1


def test_checkpoints_of_hook_based_spectral_norm_load_into_the_parametrized_layers(monkeypatch):
    # a D (and its optimizer) as older distgan built and saved it, with torch.nn.utils.spectral_norm
    monkeypatch.setattr(dcgan, "spectral_norm", torch.nn.utils.spectral_norm)
    torch.manual_seed(0)
    _, old = _build(cond="projection", spectral_norm=True, norm="none")
    opt = torch.optim.Adam(old.parameters(), lr=0.01)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    for _ in range(3):
        opt.zero_grad()
        old(x, y).logits.mean().backward()
        opt.step()
    saved, saved_opt = old.state_dict(), opt.state_dict()
    assert any(k.endswith("weight_orig") for k in saved) and any(k.endswith("weight_u") for k in saved)
    monkeypatch.undo()

    _, new = _build(cond="projection", spectral_norm=True, norm="none")
    new.load_state_dict(saved)  # strict: every old key found its new name
    assert not any("weight_orig" in k for k in new.state_dict())
    old.eval(), new.eval()
    with torch.no_grad():
        assert torch.allclose(old(x, y).logits, new(x, y).logits, atol=1e-6)
    old.train(), new.train()
    with torch.no_grad():  # training forwards continue the power iteration from the saved u and v
        for _ in range(30):  # (torch's two versions update u and v in opposite order: equal once converged)
            a, b = old(x, y).logits, new(x, y).logits
    assert torch.allclose(a, b, rtol=1e-3)
    # the parameter order is unchanged, so the saved Adam moments apply to the same tensors
    opt2 = torch.optim.Adam(new.parameters(), lr=0.01)
    opt2.load_state_dict(saved_opt)
    assert [p.shape for p in old.parameters()] == [p.shape for p in new.parameters()]


def test_dcgan_init_and_configurable_init():
    G, D = _build(cond="cbn")
    w = G.blocks[0]["conv"].weight
    assert abs(w.mean().item()) < 0.01 and abs(w.std().item() - 0.02) < 0.005
    cbn = G.blocks[0]["norm"]
    assert abs(cbn.gamma.weight.mean().item() - 1.0) < 0.01  # conditional gains start near 1, not 0
    G2, _ = _build(cond="none", init="dcgan", init_std=0.1)
    assert abs(G2.blocks[0]["conv"].weight.std().item() - 0.1) < 0.02
    G3, _ = _build(cond="none", init="orthogonal")
    assert abs(G3.blocks[0]["conv"].weight.std().item() - 0.02) > 0.005


def test_zscore_output_mapping_covers_the_data_range():
    cfg = Config()
    cfg.model.cond, cfg.model.z_dim, cfg.model.width = "none", 8, 8
    G, _ = build_models(cfg.model, DataInfo(1, 16, normalize="zscore", mean=[0.25], std=[0.5]))
    t = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(G.pixel_map(t).flatten(), torch.tensor([-0.5, 1.5]))  # (0-.25)/.5, (1-.25)/.5
    assert "pixel_map.mean" not in G.state_dict()  # data statistics are not checkpoint state


def test_bad_model_settings_name_the_key():
    with pytest.raises(ValueError, match=r"data.resolution = 4 \* 2\^L .* or 7 \* 2\^L .* got 30"):
        _build(res=30)
    with pytest.raises(ValueError, match="needs labelled data"):
        _build(cond="channels", classes=0)
    with pytest.raises(ValueError, match="needs shards with attributes"):
        _build(cond="multilabel")
    with pytest.raises(ValueError, match="at most 8"):
        _build(cond="multilabel", attrs=[f"a{i}" for i in range(9)])


def test_every_family_a_config_may_name_builds_and_an_unknown_one_is_named():
    from distgan.models import BUILDERS
    from distgan.modelspec import ARCHS

    assert set(BUILDERS) == set(ARCHS)
    for arch, spec in ARCHS.items():
        G, D = _build(arch, "none", res=32)
        z = torch.randn(2, 8)
        x = G(torch.rand(2, 1, 32, 32) * 2 - 1) if spec.paired else G(z)
        assert x.shape == (2, 1, 32, 32), arch
        assert D(x, x if spec.paired else None).logits.shape[0] == 2, arch
    with pytest.raises(ValueError, match="model.arch 'resnet' is not available; choose one of dcgan, upsample"):
        _build("resnet")
