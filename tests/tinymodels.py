"""Tiny models and cards shared by the tests (mechanics only): random-init CFMD-GANs for the weights/Hub
tests, and a constant-offset "network" for the face-pipeline tests."""
from __future__ import annotations

import dataclasses

import numpy as np
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


class AddConst(torch.nn.Module):
    """A continuous-u "network" for a Deblurrer: x + 0.1 (u ignored); records the input shapes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.1))
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x, u):
        self.shapes.append(tuple(x.shape))
        return x + self.w


class FnModel:
    """A stand-in face model: ``fn`` on every crop; records the batch sizes it was given."""

    def __init__(self, fn, card_name: str = "cfmd-gan") -> None:
        self.card = get_card(card_name)
        self.fn = fn
        self.calls: list[int] = []

    def restore(self, crops, u=None):
        self.calls.append(len(crops))
        return [self.fn(c) for c in crops]


def identity() -> FnModel:
    return FnModel(lambda x: x.copy())


def shift(d: float = 0.1) -> FnModel:
    return FnModel(lambda x: np.clip(x + d, 0, 1))


def run_cli(argv, capsys):
    """``facedeblur`` main(argv) -> (exit code, stdout, stderr)."""
    from facedeblur.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


class BoxBlurPairs(torch.utils.data.Dataset):
    """``pair`` samples for training-mechanics tests: smooth random ``size`` px images (bilinear up from 8x8) blurred
    by a horizontal ``taps``-tap box."""

    kind = "pair"

    def __init__(self, n: int, seed: int, taps: int = 5, size: int = 32) -> None:
        import torch.nn.functional as F

        g = torch.Generator().manual_seed(seed)
        self.sharp = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear",
                                   align_corners=False)
        r = taps // 2
        self.blurry = F.avg_pool2d(F.pad(self.sharp, (r, r, 0, 0), mode="replicate"), (1, taps), stride=1)

    def __len__(self) -> int:
        return len(self.sharp)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"blurry": self.blurry[i].clone(), "sharp": self.sharp[i].clone()}
