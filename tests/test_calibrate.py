"""Do-no-harm residual gate (mechanics) and its calibration fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import facedeblur
from facedeblur.models.layers import ResidualGate
from facedeblur.train.calibrate import fit_gate, residual_stats


def test_gate_identity_until_calibrated_and_interpolates():
    gate = ResidualGate(num_knots=3)
    x = torch.full((2, 3, 4, 4), 0.5)
    out = x + torch.tensor([0.01, 0.2]).view(2, 1, 1, 1)
    assert torch.allclose(gate(x, out), out)  # alphas = 1
    gate.knots.copy_(torch.tensor([0.0, 0.05, 0.1]))
    gate.alphas.copy_(torch.tensor([0.0, 0.5, 1.0]))
    y = gate(x, out)
    # rms 0.01 -> alpha 0.1 ; rms 0.2 (beyond the last knot) -> alpha 1
    assert torch.allclose(y[0], x[0] + 0.1 * 0.01, atol=1e-6)
    assert torch.allclose(y[1], out[1])
    gate.enabled = False
    assert torch.equal(gate(x, out), out)


def test_generator_applies_gate_only_in_eval():
    torch.manual_seed(0)
    g = facedeblur.create_model("cfmd-gan", width=4, num_res=1, residual_gate=True)
    g.gate.alphas.zero_()  # gate fully closed: eval output == input
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        g.train()
        train_out = g(x, 0.5)[-1]
        g.eval()
        eval_out = g(x, 0.5)[-1]
    assert torch.allclose(eval_out, x, atol=1e-6)
    assert not torch.allclose(train_out, x, atol=1e-3)


def test_fit_gate_closes_for_noise_and_opens_for_signal():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(64):
        rms = 0.001 + 0.002 * rng.random() if i < 32 else 0.05 + 0.01 * rng.random()
        rr = rms ** 2
        dd = 0.0004 if i < 32 else 0.004
        rd = 0.0 if i < 32 else rr  # small residuals: unrelated to the truth; large ones: exactly right
        rows.append([rms, dd, rd, rr])
    fit = fit_gate(np.array(rows), num_knots=4)
    assert fit["alphas"][:2] == [0.0, 0.0]
    assert fit["alphas"][2:] == [1.0, 1.0]
    assert all(b["gain_gated_db"] >= b["gain_ungated_db"] - 1e-9 for b in fit["bins"])
    assert np.all(np.diff(fit["knots"]) > 0)


def test_fit_gate_needs_enough_samples():
    with pytest.raises(ValueError, match="at least"):
        fit_gate(np.ones((5, 4)), num_knots=4)


def test_residual_stats_match_direct_computation():
    torch.manual_seed(1)
    g = facedeblur.create_model("cfmd-gan", width=4, num_res=1, residual_gate=True).eval()
    samples = [{"blurry": torch.rand(3, 16, 16), "sharp": torch.rand(3, 16, 16), "u": torch.tensor(0.5)}
               for _ in range(3)]
    stats = residual_stats(g, samples, batch=2, progress=False)
    assert g.gate.enabled  # restored afterwards
    s = samples[2]
    with torch.no_grad():
        g.gate.enabled = False
        out = g(s["blurry"][None], s["u"][None])[-1][0]
        g.gate.enabled = True
    r, d = (out - s["blurry"]).double(), (s["sharp"] - s["blurry"]).double()
    assert stats.shape == (3, 4)
    np.testing.assert_allclose(stats[2], [(r * r).mean().sqrt().item(), (d * d).mean().item(),
                                          (r * d).mean().item(), (r * r).mean().item()], rtol=1e-6)
