"""Tiny random-init CFMD-GAN models and cards shared by the weights/Hub tests (mechanics only)."""
from __future__ import annotations

import dataclasses

import torch

import facedeblur
from facedeblur.models import get_card

TINY = {"width": 4, "num_res": 1}


def tiny_card(name: str = "cfmd-gan.lite", **kw):
    """The zoo card of ``name`` with the tiny architecture kwargs (so saved weights match it)."""
    card = get_card(name)
    return dataclasses.replace(card, arch_kwargs={**card.arch_kwargs, **TINY, **kw})


def tiny_model(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return facedeblur.create_model("cfmd-gan", **{**TINY, **kw})


def forward_probe(model: torch.nn.Module, u: float) -> torch.Tensor:
    """The full-resolution output on a fixed 8x8 input: equal for equal weights."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return model(torch.rand(1, 3, 8, 8, generator=g), u)[-1]
