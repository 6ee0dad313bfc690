"""Generic training losses and CFMD-GAN's (paper §4.3, Eq. 11-18; facedeblur.train.methods.cfmd_gan)."""
from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from facedeblur.train.losses import (LossWeights, adversarial_bce, build_perceptual, charbonnier, gt_pyramid,
                                     multiscale_charbonnier)
from facedeblur.train.methods.cfmd_gan import discriminator_loss, generator_loss

LN2 = math.log(2.0)


def test_charbonnier_hand_computed():
    pred = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[0.0, 0.4], [-0.4, 0.4]]]])
    # sqrt(0 + 0.09) = 0.3, sqrt(0.16 + 0.09) = 0.5 (x3) -> mean 0.45
    assert charbonnier(pred, target, eps=0.3).item() == pytest.approx(0.45, abs=1e-7)
    # paper eps = 1e-3: identical images give exactly eps
    assert charbonnier(target, target).item() == pytest.approx(1e-3, rel=1e-6)


def test_gt_pyramid_shapes_and_bilinear_from_full_resolution():
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 32, 48)
    levels = gt_pyramid(gt)
    assert [tuple(t.shape[-2:]) for t in levels] == [(8, 12), (16, 24), (32, 48)]
    assert levels[-1] is gt
    # the 1/4 level is bilinear 0.25 of the full image, not 0.5 of the 1/2 level
    direct = F.interpolate(gt, scale_factor=0.25, mode="bilinear", align_corners=False)
    assert torch.equal(levels[0], direct)
    assert not torch.allclose(levels[0], F.interpolate(levels[1], scale_factor=0.5, mode="bilinear"), atol=1e-4)


def test_multiscale_charbonnier_sums_three_scales():
    gt = torch.rand(1, 3, 16, 16)
    outs = gt_pyramid(gt)
    assert multiscale_charbonnier(outs, gt).item() == pytest.approx(3e-3, rel=1e-5)
    shifted = [o + 0.1 for o in outs]
    expected = 3 * math.sqrt(0.1 ** 2 + 1e-6)
    assert multiscale_charbonnier(shifted, gt).item() == pytest.approx(expected, rel=1e-5)
    # a single-scale output (a non-multi-output model) is one term
    assert multiscale_charbonnier(gt + 0.1, gt).item() == pytest.approx(expected / 3, rel=1e-5)
    with pytest.raises(ValueError, match="GT pyramid"):
        multiscale_charbonnier([outs[1], outs[1], outs[2]], gt)


def _d_out(n: int, logit: float, q: float, size: int = 8) -> dict[str, torch.Tensor]:
    return {"enc": torch.full((n, 1, 2, 2), logit), "dec": torch.full((n, 1, size, size), logit),
            "q": torch.full((n, 1, size, size), q)}


def test_discriminator_loss_values_signs_and_lambda_q():
    u = torch.tensor([0.25, 0.75])
    # undecided D (logits 0), perfect Q: 4 BCE terms of ln 2, no Q term
    total, parts = discriminator_loss(_d_out(2, 0.0, 0.0) | {"q": _u(u)}, _d_out(2, 0.0, 0.0) | {"q": _u(u)}, u)
    assert total.item() == pytest.approx(4 * LN2, rel=1e-6)
    assert parts["d_q"].item() == pytest.approx(0.0, abs=1e-12)
    # a D that is right (real +, fake -) has a small loss; a D that is wrong a large one
    right, _ = discriminator_loss(_d_out(2, 8.0, 0.5), _d_out(2, -8.0, 0.5), u)
    wrong, _ = discriminator_loss(_d_out(2, -8.0, 0.5), _d_out(2, 8.0, 0.5), u)
    assert right.item() < 0.1 < 30 < wrong.item()
    # lambda_Q scales L_Q = MSE(Q(real), u) + MSE(Q(fake), u); Q = 0.5 vs u = .25/.75 -> 0.0625 each
    t0, p0 = discriminator_loss(_d_out(2, 0.0, 0.5), _d_out(2, 0.0, 0.5), u, lambda_q=0.0)
    t1, p1 = discriminator_loss(_d_out(2, 0.0, 0.5), _d_out(2, 0.0, 0.5), u, lambda_q=0.05)
    assert p1["d_q"].item() == pytest.approx(0.125, rel=1e-6)
    assert (t1 - t0).item() == pytest.approx(0.05 * 0.125, abs=1e-6)


def _u(u: torch.Tensor, size: int = 8) -> torch.Tensor:
    return u.view(-1, 1, 1, 1).expand(-1, 1, size, size).clone()


def test_generator_loss_weights_apply():
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 16, 16)
    outs = [o + 0.05 for o in gt_pyramid(gt)]
    u = torch.tensor([0.1, 0.1])
    d_fake = _d_out(2, 0.0, 0.5, size=16)  # adv = 2 ln2, ar = (0.5 - 0.1)^2 = 0.16
    pix = multiscale_charbonnier(outs, gt).item()
    w = LossWeights()
    total, parts = generator_loss(outs, gt, d_fake=d_fake, u=u, weights=w)
    assert parts["g_adv"].item() == pytest.approx(2 * LN2, rel=1e-6)
    assert parts["g_ar"].item() == pytest.approx(0.16, rel=1e-5)
    assert total.item() == pytest.approx(1.0 * pix + 0.1 * 2 * LN2 + 0.05 * 0.16, rel=1e-5)
    w2 = LossWeights(pix=2.0, adv=0.5, ar=1.0)
    total2, _ = generator_loss(outs, gt, d_fake=d_fake, u=u, weights=w2)
    assert total2.item() == pytest.approx(2.0 * pix + 0.5 * 2 * LN2 + 1.0 * 0.16, rel=1e-5)
    # fooling D (fake logits high) lowers the adversarial term
    fooled, p_f = generator_loss(outs, gt, d_fake=_d_out(2, 8.0, 0.5, size=16), u=u, weights=w)
    assert p_f["g_adv"].item() < 0.01 and fooled.item() < total.item()
    # supervised: only the pixel term
    sup, p_s = generator_loss(outs, gt, weights=w)
    assert set(p_s) == {"g_pix", "g_total"} and sup.item() == pytest.approx(pix, rel=1e-6)


def test_generator_loss_gradients_reach_all_scales():
    gt = torch.rand(1, 3, 16, 16)
    outs = [o.clone().requires_grad_(True) for o in gt_pyramid(gt + 0.1)]
    d_fake = {k: v.requires_grad_(True) for k, v in _d_out(1, 0.0, 0.5, size=16).items()}
    total, _ = generator_loss(outs, gt, d_fake=d_fake, u=torch.tensor([0.3]))
    total.backward()
    assert all(o.grad is not None and o.grad.abs().sum() > 0 for o in outs)
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in d_fake.values())


def test_perceptual_off_when_lpips_unavailable(monkeypatch):
    assert build_perceptual(0.0) == (None, "off (weight 0)")
    monkeypatch.setitem(sys.modules, "lpips", None)  # import fails as it does when lpips is not installed
    module, status = build_perceptual(0.01)
    assert module is None
    assert status.startswith("off (lpips unavailable: ")


def test_perceptual_never_substituted_when_construction_fails(monkeypatch):
    class FakeLpips:
        @staticmethod
        def LPIPS(**kwargs):
            raise OSError("cannot download alexnet weights")

    monkeypatch.setitem(sys.modules, "lpips", FakeLpips)
    module, status = build_perceptual(0.01)
    assert module is None and "cannot download alexnet weights" in status


def test_loss_weights_from_mapping():
    w = LossWeights.from_mapping({"pix": 1, "adv": 0.1, "ar": 0.05, "per": 0.01, "q_d": 0.05})
    assert w == LossWeights()
    with pytest.raises(ValueError, match="unknown loss weight keys"):
        LossWeights.from_mapping({"l1": 1.0})


def test_multiscale_charbonnier_coarse_weight():
    """coarse_weight scales the 1/4 and 1/2 terms only; 1.0 is Eq. 16's plain sum."""
    torch.manual_seed(0)
    target = torch.rand(1, 3, 16, 16)
    outs = [torch.rand(1, 3, 4, 4), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16)]
    gts = gt_pyramid(target, 3)
    terms = [charbonnier(o, g) for o, g in zip(outs, gts)]
    assert torch.allclose(multiscale_charbonnier(outs, target), sum(terms))
    assert torch.allclose(multiscale_charbonnier(outs, target, coarse_weight=0.25),
                          0.25 * (terms[0] + terms[1]) + terms[2])
    assert torch.allclose(multiscale_charbonnier(outs, target, coarse_weight=0.0), terms[2])


def test_psnr_loss_is_minus_mean_per_sample_psnr():
    from facedeblur.train.losses import psnr_loss

    gt = torch.zeros(2, 3, 4, 4)
    pred = gt.clone()
    pred[0] += 0.1  # MSE 1e-2 -> PSNR 20 dB
    pred[1] += 0.01  # MSE 1e-4 -> 40 dB
    assert psnr_loss(pred, gt, floor=0.0).item() == pytest.approx(-30.0, abs=1e-4)
    assert psnr_loss(gt, gt).item() == pytest.approx(-40.0, abs=1e-4)  # identical pairs stay finite (floor)
    assert psnr_loss(gt, gt, floor=1e-6).item() == pytest.approx(-60.0, abs=1e-4)
    # each sample weighs by its own error: halving the small error gains as much as halving the large one
    a, b = pred.clone(), pred.clone()
    a[0] = 0.05
    b[1] = 0.005
    assert psnr_loss(a, gt, floor=0.0).item() == pytest.approx(psnr_loss(b, gt, floor=0.0).item(), abs=1e-3)
    outs = [o + 0.05 for o in gt_pyramid(torch.rand(2, 3, 16, 16))]
    tgt = torch.rand(2, 3, 16, 16)
    base, _ = generator_loss(outs, tgt, weights=LossWeights())
    total, parts = generator_loss(outs, tgt, weights=LossWeights(psnr=0.5))
    assert set(parts) == {"g_pix", "g_psnr", "g_total"}
    assert total.item() == pytest.approx(base.item() + 0.5 * psnr_loss(outs[-1], tgt).item(), rel=1e-5)


def test_adversarial_bce_against_the_formula():
    logits = torch.tensor([[-2.0, 0.0], [1.5, 3.0]])
    p = torch.sigmoid(logits)
    assert adversarial_bce(logits, True).item() == pytest.approx((-torch.log(p)).mean().item(), rel=1e-6)
    assert adversarial_bce(logits, False).item() == pytest.approx((-torch.log(1 - p)).mean().item(), rel=1e-6)
    assert adversarial_bce(torch.zeros(3), True).item() == pytest.approx(LN2, rel=1e-6)
    assert adversarial_bce(logits.half(), True).dtype == torch.float32
