"""Shared test fixtures. Everything is made here, offline; random-init weights are for mechanics only."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # CPU machines may be busy with training jobs

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def rgb_u8() -> np.ndarray:
    """A 37x45 RGB uint8 image (odd sizes on purpose: padding and cropping must be exact)."""
    return np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def weights_api():
    """``facedeblur.weights`` (save_pretrained, load_pretrained_into, ...); an import error fails the tests that use
    it instead of skipping them."""
    import facedeblur.weights as w

    return w


@pytest.fixture(scope="session")
def lite_random_folder(weights_api, tmp_path_factory):
    """A folder written by save_pretrained from a RANDOM-INIT cfmd-gan.lite (mechanics only), and the model."""
    import facedeblur
    from facedeblur.models import get_card

    torch.manual_seed(0)
    model = facedeblur.create_model("cfmd-gan.lite")
    folder = tmp_path_factory.mktemp("lite_random") / "export"
    weights_api.save_pretrained(model, get_card("cfmd-gan.lite"), folder)
    return folder, model
