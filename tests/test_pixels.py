"""distgan.pixels: every uint8 <-> model-range mapping agrees with normalize / denormalize."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from distgan import pixels
from distgan.data import denormalize as data_denormalize
from distgan.export import Standalone
from distgan.models.pixelmap import pixel_map

MEAN, STD = [0.2, 0.5, 0.7], [0.3, 0.25, 0.1]
STATS = {"minmax": ([], []), "zscore": (MEAN, STD)}


@pytest.fixture
def uint8_images() -> torch.Tensor:
    return torch.randint(0, 256, (4, 3, 5, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.mark.parametrize("mode", ["minmax", "zscore"])
def test_round_trip_and_the_pipeline_uses_the_same_functions(uint8_images, mode):
    mean, std = STATS[mode]
    x = pixels.normalize(uint8_images, mode, mean, std)
    assert torch.equal(pixels.denormalize(x, mode, mean, std), uint8_images)
    assert data_denormalize is pixels.denormalize
    hwc = pixels.to_uint8_nhwc(x, mode, mean, std)
    assert hwc.dtype == np.uint8 and np.array_equal(hwc, uint8_images.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("mode", ["minmax", "zscore"])
def test_to_minmax_matches_normalize_minmax(uint8_images, mode):
    mean, std = STATS[mode]
    x = pixels.normalize(uint8_images, mode, mean, std)
    torch.testing.assert_close(pixels.to_minmax(x, mode, mean, std), pixels.normalize(uint8_images, "minmax"))


def test_generator_output_map_lands_where_the_real_batch_does(uint8_images):
    t = pixels.normalize(uint8_images, "minmax")  # a tanh output equal to these images
    torch.testing.assert_close(pixel_map("zscore", MEAN, STD)(t), pixels.normalize(uint8_images, "zscore", MEAN, STD))
    assert isinstance(pixel_map("minmax", [], []), torch.nn.Identity)


def test_pixel_values_for_inception(uint8_images):
    assert torch.equal(pixels.pixel_values(uint8_images), uint8_images.float())
    assert torch.equal(pixels.pixel_values(pixels.normalize(uint8_images, "minmax")), uint8_images.float())


@pytest.mark.parametrize("mode", ["minmax", "zscore"])
def test_exported_standalone_agrees_with_denormalize(uint8_images, mode):
    """The traced export carries the mapping as buffers; its [0, 1] output is denormalize / 255."""
    mean, std = STATS[mode]
    x = pixels.normalize(uint8_images, mode, mean, std)

    class FixedG(torch.nn.Module):
        def forward(self, z, y=None):
            return x

    info = types.SimpleNamespace(channels=3, normalize=mode, mean=mean, std=std)
    unit = Standalone(FixedG(), info)(torch.zeros(4, 1))
    assert torch.equal((unit * 255).round().to(torch.uint8), pixels.denormalize(x, mode, mean, std))
