"""CFMD-GAN generator/discriminator mechanics (random init: shapes, parameter counts, folding, gradients)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import facedeblur
from facedeblur.models.cfmd_gan import CADC, CFMDDiscriminator, ControlFusion


def _nparams(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _activate_dcn(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> None:
    """Give every CADC non-zero offset/mask convs (they are zero-initialised), so the DCNs really deform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, CADC):
                for conv in (mod.offset, mod.mask):
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std)
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * std)


def test_paper_parameter_count():
    assert _nparams(facedeblur.create_model("cfmd-gan.paper")) == 9_246_323


def test_discriminator_parameter_count():
    assert _nparams(CFMDDiscriminator()) == 40_296_448


def test_lite_output_shapes():
    torch.manual_seed(0)
    model = facedeblur.create_model("cfmd-gan.lite").eval()
    with torch.inference_mode():
        outs = model(torch.rand(2, 3, 24, 40), 0.5)
    assert [tuple(o.shape) for o in outs] == [(2, 3, 6, 10), (2, 3, 12, 20), (2, 3, 24, 40)]
    assert all(o.is_contiguous() for o in outs)


def test_u_changes_output():
    torch.manual_seed(0)
    model = facedeblur.create_model("cfmd-gan.lite").eval()
    _activate_dcn(model)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        a, b = model(x, 0.0)[-1], model(x, 1.0)[-1]
        a2 = model(x, torch.tensor([0.0]))[-1]
    assert (a - b).abs().max() > 1e-6  # exactly equal if u were ignored (random init: u's effect is small)
    torch.testing.assert_close(a, a2, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(30, 32), (32, 34)])
def test_input_not_multiple_of_four_raises(size):
    model = facedeblur.create_model("cfmd-gan.lite").eval()
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 3, *size), 0.5)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_control_fusion_fold_is_exact(n, channels_last):
    """The folded ControlFusion equals the paper's 1x1 conv on concat([x, u_f broadcast to H x W])."""
    torch.manual_seed(0)
    fuse = ControlFusion(8)
    x, ctrl = torch.randn(n, 8, 5, 7), torch.randn(n, 8)
    full = F.conv2d(torch.cat([x, ctrl[:, :, None, None].expand(-1, -1, 5, 7)], dim=1), fuse.weight)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fuse(x, ctrl), full, rtol=1e-5, atol=1e-5)


def test_inference_and_training_paths_agree():
    """Same weights: the inference (gather, channels-last) and autograd (grid_sample) DCN paths give one model."""
    torch.manual_seed(0)
    model = facedeblur.create_model("cfmd-gan.lite")
    _activate_dcn(model, std=0.2)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        inf = model.eval()(x, 0.3)
    train = model.train()(x, 0.3)
    for a, b in zip(inf, train):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-4)


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = facedeblur.create_model("cfmd-gan.lite").train()
    _activate_dcn(model)
    outs = model(torch.rand(2, 3, 16, 16), torch.tensor([0.2, 0.9]))
    sum(o.square().mean() for o in outs).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing}"


def test_bfloat16_model_close_to_float32():
    torch.manual_seed(0)
    model = facedeblur.create_model("cfmd-gan.lite").eval()
    _activate_dcn(model)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        ref = model(x, 0.5)[-1]
        out = model.to(torch.bfloat16)(x.bfloat16(), 0.5)[-1]
    assert out.dtype == torch.bfloat16
    mse = (out.float() - ref).square().mean().item()
    assert 10 * torch.log10(torch.tensor(1.0 / mse)).item() > 40.0


def test_zero_init_output_starts_as_identity():
    """zero_init_output_(): the untrained generator returns its input at every scale (init only)."""
    g = facedeblur.create_model("cfmd-gan", width=4, num_res=1, residual_gate=False).zero_init_output_()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        out4, out2, out = g(x, torch.tensor([0.0, 1.0]))
    assert torch.equal(out, x)
    assert torch.equal(out2, torch.nn.functional.interpolate(x, scale_factor=0.5, mode="nearest"))
    assert out4.shape == (2, 3, 4, 4)


def _control_change(g) -> float:
    """Relative change of the control vectors between u = 0 and u = 1 (smallest over levels)."""
    with torch.no_grad():
        e0, d0 = g.mapping(torch.tensor([0.0]))
        e1, d1 = g.mapping(torch.tensor([1.0]))
    return min(((a - b).norm() / a.norm().clamp_min(1e-12)).item() for a, b in zip(e0 + d0, e1 + d1))


def test_kaiming_mapping_init_makes_u_visible():
    """Default init: u moves the controls by well under 1 % (8 shrinking layers); kaiming_init_mapping_()
    makes the change comparable to the controls' size, and the generator's output then depends on u."""
    torch.manual_seed(0)
    g = facedeblur.create_model("cfmd-gan", width=8, num_res=1, residual_gate=False)
    assert _control_change(g) < 0.02
    g.kaiming_init_mapping_()
    assert _control_change(g) > 0.3
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        a, b = g(x, 0.0)[-1], g(x, 1.0)[-1]
    assert (a - b).abs().max().item() > 1e-3


def test_scale_output_init_shrinks_only_the_output_convs():
    torch.manual_seed(0)
    g = facedeblur.create_model("cfmd-gan", width=4, num_res=1, residual_gate=False)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    g.scale_output_init_(0.1)
    after = g.state_dict()
    for k, v in before.items():
        if k.split(".")[0] in ("head", "out2", "out4"):
            assert torch.allclose(after[k], 0.1 * v)
        else:
            assert torch.equal(after[k], v)
