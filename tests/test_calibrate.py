"""Do-no-harm residual gate (mechanics) and its calibration fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import facedeblur
from facedeblur.models.cfmd_gan import ResidualGate
from facedeblur.train.methods.cfmd_gan_calibrate import calibrate_gate, calibration_samples, fit_gate, residual_stats


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
    g = facedeblur.create_model("cfmd-gan", width=4, num_res=1, residual_gate=True,
                                gate_feature="residual_rms").eval()
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
    assert stats.shape == (3, 5 + 41)  # + the 8-bit MSE per alpha of ALPHA_GRID (tested below)
    np.testing.assert_allclose(stats[2, :5], [(r * r).mean().sqrt().item(), (d * d).mean().item(),
                                          (r * d).mean().item(), (r * r).mean().item(), 0.5], rtol=1e-6)


def test_gate_bilinear_in_u_and_rms():
    """A gate with u knots interpolates alpha linearly in u between the knots' rows."""
    gate = ResidualGate(num_knots=2, num_u_knots=3)
    gate.knots.copy_(torch.tensor([0.0, 1.0]))
    gate.alphas.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]]))  # u = 0, 0.5, 1
    rms = torch.tensor([0.1, 0.1, 0.1, 0.1])
    alpha = gate.alpha(rms, torch.tensor([0.0, 0.25, 0.5, 0.75]))
    assert torch.allclose(alpha, torch.tensor([0.0, 0.5, 1.0, 0.75]))
    with pytest.raises(ValueError, match="pass the control factor"):
        gate.alpha(rms)
    x = torch.zeros(1, 3, 2, 2)
    out = torch.full((1, 3, 2, 2), 0.1)
    assert torch.allclose(gate(x, out, torch.tensor([0.25])), out * 0.5)


def test_fit_gate_per_u_knot():
    """Residuals that are right at u = 0.5 and wrong at the ends give alpha 1 in the middle and 0 at the ends."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        u = [0.0, 0.5, 1.0][i % 3]
        rms = 0.01 + 0.02 * rng.random()
        rr, dd = rms ** 2, 2 * rms ** 2
        rd = rr if u == 0.5 else -rr
        rows.append([rms, dd, rd, rr, u])
    fit = fit_gate(np.array(rows), num_knots=4, num_u_knots=3)
    alphas = np.array(fit["alphas"])
    assert alphas.shape == (3, 4) and fit["u_knots"] == [0.0, 0.5, 1.0]
    assert np.all(alphas[1] == 1.0) and np.all(alphas[[0, 2]] == 0.0)
    with pytest.raises(ValueError, match="u of every sample"):
        fit_gate(np.array(rows)[:, :4], num_knots=4, num_u_knots=3)


def test_calibrate_gate_on_windows_never_loses_on_its_pairs(tmp_path):
    """End to end on prepared-window files: one pair per window and u knot; the fitted gate's mean PSNR gain on
    those pairs is at least the ungated model's and at least 0 (alpha = 0 is always available)."""
    rng = np.random.default_rng(0)
    windows = []
    for i in range(12):
        n = 5 + 2 * (i % 3)
        frames = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
        np.save(tmp_path / f"w{i}.npy", frames)
        windows.append({"file": f"w{i}.npy", "split": "train"})
    pairs = list(calibration_samples(tmp_path, windows[:1], [0.0, 0.5, 1.0]))
    assert [round(float(p["u"]), 3) for p in pairs] == [0.0, 0.5, 1.0]
    torch.manual_seed(0)
    g = facedeblur.create_model("cfmd-gan", width=4, num_res=1, residual_gate=True, gate_u_knots=3).eval()
    g.gate.knots.copy_(torch.linspace(0, 0.1, 8))
    fit = calibrate_gate(g, tmp_path, windows, progress=False)
    assert fit["samples"] == 36 and np.array(fit["alphas"]).shape == (3, 8)
    stats = residual_stats(g, calibration_samples(tmp_path, windows, [0.0, 0.5, 1.0]), progress=False)
    gated = []
    with torch.no_grad():
        for p in calibration_samples(tmp_path, windows, [0.0, 0.5, 1.0]):
            out = g(p["blurry"][None], p["u"][None])[-1][0]
            mse_in = (p["sharp"] - p["blurry"]).double().pow(2).mean()
            mse_out = (p["sharp"] - out).double().pow(2).mean()
            gated.append(10 * torch.log10(mse_in / mse_out).item())
    ungated = 10 * np.log10(stats[:, 1] / np.maximum(stats[:, 1] - 2 * stats[:, 2] + stats[:, 3], 1e-12))
    assert np.mean(gated) >= -1e-6 and np.mean(gated) >= np.mean(ungated) - 1e-6


def test_fit_gate_rms_knots_per_u_knot():
    """Residuals twice as large at u = 0 as at u = 0.5: each u knot gets its own RMS knots, so the small
    (wrong) residuals of *each* u are shut off while the large (right) ones of each u pass."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(400):
        u = [0.0, 0.5][i % 2]
        scale = 2.0 if u == 0.0 else 1.0
        good = i % 4 >= 2
        rms = scale * (0.004 + 0.002 * rng.random() if good else 0.001 + 0.001 * rng.random())
        rr = rms ** 2
        rows.append([rms, 4 * rr, rr if good else -rr, rr, u])
    fit = fit_gate(np.array(rows), num_knots=4, num_u_knots=3)
    knots, alphas = np.array(fit["knots"]), np.array(fit["alphas"])
    assert knots.shape == (3, 4) and knots[0, -1] > 1.5 * knots[1, -1]
    for m in (0, 1):
        assert np.all(alphas[m, :2] == 0.0) and np.all(alphas[m, 2:] == 1.0)
    gate = ResidualGate(num_knots=4, num_u_knots=3)
    gate.knots.copy_(torch.tensor(knots))
    gate.alphas.copy_(torch.tensor(alphas))
    small0, big05 = torch.tensor([0.003]), torch.tensor([0.005])  # "large" at u = 0.5, "small" at u = 0
    assert gate.alpha(small0, torch.tensor([0.0])).item() == 0.0
    assert gate.alpha(big05, torch.tensor([0.5])).item() == 1.0


def _astronaut(size: int = 128) -> torch.Tensor:
    from skimage.data import astronaut

    img = torch.from_numpy(astronaut()[:256, 128:384].copy()).permute(2, 0, 1).float()[None] / 255
    return torch.nn.functional.interpolate(img, size=(size, size), mode="area")


def test_input_sharpness_falls_with_blur_and_ignores_contrast():
    from facedeblur.models.cfmd_gan import input_sharpness

    x = _astronaut()
    shifted = [torch.roll(x, k, dims=-1) for k in range(5)]
    motion = torch.stack(shifted).mean(0)  # a 5-frame horizontal motion average
    box = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    s_sharp, s_motion, s_box = input_sharpness(torch.cat([x, motion, box])).tolist()
    assert s_sharp > s_box > 1.0 and s_sharp > s_motion
    low = 0.25 + 0.5 * x  # half the contrast, another brightness: same sharpness
    assert input_sharpness(low).item() == pytest.approx(s_sharp, rel=1e-4)
    assert input_sharpness(torch.full((1, 3, 32, 32), 0.5)).item() == 0.0  # flat: no gradients, no division error


def test_gate_on_input_sharpness_depends_on_the_input_not_the_residual():
    from facedeblur.models.cfmd_gan import input_sharpness

    with pytest.raises(ValueError, match="input_sharpness"):
        ResidualGate(feature="sharpness")
    gate = ResidualGate(num_knots=2, feature="input_sharpness")
    x = _astronaut(64)
    blurred = torch.stack([torch.roll(x, k, dims=-1) for k in range(7)]).mean(0)
    s_sharp, s_blur = input_sharpness(torch.cat([x, blurred])).tolist()
    gate.knots.copy_(torch.tensor([s_blur, s_sharp]))
    gate.alphas.copy_(torch.tensor([1.0, 0.0]))  # leave sharp inputs alone, full residual for blurred ones
    r = torch.full_like(x, 0.02)
    inp = torch.cat([x, blurred])
    out = gate(inp, inp + r.repeat(2, 1, 1, 1))
    assert torch.allclose(out[0], x[0]) and torch.allclose(out[1], blurred[0] + 0.02)
    # calibration statistics carry the gate's feature in column 0
    g = facedeblur.create_model("cfmd-gan", width=4, num_res=1, residual_gate=True, gate_feature="input_sharpness")
    g.eval()
    sample = {"blurry": blurred[0], "sharp": x[0], "u": torch.tensor(0.5)}
    stats = residual_stats(g, [sample], progress=False)
    assert stats[0, 0] == pytest.approx(s_blur, rel=1e-5)


class _FixedResidual(torch.nn.Module):
    """A "model" that adds a fixed residual map (no gate): calibration statistics of a known residual."""

    def __init__(self, r: torch.Tensor) -> None:
        super().__init__()
        self.r = torch.nn.Parameter(r, requires_grad=False)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> list[torch.Tensor]:
        return [x + self.r]


def test_quantised_calibration_scores_the_8bit_output():
    """A nearly sharp face: the truth is +1 grey level on 20 % of the pixels. The residual is +0.7 there and
    +0.55 elsewhere. The float score's best alpha (~0.41) rounds to no change at all, so its float gain is never
    delivered. On 8-bit output, alpha in [0.72, 0.9) moves exactly the right pixels."""
    x = torch.full((3, 10, 10), 100 / 255)
    hit = torch.zeros(3, 10, 10, dtype=torch.bool)
    hit[:, :2] = True  # 20 % of the pixels
    gt = x + hit.float() / 255
    r = torch.where(hit, 0.7, 0.55) / 255
    model = _FixedResidual(r)
    samples = [{"blurry": x, "sharp": gt, "u": torch.tensor(0.5)}] * 32
    q = residual_stats(model, samples, progress=False)
    f = residual_stats(model, samples, progress=False, quantize=None)
    from facedeblur.train.methods.cfmd_gan_calibrate import ALPHA_GRID

    assert q.shape == (32, 5 + len(ALPHA_GRID)) and f.shape == (32, 5)
    np.testing.assert_allclose(q[:, :5], f, rtol=1e-9)
    for a in (0.0, 0.5, 0.8, 1.0):  # the quantised columns are the MSE of the rounded output
        out = torch.round((x + a * r).clamp(0, 1) * 255) / 255
        want = (out.double() - gt.double()).pow(2).mean().item()
        assert q[0, 5 + int(np.abs(ALPHA_GRID - a).argmin())] == pytest.approx(want, rel=1e-5)
    alpha_float = fit_gate(f, num_knots=4)["alphas"][0]
    alpha_q = fit_gate(q, num_knots=4)["alphas"][0]
    assert 0.35 < alpha_float < 0.45
    assert 0.72 <= alpha_q < 0.9
    delivered = torch.round((x + alpha_float * r) * 255) / 255
    assert torch.equal(delivered, x)  # the float choice changes nothing after rounding
    assert torch.allclose(torch.round((x + alpha_q * r) * 255) / 255, gt)
    with pytest.raises(ValueError, match="quantize"):
        residual_stats(model, samples, progress=False, quantize=0)
    with pytest.raises(ValueError, match="columns"):
        fit_gate(q[:, :7], num_knots=4)


def test_old_import_paths_still_work():
    """The calibration moved to train.methods.cfmd_gan_calibrate; the old path (used by commands in the docs)
    resolves to the same objects. (The gate names that moved to models.cfmd_gan are imported from there: the
    alias in models.layers made layers and cfmd_gan import each other, see tests/test_import_graph.py.)"""
    import subprocess
    import sys

    from facedeblur.models import cfmd_gan, layers
    from facedeblur.train import calibrate as shim
    from facedeblur.train.methods import cfmd_gan_calibrate as new

    for name in ("ResidualGate", "uncalibrated_state", "input_sharpness", "GATE_FEATURES"):
        assert hasattr(cfmd_gan, name) and not hasattr(layers, name)
    for name in shim.__all__:
        assert getattr(shim, name) is getattr(new, name)
    r = subprocess.run([sys.executable, "-m", "facedeblur.train.calibrate", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "python -m facedeblur.train.calibrate" in r.stdout and "--max-samples" in r.stdout
