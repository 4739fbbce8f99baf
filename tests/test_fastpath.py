"""Every speed switch gives the plain path's results (to tolerance)."""
import copy
from collections import Counter

import pytest
import torch

from distgan.config import Config
from distgan.data.device_cache import DeviceCache
from distgan.models import DataInfo, build_models
from distgan.train.fastpath import compiled, format_input, make_adam, to_memory_format


def _models(seed=0):
    cfg = Config()
    cfg.model.z_dim, cfg.model.width = 8, 8
    torch.manual_seed(seed)
    return build_models(cfg.model, DataInfo(channels=1, resolution=16, num_classes=10))


def _train_steps(G, D, opt_g, opt_d, steps=3, channels_last=False):
    torch.manual_seed(123)
    for _ in range(steps):
        z, y = torch.randn(8, 8), torch.randint(0, 10, (8,))
        real = format_input(torch.rand(8, 1, 16, 16) * 2 - 1, channels_last)
        opt_d.zero_grad()
        loss_d = -D(real, y).logits.mean() + D(G(z, y).detach(), y).logits.mean()
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        loss_g = -D(G(z, y), y).logits.mean()
        loss_g.backward()
        opt_g.step()
    return loss_d.item(), loss_g.item()


def test_channels_last_and_foreach_adam_match_plain_training():
    G0, D0 = _models()
    G1, D1 = copy.deepcopy(G0), copy.deepcopy(D0)
    plain = _train_steps(G0, D0, make_adam(G0.parameters(), 1e-3, (0.5, 0.999), False, torch.device("cpu")),
                         make_adam(D0.parameters(), 1e-3, (0.5, 0.999), False, torch.device("cpu")))
    to_memory_format(G1, True), to_memory_format(D1, True)
    fast = _train_steps(G1, D1, make_adam(G1.parameters(), 1e-3, (0.5, 0.999), True, torch.device("cpu")),
                        make_adam(D1.parameters(), 1e-3, (0.5, 0.999), True, torch.device("cpu")),
                        channels_last=True)
    assert fast == pytest.approx(plain, rel=1e-4, abs=1e-5)
    for a, b in zip(G0.state_dict().values(), G1.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.timeout(300)
def test_compiled_models_match_eager():
    G, D = _models()
    G.eval(), D.eval()
    z, y = torch.randn(4, 8), torch.arange(4)
    with torch.no_grad():
        ref = D(G(z, y), y).logits
        out = compiled(D)(compiled(G)(z, y), y).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_device_cache_splits_ranks_exactly_and_resumes(mnist_shards):
    world, bs = 2, 100
    caches = [DeviceCache(mnist_shards, 16, bs, torch.device("cpu"), rank=r, world=world, seed=3)
              for r in range(world)]
    per_epoch = caches[0].batches_per_epoch
    assert per_epoch == 5000 // world // bs == caches[1].batches_per_epoch
    seen = Counter()
    for c in caches:
        for _ in range(per_epoch):
            seen.update(next(c)["index"].tolist())
    assert len(seen) == 5000 and set(seen.values()) == {1}  # every sample exactly once per epoch
    # resume from a saved position continues the same order (into the next epoch)
    a = DeviceCache(mnist_shards, 16, bs, torch.device("cpu"), rank=1, world=world, seed=3)
    for _ in range(per_epoch - 2):
        next(a)
    state = a.state_dict()
    expected = [next(a)["index"] for _ in range(4)]
    b = DeviceCache(mnist_shards, 16, bs, torch.device("cpu"), rank=1, world=world, seed=3)
    b.load_state_dict(state)
    got = [next(b)["index"] for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(expected, got))
    batch = next(b)
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (bs, 1, 16, 16)
    assert batch["label"].shape == (bs,)
