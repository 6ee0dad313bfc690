"""Chrysos et al., Motion Deblurring of Faces (facedeblur.models.chrysos, facedeblur.train.methods.chrysos): both
stages' shapes and parameter counts, the shared decoder, the composite, the losses of Eq. 2-7, the discriminator and
2-step runs of each stage through the generic trainer.

Parameter counts of the paper variants are recomputed here from the layer descriptions, independently of the model
code:

* Stage 1, Newell's hourglass (REFERENCE_FACTS §9; width f = 256, depth 4, 8 stacks): the bottleneck ``Residual``
  has BN(cin) + 1x1 (cin -> f/2, bias) + BN + 3x3 (f/2 -> f/2, bias) + BN + 1x1 (f/2 -> cout, bias), plus a 1x1
  projection (bias) when cin != cout. An hourglass of depth n has 3 Residuals + (an hourglass of depth n-1, or one
  Residual at n = 1). Then the stem (7x7 conv 3 -> f/4 + BN, Residuals f/4 -> f/2 -> f/2 -> f), per stack (hourglass,
  Residual, 1x1 conv + BN, 1x1 prediction to 3), the merges between stacks (1x1 f -> f and 3 -> f), and the image
  head (Residuals f -> f/2 -> f/4, BN, 1x1 to 3). This gives 25,503,899.
* Stage 2, Table 3 with w = 64 and the inferred U-Net skips (encoder layers 1 and 2 concatenated to the inputs of
  decoder layers 8 and 7). Each layer is a k x k conv (no bias when BN follows) + BN (2 per channel). The encoder:
  6 -> 64 (4x4, bias, no BN), 128, 256, 512, 512, 512, 512 (4x4), 256 (1x1). The decoder: 256 -> 1024 (1x1), 512,
  512, 512, 256, 128, then 128 + 128 -> 64, then 64 + 64 -> 3 (4x4, bias, no BN). The residual shortcuts are
  parameter-free. G_bl = 35,413,187; G_s's encoder (3 input channels) adds 15,475,008, so the two-pathway
  generator has 50,888,195.
* The 5-layer discriminator (widths inferred, pix2pix layout): 6 -> 64 (bias), 128, 256, 512 (BN), 512 -> 1 (bias),
  all 4x4: 2,768,705.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

import facedeblur
from facedeblur.errors import CapabilityError, InputError, ModelNotFoundError, WeightsNotAvailableError
from facedeblur.models import get_arch, get_card, list_archs
from facedeblur.models.chrysos import Chrysos, ChrysosCGAN, ChrysosDiscriminator, ChrysosHourglass
from facedeblur.train import methods
from facedeblur.train.methods.chrysos import (ChrysosCGANMethod, ChrysosHourglassMethod, ChrysosMethod, CGANWeights,
                                              cgan_weights, content_loss, discriminator_loss, generator_loss,
                                              hourglass_loss)
from facedeblur.train.recipes import RecipeError, resolve_recipe
from facedeblur.train.trainer import Trainer, TrainOptions

FAST = {"workers": 0, "threads": 1, "progress": False, "log_every": 1, "val_every": 0, "ckpt_every": 0}
TINY_HG = {"width": 16, "stacks": 2, "depth": 2}
TINY_CGAN = {"width": 4}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def meta(builder, **kw) -> nn.Module:
    with torch.device("meta"):
        return builder(**kw)


# ------------------------------------------------------------------------------------------ parameter counts


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _residual(cin: int, cout: int) -> int:
    mid = cout // 2
    n = 2 * cin + _conv(cin, mid, 1) + 2 * mid + _conv(mid, mid, 3) + 2 * mid + _conv(mid, cout, 1)
    return n + (_conv(cin, cout, 1) if cin != cout else 0)


def _hourglass(depth: int, f: int) -> int:
    return 3 * _residual(f, f) + (_hourglass(depth - 1, f) if depth > 1 else _residual(f, f))


def hourglass_arithmetic(f: int, stacks: int, depth: int) -> int:
    stem = _conv(3, f // 4, 7) + 2 * (f // 4) + _residual(f // 4, f // 2) + _residual(f // 2, f // 2) + \
        _residual(f // 2, f)
    stack = _hourglass(depth, f) + _residual(f, f) + _conv(f, f, 1) + 2 * f + _conv(f, 3, 1)
    merges = (stacks - 1) * (_conv(f, f, 1) + _conv(3, f, 1))
    head = _residual(f, f // 2) + _residual(f // 2, f // 4) + 2 * (f // 4) + _conv(f // 4, 3, 1)
    return stem + stacks * stack + merges + head


def _layer(cin: int, cout: int, k: int, bn: bool) -> int:
    return _conv(cin, cout, k, bias=not bn) + (2 * cout if bn else 0)


def cgan_arithmetic(w: int, in_channels: int = 6) -> tuple[int, int, int]:
    """(encoder of G_bl, decoder, encoder of G_s) from Table 3 with the U-Net skips of encoder layers 1 and 2."""
    def encoder(cin: int) -> int:
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w, 8 * w]
        n = _layer(cin, widths[0], 4, bn=False)
        n += sum(_layer(a, b, 4, bn=True) for a, b in zip(widths, widths[1:]))
        return n + _layer(8 * w, 4 * w, 1, bn=True)

    decoder = (_layer(4 * w, 16 * w, 1, True) + _layer(16 * w, 8 * w, 4, True) + _layer(8 * w, 8 * w, 4, True)
               + _layer(8 * w, 8 * w, 4, True) + _layer(8 * w, 4 * w, 4, True) + _layer(4 * w, 2 * w, 4, True)
               + _layer(2 * w + 2 * w, w, 4, True) + _layer(w + w, 3, 4, bn=False))
    return encoder(in_channels), decoder, encoder(3)


def discriminator_arithmetic(w: int, cin: int = 6) -> int:
    return (_conv(cin, w, 4) + _layer(w, 2 * w, 4, True) + _layer(2 * w, 4 * w, 4, True)
            + _layer(4 * w, 8 * w, 4, True) + _conv(8 * w, 1, 4))


def test_stage1_parameter_counts() -> None:
    assert hourglass_arithmetic(256, 8, 4) == 25_503_899
    paper = meta(facedeblur.create_model, name="chrysos-hg.paper")
    assert isinstance(paper, ChrysosHourglass) and n_params(paper) == 25_503_899
    assert len(paper.stacks) == 8 and paper.pad_multiple == 64
    lite = meta(facedeblur.create_model, name="chrysos-hg.lite")
    assert n_params(lite) == hourglass_arithmetic(64, 2, 4) == 429_161


def test_stage2_parameter_counts() -> None:
    enc_bl, dec, enc_s = cgan_arithmetic(64)
    assert (enc_bl + dec, enc_s) == (35_413_187, 15_475_008)
    full = meta(ChrysosCGAN)  # the paper's two-pathway generator
    assert n_params(full) == enc_bl + dec + enc_s == 50_888_195
    assert n_params(full.encoder_bl) == enc_bl and n_params(full.decoder) == dec
    assert n_params(meta(ChrysosCGAN, autoencoder=False)) == n_params(full.regression_only()) == 35_413_187
    assert n_params(meta(ChrysosDiscriminator)) == discriminator_arithmetic(64) == 2_768_705
    # the composites of the zoo: stage 1 + G_bl (the shipped network has no G_s encoder)
    paper = meta(facedeblur.create_model, name="chrysos.paper")
    assert isinstance(paper, Chrysos) and paper.cgan.encoder_s is None
    assert n_params(paper) == 25_503_899 + 35_413_187 == 60_917_086 and paper.pad_multiple == 128
    lite = meta(facedeblur.create_model, name="chrysos.lite")
    enc_bl16, dec16, enc_s16 = cgan_arithmetic(16)
    assert n_params(lite) == hourglass_arithmetic(64, 2, 4) + enc_bl16 + dec16 == 2_646_940
    assert enc_s16 == 968_784


# ------------------------------------------------------------------------------------------ networks


def test_stage1_shapes_and_intermediate_outputs() -> None:
    torch.manual_seed(0)
    hg = ChrysosHourglass(**TINY_HG).eval()
    assert hg.pad_multiple == 16
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        out = hg(x)
        outs = hg(x, intermediate=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert [tuple(o.shape) for o in outs] == [(2, 3, 8, 12)] * 2 + [(2, 3, 32, 48)]
    assert torch.equal(outs[-1], out)
    assert get_arch("chrysos_hg").task == "image" and get_arch("chrysos_hg").discriminator is None


def test_stage2_shapes_and_pathways() -> None:
    torch.manual_seed(0)
    g = ChrysosCGAN(**TINY_CGAN).eval()
    x, s = torch.rand(2, 6, 128, 128), torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        y = g(x)
        both = g(x, sharp=s)
    assert y.shape == (2, 3, 128, 128) and 0 <= y.min() and y.max() <= 1  # tanh output mapped to [0, 1]
    assert torch.equal(both.restored, y) and both.reconstructed.shape == s.shape
    assert torch.equal(both.reconstructed, g.reconstruct(s))
    # the latent is 1/128 of the input (Table 3: seven stride-2 layers), width 4w
    latent, skips = g.encoder_bl(x * 2 - 1)
    assert latent.shape == (2, 16, 1, 1) and sorted(skips) == [1, 2]
    assert skips[1].shape == (2, 4, 128, 128) and skips[2].shape == (2, 8, 64, 64)
    assert ChrysosCGAN.pad_multiple == 128
    # dropout (keep 0.5) after decoder layers 1-3 only; off in eval mode: deterministic
    drops = [layer.drop for layer in g.decoder.layers]
    assert [d is not None and d.p == 0.5 for d in drops] == [True] * 3 + [False] * 5
    assert all(d is None for d in [layer.drop for layer in ChrysosCGAN(width=2, dropout=False).decoder.layers])
    with torch.no_grad():
        assert torch.equal(g(x), y)
    cgan_only = ChrysosCGAN(in_channels=3, width=4, autoencoder=False).eval()
    assert cgan_only.encoder_s is None and cgan_only(s).shape == s.shape
    with pytest.raises(CapabilityError, match="no autoencoder"):
        cgan_only.g_s


@pytest.mark.parametrize("net, bad, match", [
    (lambda: ChrysosHourglass(**TINY_HG), torch.rand(1, 3, 40, 32), "divisible by 16"),
    (lambda: ChrysosHourglass(**TINY_HG), torch.rand(1, 1, 32, 32), r"\(N, 3, H, W\)"),
    (lambda: ChrysosCGAN(**TINY_CGAN), torch.rand(1, 3, 128, 128), r"\(N, 6, H, W\)"),
    (lambda: ChrysosCGAN(**TINY_CGAN), torch.rand(1, 6, 128, 192), "divisible by 128"),
    (lambda: Chrysos(TINY_HG, TINY_CGAN), torch.rand(1, 3, 64, 64), "divisible by 128"),
    (lambda: Chrysos(TINY_HG, TINY_CGAN), torch.rand(1, 6, 128, 128), r"\(N, 3, H, W\)"),
    (lambda: Chrysos(TINY_HG, TINY_CGAN), torch.rand(3, 128, 128), r"\(N, 3, H, W\)"),
])
def test_bad_inputs_raise_typed_errors(net, bad: torch.Tensor, match: str) -> None:
    with pytest.raises(InputError, match=match):
        net()(bad)


def test_the_decoder_is_shared_by_both_pathways() -> None:
    torch.manual_seed(0)
    g = ChrysosCGAN(**TINY_CGAN)
    bl, s_path = g.g_bl, g.g_s
    assert bl.decoder is s_path.decoder is g.decoder and bl.encoder is not s_path.encoder
    dec_bl, dec_s = dict(bl.decoder.named_parameters()), dict(s_path.decoder.named_parameters())
    assert dec_bl and all(dec_bl[k] is dec_s[k] and dec_bl[k].data_ptr() == dec_s[k].data_ptr() for k in dec_bl)
    # one set of tensors: the state dict holds the decoder once, and no parameter is counted twice
    keys = list(g.state_dict())
    assert sum(k.startswith("decoder.") for k in keys) == len(g.decoder.state_dict())
    assert n_params(g) == n_params(g.encoder_bl) + n_params(g.encoder_s) + n_params(g.decoder)
    # a gradient step through the autoencoder pathway alone changes the regression pathway's decoder
    before = {k: v.detach().clone() for k, v in g.state_dict().items()}
    opt = torch.optim.SGD(g.parameters(), lr=0.1)
    sharp = torch.rand(2, 3, 128, 128)
    F.l1_loss(g.reconstruct(sharp), sharp).backward()
    assert all(p.grad is None for p in g.encoder_bl.parameters())
    opt.step()
    after = g.state_dict()
    changed = {k for k in keys if not torch.equal(before[k], after[k])}
    assert any(k.startswith("decoder.") and k.endswith("weight") for k in changed)
    assert not any(k.startswith("encoder_bl.") for k in changed)
    assert all(torch.equal(after[f"decoder.{k}"], v) for k, v in g.g_bl.decoder.state_dict().items())
    # the inference view shares the same modules and has exactly the regression pathway's tensors
    view = g.regression_only()
    assert view.encoder_s is None and view.decoder is g.decoder and view.encoder_bl is g.encoder_bl
    assert g.encoder_s is not None and set(view.state_dict()) == {k for k in keys if not k.startswith("encoder_s.")}


def test_composite_equals_stage2_applied_to_stage1() -> None:
    torch.manual_seed(0)
    net = Chrysos(TINY_HG, TINY_CGAN).eval()
    assert get_arch("chrysos").task == "pipeline" and net.cgan.encoder_s is None and net.cgan.in_channels == 6
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        y = net(x)
        stages = net.stages(x)
        h = net.hg(x)
        ref = net.cgan(torch.cat([x, h], dim=1))
    assert torch.equal(stages.hourglass, h) and torch.equal(stages.restored, y) and stages.reconstructed is None
    assert torch.allclose(y, ref, atol=0, rtol=0)
    # the stage-1 network alone is the same module a chrysos-hg zoo entry builds
    assert type(net.hg) is type(get_arch("chrysos_hg").builder(**TINY_HG))
    with pytest.raises(ValueError, match="6 channels"):
        Chrysos(TINY_HG, {**TINY_CGAN, "in_channels": 3})


def test_discriminator_on_real_and_fake_batches() -> None:
    torch.manual_seed(0)
    d = ChrysosDiscriminator(width=4)
    assert len(d.layers) + 1 == 5  # five conv layers
    real, blurry = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    fake = F.avg_pool2d(real, 5, 1, 2)  # smooth "generated" faces
    logits, pi = d(real, blurry, features=True)
    assert logits.shape == (4, 1, 6, 6) and pi.shape == (4, 32, 7, 7)  # 1/8 size, then two stride-1 4x4 convs
    assert torch.equal(d(real, blurry), logits)
    with pytest.raises(InputError, match="conditional"):
        d(real)
    assert ChrysosDiscriminator(width=4, cond_channels=0)(real).shape == (4, 1, 6, 6)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.5, 0.9))
    first = None
    for _ in range(8):  # real and fake in one batch, as the wrapper does
        out = d(torch.cat([real, fake]), torch.cat([blurry, blurry]))
        loss = discriminator_loss(out[:4], out[4:])
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.eval()
    with torch.no_grad():
        assert d(real, blurry).mean() > d(fake, blurry).mean() and loss.item() < first


# ------------------------------------------------------------------------------------------ losses


def test_losses_follow_eq_2_to_7() -> None:
    torch.manual_seed(0)
    fake, sharp, rec = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    l1, lgrad = content_loss(fake, sharp)
    dx = (fake[..., 1:] - fake[..., :-1]) - (sharp[..., 1:] - sharp[..., :-1])
    dy = (fake[..., 1:, :] - fake[..., :-1, :]) - (sharp[..., 1:, :] - sharp[..., :-1, :])
    assert l1 == pytest.approx((fake - sharp).abs().mean().item())
    assert lgrad == pytest.approx(dx.abs().mean().item() + dy.abs().mean().item())
    d_fake, pi_f, pi_r = torch.randn(2, 1, 3, 3), torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    w = CGANWeights(adv=1.0, content=100.0, grad=100.0, proj=8.0, rec=100.0)
    total, parts = generator_loss(fake, sharp, rec, w, d_fake=d_fake, pi_fake=pi_f, pi_real=pi_r)
    adv = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    want = adv + 100 * l1 + 100 * lgrad + 8 * (pi_f - pi_r).abs().mean() + 100 * (rec - sharp).abs().mean()
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert set(parts) == {"g_l1", "g_grad", "g_rec", "g_adv", "g_proj", "g_pix", "g_total"}
    sup, sup_parts = generator_loss(fake, sharp, rec, w)  # no D: L_cGAN and L_p drop out
    assert "g_adv" not in sup_parts and sup.item() == pytest.approx((want - adv - 8 * (pi_f - pi_r).abs().mean()).item(),
                                                                    rel=1e-6)
    # Eq. 2 plus the stacks' intermediate supervision against the 4x4-averaged target
    outs = [torch.rand(2, 3, 2, 2), torch.rand(2, 3, 2, 2), fake]
    loss, hg_parts = hourglass_loss(outs, sharp, pix=1.0, intermediate=0.5)
    small = F.avg_pool2d(sharp, 4)
    mid = ((outs[0] - small).abs().mean() + (outs[1] - small).abs().mean()) / 2
    assert loss.item() == pytest.approx((l1 + 0.5 * mid).item(), rel=1e-6) and "g_stacks" in hg_parts
    assert hourglass_loss(outs, sharp, intermediate=0.0)[0].item() == pytest.approx(l1.item())


def test_zoo_recipes_carry_the_paper_values() -> None:
    card = get_card("chrysos.paper")
    r = resolve_recipe(card.training, pad_multiple=card.input.pad_multiple)
    assert cgan_weights(r) == CGANWeights(adv=1.0, content=100.0, grad=100.0, proj=8.0, rec=100.0)  # §5.1
    assert r.crop == 256 and r.epochs == 60 and r.method["stage1"] == "chrysos-hg.paper"
    assert r.optimizer["betas"] == [0.5, 0.9] and r.batch == 64  # RoCGAN code (the paper names none)
    assert r.data["vla_fraction"] == 1.0 and r.data["synth_fraction"] == 0.0  # VLA windows (§3.4)
    hg = resolve_recipe(get_card("chrysos-hg.paper").training, pad_multiple=64)
    assert hg.loss.pix == 1.0 and hg.data["synth_fraction"] == 1.0 and hg.data["synth_frames"] == 0.0
    assert "method" in r.to_dict() and "method" not in hg.to_dict()  # empty method options are not recorded
    with pytest.raises(RecipeError, match="'method' must be a mapping"):
        resolve_recipe({"method": [1]})


def test_zoo_cards_without_weights() -> None:
    """No trained weights yet: no variant is a family default, and every variant refuses to load."""
    assert facedeblur.list_models("chrysos") == ["chrysos.lite", "chrysos.paper"]
    assert facedeblur.list_models("chrysos-hg") == ["chrysos-hg.lite", "chrysos-hg.paper"]
    for family in ("chrysos", "chrysos-hg"):
        assert not any(facedeblur.model_info(n).default for n in facedeblur.list_models(family))
        with pytest.raises(ModelNotFoundError, match=f"{family}.lite"):
            facedeblur.model_info(family)
    for name in facedeblur.list_models("chrysos*"):
        card = facedeblur.model_info(name)
        assert card.paper.arxiv == "1803.03330" and not card.pretrained and card.training
        assert card.input.pad_multiple == (128 if card.architecture == "chrysos" else 64)
        with pytest.raises(WeightsNotAvailableError):
            facedeblur.load(name, device="cpu")
    assert {"chrysos", "chrysos_hg", "chrysos_cgan"} <= set(list_archs())
    assert {"chrysos", "chrysos_hg", "chrysos_cgan"} <= set(methods.list_methods())


# ------------------------------------------------------------------------------------------ training


class BlurPairs(Dataset):
    """Smooth random faces-sized images blurred by a box filter: ``pair`` samples."""

    kind = "pair"

    def __init__(self, n: int = 4, size: int = 128, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        coarse = torch.rand(n, 3, size // 16, size // 16, generator=g)
        self.sharp = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        self.blurry = F.avg_pool2d(F.pad(self.sharp, (2, 2, 2, 2), mode="reflect"), 5, stride=1)

    def __len__(self) -> int:
        return len(self.sharp)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"blurry": self.blurry[i].clone(), "sharp": self.sharp[i].clone()}


def _card(name: str, arch_kwargs: dict, pad: int, **training):
    base = get_card(name)
    recipe = {**base.training, "crop": 128, "batch": 2, "epoch_samples": 4, "epochs": 1, **training}
    return dataclasses.replace(base, name=f"{name}-test", arch_kwargs=arch_kwargs, training=recipe,
                               input=dataclasses.replace(base.input, pad_multiple=pad))


def _states_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage1_trains_two_steps(tmp_path) -> None:
    card = _card("chrysos-hg.lite", TINY_HG, 16, crop=32)
    tr = Trainer(card, BlurPairs(4, 32), BlurPairs(2, 32, seed=1), out_dir=tmp_path / "hg",
                 options=TrainOptions(**{**FAST, "max_steps": 2}))
    assert isinstance(tr.method, ChrysosHourglassMethod) and not tr.gan and tr.d is None
    before = {k: v.clone() for k, v in tr.g.state_dict().items()}
    res = tr.run()
    assert res.step == 2 and not _states_equal(before, tr.g.state_dict())
    log = [json.loads(x) for x in (tmp_path / "hg" / "log.jsonl").read_text().splitlines()]
    assert {"g_l1", "g_stacks", "g_total"} <= set(next(r for r in log if r["type"] == "train"))
    d = facedeblur.load(f"local-dir:{tmp_path / 'hg' / 'export'}", device="cpu")
    img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    assert d.restore(img, faces=False).shape == img.shape
    with pytest.raises(RecipeError, match="unknown keys"):
        Trainer(_card("chrysos-hg.lite", TINY_HG, 16, crop=32, method={"rec": 1.0}), BlurPairs(2, 32), None,
                out_dir=tmp_path / "bad", options=TrainOptions(**FAST))


def test_stage2_trains_two_steps_with_stage1_frozen(tmp_path) -> None:
    torch.manual_seed(0)
    stage1 = ChrysosHourglass(**TINY_HG)
    stage1_file = tmp_path / "stage1.safetensors"
    save_file({k: v.contiguous() for k, v in stage1.state_dict().items()}, str(stage1_file))
    kwargs = {"hg": TINY_HG, "cgan": TINY_CGAN}
    card = _card("chrysos.lite", kwargs, 128, ema=0.5, discriminator={"width": 4},
                 method={"stage1": str(stage1_file), "grad": 100.0, "proj": 8.0, "rec": 100.0})
    tr = Trainer(card, BlurPairs(4), BlurPairs(2, seed=1), out_dir=tmp_path / "run",
                 options=TrainOptions(**{**FAST, "max_steps": 2}))
    assert isinstance(tr.method, ChrysosMethod) and tr.gan and isinstance(tr.d, ChrysosDiscriminator)
    g = tr.g
    assert isinstance(g, Chrysos) and g.cgan.encoder_s is not None  # trained with G_s ...
    assert tr.method.inference_network(g).cgan.encoder_s is None  # ... shipped without it
    assert _states_equal(g.hg.state_dict(), stage1.state_dict()) and not any(p.requires_grad for p in g.hg.parameters())
    before_g = {k: v.clone() for k, v in g.state_dict().items()}
    before_d = {k: v.clone() for k, v in tr.d.state_dict().items()}
    res = tr.run()
    assert res.step == 2
    after = g.state_dict()
    assert _states_equal(g.hg.state_dict(), stage1.state_dict())  # frozen: weights and BN statistics unchanged
    for part in ("cgan.encoder_bl.", "cgan.decoder.", "cgan.encoder_s."):
        assert any(not torch.equal(before_g[k], after[k]) for k in after if k.startswith(part)), part
    assert not _states_equal(before_d, tr.d.state_dict())
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"d_total", "g_adv", "g_proj", "g_rec", "g_grad", "g_l1"} <= set(next(r for r in log if r["type"] == "train"))
    # the export is the shipped composite (stage 1 + G_bl) and restores through facedeblur.load
    exported = load_file(str(tmp_path / "run" / "export" / "model.safetensors"))
    assert set(exported) == set(Chrysos(**kwargs).state_dict()) and not any("encoder_s" in k for k in exported)
    d = facedeblur.load(f"local-dir:{tmp_path / 'run' / 'export'}", device="cpu")
    assert d.card.task == "pipeline"
    img = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)
    assert d.restore(img, faces=False).shape == img.shape
    # stage 2 without a stage 1 is refused with the fix
    no_stage1 = _card("chrysos.lite", kwargs, 128, method={})
    with pytest.raises(RecipeError, match="method.stage1"):
        Trainer(no_stage1, BlurPairs(2), None, out_dir=tmp_path / "none", options=TrainOptions(**FAST))


def test_cgan_only_ablation_arm_trains_one_step(tmp_path) -> None:
    card = dataclasses.replace(get_card("chrysos.lite"), name="chrysos-cgan.test", architecture="chrysos_cgan",
                               task="image", arch_kwargs={"in_channels": 3, "width": 4},
                               training={**get_card("chrysos.lite").training, "crop": 128, "batch": 2,
                                         "epoch_samples": 2, "epochs": 1, "discriminator": {"width": 4},
                                         "method": {}})
    tr = Trainer(card, BlurPairs(2), None, out_dir=tmp_path / "run", options=TrainOptions(**{**FAST, "max_steps": 1}))
    assert isinstance(tr.method, ChrysosCGANMethod) and tr.gan and tr.g.encoder_s is not None
    assert tr.run().step == 1
    with pytest.raises(RecipeError, match="in_channels: 3"):
        Trainer(dataclasses.replace(card, arch_kwargs={"width": 4}), BlurPairs(2), None, out_dir=tmp_path / "six",
                options=TrainOptions(**FAST))
