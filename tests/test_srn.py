"""SRN-DeblurNet, the deblurrer of CycleGAN->SRN (facedeblur.models.srn) and its training wrapper
(facedeblur.train.methods.srn): parameter counts, the input contract, shared weights and the scale recurrence, the
ConvLSTM state carried across scales, Eq. 3, and a short run through the generic trainer."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import facedeblur
from tinymodels import BoxBlurPairs
from facedeblur.errors import InputError
from facedeblur.models import get_arch, get_card
from facedeblur.models.srn import ConvLSTMCell, SRNDeblurNet
from facedeblur.train.losses import LossWeights
from facedeblur.train.methods import get_method
from facedeblur.train.methods.srn import SRNMethod, multiscale_mse
from facedeblur.train.recipes import RecipeError
from facedeblur.train.trainer import Trainer, TrainOptions

FAST = {"workers": 0, "threads": 1, "progress": False, "log_every": 1}


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def srn_layer_arithmetic(c: int, num_res: int = 3, k: int = 5, lstm: bool = True) -> int:
    """SRN's layer list (REFERENCE_FACTS §7), counted by hand: 6 -> C in-conv, two stride-2 convs, 3 ResBlocks
    (two k x k convs) per encoder and decoder block, two 4x4 transposed convs, C -> 3 out-conv, and the ConvLSTM's
    3x3 gate conv (4C + 4C -> 4 x 4C)."""
    conv = lambda cin, cout, kk: cin * cout * kk * kk + cout  # noqa: E731
    blocks = 2 * sum(num_res * 2 * conv(ch, ch, k) for ch in (c, 2 * c, 4 * c))
    total = conv(6, c, k) + conv(c, 2 * c, k) + conv(2 * c, 4 * c, k) + blocks
    total += conv(4 * c, 2 * c, 4) + conv(2 * c, c, 4) + conv(c, 3, k)
    return total + (conv(8 * c, 16 * c, 3) if lstm else 0)


# ------------------------------------------------------------------------------------------ sizes and counts


def test_paper_variant_parameter_count() -> None:
    paper = facedeblur.create_model("cyclegan-srn.paper")
    assert isinstance(paper, SRNDeblurNet)
    assert n_params(paper) == srn_layer_arithmetic(32) == 8_061_411
    # REFERENCE_FACTS §7: ~6.88 M without the ConvLSTM, +1.18 M with it, ~8.06 M in all
    assert round(n_params(paper) / 1e6, 2) == 8.06
    no_lstm = SRNDeblurNet(lstm=False)
    assert round(n_params(no_lstm) / 1e6, 2) == 6.88 and n_params(no_lstm) == srn_layer_arithmetic(32, lstm=False)
    assert round((n_params(paper) - n_params(no_lstm)) / 1e6, 2) == 1.18
    lite = facedeblur.create_model("cyclegan-srn.lite")
    assert n_params(lite) == srn_layer_arithmetic(16) == 2_018_035


def test_weights_are_shared_across_scales() -> None:
    """One set of weights for all scales: the count does not depend on the number of scales."""
    counts = {levels: n_params(SRNDeblurNet(width=8, num_res=1, levels=levels)) for levels in (1, 2, 3)}
    assert len(set(counts.values())) == 1


def test_every_conv_is_5x5_but_the_gates_and_transposed_convs() -> None:
    net = SRNDeblurNet(width=8, num_res=1)
    kernels = {name: tuple(m.kernel_size) for name, m in net.named_modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))}
    odd = {n: k for n, k in kernels.items() if k != (5, 5)}
    assert odd == {"lstm.gates": (3, 3), "up2.0": (4, 4), "up1.0": (4, 4)}
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) for m in net.modules())


def test_card_contract_matches_the_network() -> None:
    for name in ("cyclegan-srn.paper", "cyclegan-srn.lite"):
        card = get_card(name)
        assert card.architecture == "srn" and card.task == "image" and card.family == "cyclegan-srn"
        assert not card.pretrained and not card.default  # no trained weights yet: not loadable
        with pytest.raises(facedeblur.WeightsNotAvailableError, match="no trained weights"):
            facedeblur.load(name, device="cpu")
        assert facedeblur.create_model(name).pad_multiple == card.input.pad_multiple == 16
    adapter = get_arch("srn").adapter
    assert adapter.multiscale and not adapter.control
    assert get_method("srn") is SRNMethod


@pytest.mark.parametrize("hw", [(16, 16), (32, 48), (48, 32)])
def test_forward_returns_all_scales_coarse_to_fine(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = SRNDeblurNet(width=4, num_res=1).eval()
    h, w = hw
    with torch.no_grad():
        outs = net(torch.rand(2, 3, h, w))
    assert [tuple(o.shape) for o in outs] == [(2, 3, h // 4, w // 4), (2, 3, h // 2, w // 2), (2, 3, h, w)]
    assert get_arch("srn").adapter.final(outs) is outs[-1]


@pytest.mark.parametrize("shape", [(1, 3, 24, 32), (1, 3, 32, 40), (1, 3, 8, 8), (1, 1, 32, 32), (3, 32, 32)])
def test_sizes_the_pad_multiple_does_not_allow_are_refused(shape: tuple[int, ...]) -> None:
    net = SRNDeblurNet(width=4, num_res=1)
    with pytest.raises(InputError, match="divisible by 16|RGB tensors"):
        net(torch.rand(*shape))


def test_the_deblurrer_pads_to_the_multiple() -> None:
    torch.manual_seed(0)
    card = get_card("cyclegan-srn.lite")
    model = facedeblur.create_model("cyclegan-srn.lite", width=4, num_res=1).eval()
    img = np.random.default_rng(0).integers(0, 256, (30, 26, 3), dtype=np.uint8)
    out = facedeblur.Deblurrer(model, card, "cpu").restore(img, faces=False)
    assert out.shape == img.shape and out.dtype == np.uint8


# ------------------------------------------------------------------------------------------ the recurrence


def _reference_forward(net: SRNDeblurNet, x: torch.Tensor, carry: bool) -> list[torch.Tensor]:
    """The coarse-to-fine loop written out from Tao et al. §3.1: scale i sees the blurry image and the previous
    output, both bilinearly resized to its size; the ConvLSTM state is resized to the next scale (``carry``) or
    restarted from zeros at every scale."""
    h, w = x.shape[-2:]
    outs, prev, state = [], x, None
    for k in (2, 1, 0):
        size = (h // 2 ** k, w // 2 ** k)
        rs = lambda t, s: t if tuple(t.shape[-2:]) == s else F.interpolate(t, size=s, mode="bilinear",  # noqa: E731
                                                                           align_corners=False)
        blurry, prev = rs(x, size), rs(prev, size)
        if state is not None and carry:
            q = (size[0] // 4, size[1] // 4)
            state = (rs(state[0], q), rs(state[1], q))
        prev, state = net.scale_step(blurry, prev, state if carry else None)
        outs.append(prev)
    return outs


def test_lstm_state_is_carried_across_scales() -> None:
    torch.manual_seed(0)
    net = SRNDeblurNet(width=4, num_res=1).eval()
    with torch.no_grad():  # the code's gate init (std 1e-3) makes the state tiny at init: make it matter
        net.lstm.gates.weight.normal_(0.0, 0.2)
        x = torch.rand(1, 3, 32, 32)
        outs = net(x)
        carried = _reference_forward(net, x, carry=True)
        restarted = _reference_forward(net, x, carry=False)
    for a, b in zip(outs, carried):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(outs[0], restarted[0], rtol=0, atol=1e-6)  # the coarsest scale starts at zeros anyway
    diff = (outs[-1] - restarted[-1]).abs().mean().item()
    assert diff > 1e-3, diff  # zeroing the carried state changes the full-resolution output
    no_lstm = SRNDeblurNet(width=4, num_res=1, lstm=False)
    assert no_lstm.lstm is None and len(no_lstm(x)) == 3


def test_previous_output_enters_with_a_stop_gradient() -> None:
    torch.manual_seed(0)
    net = SRNDeblurNet(width=4, num_res=1)
    outs = net(torch.rand(1, 3, 32, 32))
    # the full-resolution output depends on the coarser outputs only through their (detached) values
    grads = torch.autograd.grad(outs[-1].sum(), outs[:2], allow_unused=True)
    assert grads == (None, None)


def test_conv_lstm_cell_equations() -> None:
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3, kernel=3)
    x, c, h = torch.randn(1, 2, 5, 5), torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5)
    out, (c2, h2) = cell(x, (c, h))
    z = F.conv2d(torch.cat([x, h], 1), cell.gates.weight, cell.gates.bias, padding=1)
    i, j, f, o = z[:, 0:3], z[:, 3:6], z[:, 6:9], z[:, 9:12]
    c_ref = c * torch.sigmoid(f + 1.0) + torch.sigmoid(i) * torch.tanh(j)  # forget bias 1.0
    torch.testing.assert_close(c2, c_ref)
    torch.testing.assert_close(h2, torch.tanh(c_ref) * torch.sigmoid(o))
    assert out is h2
    zero_c, zero_h = cell.zero_state(x)
    assert zero_c.shape == (1, 3, 5, 5) and not zero_c.any() and not zero_h.any()


# ------------------------------------------------------------------------------------------ loss and training


def test_multiscale_mse_is_eq_3_with_unit_weights() -> None:
    target = torch.rand(2, 3, 16, 16)
    pyramid = [F.interpolate(target, size=(s, s), mode="bilinear", align_corners=False) for s in (4, 8)] + [target]
    zero, parts = multiscale_mse(pyramid, target)
    assert zero.item() == pytest.approx(0.0, abs=1e-12) and set(parts) >= {"g_mse_0", "g_mse_2", "g_total"}
    shifted = [p + 0.1 for p in pyramid]
    total, _ = multiscale_mse(shifted, target)
    assert total.item() == pytest.approx(3 * 0.01, rel=1e-5)  # three scales, each (0.1)^2
    total, _ = multiscale_mse(shifted, target, LossWeights(pix=2.0, pix_coarse=0.5))
    assert total.item() == pytest.approx(2.0 * (0.01 + 0.5 * 2 * 0.01), rel=1e-5)



def _Pairs(n: int, seed: int) -> BoxBlurPairs:
    return BoxBlurPairs(n, seed, taps=5)


def test_two_steps_through_the_generic_trainer(tmp_path) -> None:
    tr = Trainer("cyclegan-srn.lite", _Pairs(4, 0), _Pairs(2, 1), out_dir=tmp_path / "run",
                 arch_overrides={"width": 4, "num_res": 1},
                 recipe_overrides={"crop": 32, "batch": 2, "epoch_samples": 4, "optimizer": {"lr": 1e-3}},
                 options=TrainOptions(**{**FAST, "max_steps": 2, "val_every": 0}))
    assert isinstance(tr.method, SRNMethod) and not tr.gan and tr.d is None
    assert tr.method.inference_network(tr.g) is tr.g and tr.method.method_state() == {}  # the base hooks' defaults
    with pytest.raises(RecipeError, match="does not keep"):
        tr.method.load_method_state({"pool": []})
    assert tr.perceptual_status.startswith("off")
    before = {k: v.clone() for k, v in tr.g.state_dict().items()}
    res = tr.run()
    assert res.step == 2 and res.status == "max_steps" and res.last_validation["n"] == 2
    assert any(not torch.equal(before[k], v) for k, v in tr.g.state_dict().items())
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in log if r["type"] == "train"]
    assert len(train_rows) == 2 and all({"g_mse_0", "g_mse_1", "g_mse_2", "g_total"} <= set(r) for r in train_rows)
    d = facedeblur.load(f"local-dir:{tmp_path / 'run' / 'export'}", device="cpu")
    assert d.card.architecture == "srn" and d.card.training["record"]["iterations"] == 2
    out = d.restore(np.zeros((20, 20, 3), np.uint8), faces=False)  # padded to 32 and cropped back
    assert out.shape == (20, 20, 3)
