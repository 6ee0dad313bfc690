"""DCNv2 (``facedeblur.models.layers.deform_conv2d``) against the loop reference, gradients, dtypes, helpers."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from facedeblur.models import layers as L
from facedeblur.models.layers import DeformConv2d, SqueezeExcite, deform_conv2d, deform_conv2d_reference


def _out_size(size: int, stride: int, padding: int, dilation: int, k: int = 3) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _case(n=2, c=3, h=7, w=9, c_out=4, stride=1, padding=1, dilation=1, mask=True, bias=True, spread=3.0,
          dtype=torch.float64, seed=0):
    """Random DCN inputs whose offsets push many samples outside the image (spread up to ~3 pixels), plus
    some samples that land exactly on pixel centres and exactly on the image border (floor/edge cases)."""
    g = torch.Generator().manual_seed(seed)
    ho, wo = _out_size(h, stride, padding, dilation), _out_size(w, stride, padding, dilation)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c, 3, 3, generator=g, dtype=dtype)
    offset = torch.randn(n, 18, ho, wo, generator=g, dtype=dtype) * spread
    offset[:, :, 0, 0] = torch.round(offset[:, :, 0, 0])  # integer offsets: samples exactly on pixels
    offset[:, 0, -1, -1] = float(h)  # dy pushes the first tap of the last position far below the image
    offset[:, 1, 0, -1] = -float(w) - 0.5  # dx pushes it left of the image
    m = torch.rand(n, 9, ho, wo, generator=g, dtype=dtype) if mask else None
    b = torch.randn(c_out, generator=g, dtype=dtype) if bias else None
    return x, offset, weight, m, b, dict(stride=stride, padding=padding, dilation=dilation)


CASES = [
    dict(),  # batch 2, non-square, mask + bias
    dict(n=1, h=8, w=8, stride=2, mask=False, bias=False),
    dict(n=2, h=9, w=6, stride=2, padding=0, bias=False),
    dict(n=1, c=2, h=6, w=7, c_out=3, padding=2, dilation=2, mask=True, bias=True),
    dict(n=3, c=1, h=5, w=5, c_out=2, mask=False, bias=True, spread=6.0),
]


@pytest.mark.parametrize("chunk", [1, None], ids=["chunk-per-row", "default-chunk"])
@pytest.mark.parametrize("path", ["gather", "grid_sample"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_paths_match_reference(case, path, chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(L, "_CHUNK_ELEMENTS", chunk)  # one output row per chunk: exercises chunk seams
    x, off, w, m, b, kw = _case(**case)
    ref = deform_conv2d_reference(x, off, w, m, b, **kw)
    fn = L._deform_gather if path == "gather" else L._deform_grid_sample
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        args = [t if t is None else t.to(dtype) for t in (x, off, w, m, b)]
        out = fn(*args, kw["stride"], kw["padding"], kw["dilation"])
        assert out.shape == ref.shape and out.dtype == dtype
        err = (out.double() - ref).abs().max().item()
        assert err < tol * max(1.0, ref.abs().max().item()), f"{path} {dtype}: max error {err}"


def test_public_function_dispatches_and_agrees():
    x, off, w, m, b, kw = _case(dtype=torch.float32)
    with torch.no_grad():
        inference = deform_conv2d(x, off, w, m, b, **kw)  # gather path
    train = deform_conv2d(x, off, w.requires_grad_(), m, b, **kw)  # grid_sample path
    assert train.requires_grad and not inference.requires_grad
    torch.testing.assert_close(inference, train.detach(), rtol=1e-5, atol=1e-5)
    ref = deform_conv2d_reference(x, off, w.detach(), m, b, **kw)
    torch.testing.assert_close(inference.double(), ref, rtol=1e-5, atol=2e-5)


def test_layouts_and_noncontiguous_inputs():
    """channels_last and strided (sliced) inputs give the same numbers as contiguous ones."""
    x, off, w, m, b, kw = _case(n=2, c=4, h=8, w=8, dtype=torch.float32)
    ref = deform_conv2d_reference(x, off, w, m, b, **kw)
    om = torch.cat([off, m], 1).contiguous(memory_format=torch.channels_last)  # like CADC's fused conv
    with torch.no_grad():
        out = deform_conv2d(x.contiguous(memory_format=torch.channels_last), om[:, :18], w, om[:, 18:], b, **kw)
        x_nc, off_nc = torch.cat([x, x], 1)[:, 4:], torch.cat([off, off], 1)[:, 18:]  # non-contiguous views
        assert not x_nc.is_contiguous() and not off_nc.is_contiguous()
        out2 = deform_conv2d(x_nc, off_nc, w, m, b, **kw)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(out2.double(), ref, rtol=1e-5, atol=2e-5)


def test_zero_offsets_equal_regular_conv():
    x, off, w, _, b, kw = _case(n=2, h=10, w=7, dtype=torch.float32)
    with torch.no_grad():
        out = deform_conv2d(x, torch.zeros_like(off), w, None, b, **kw)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, w, b, padding=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["gather", "grid_sample"])
def test_bfloat16_close_to_float32(path):
    x, off, w, m, b, kw = _case(n=2, c=8, h=12, w=10, c_out=8, dtype=torch.float32, spread=2.0)
    fn = L._deform_gather if path == "gather" else L._deform_grid_sample
    args = [t.to(torch.bfloat16) for t in (x, off, w, m, b)]
    out = fn(*args, kw["stride"], kw["padding"], kw["dilation"])
    assert out.dtype == torch.bfloat16
    # against float32 on the same (bf16-rounded) inputs: only the computation's rounding is left
    ref = fn(*[t.float() for t in args], kw["stride"], kw["padding"], kw["dilation"])
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert rel < 1e-2, f"bf16 relative error {rel}"
    # against float32 on the original inputs: input rounding (offsets to ~3 significant digits) included
    ref32 = fn(x, off, w, m, b, kw["stride"], kw["padding"], kw["dilation"])
    assert ((out.float() - ref32).norm() / ref32.norm()).item() < 2e-2


def test_bfloat16_sampling_positions_exact_on_large_images():
    """Sample positions stay float32 in 16-bit mode: a 1-pixel shift on a 256-wide image is a shift of exactly 1."""
    x = torch.arange(256.0).view(1, 1, 1, 256).expand(1, 1, 3, 256).contiguous()
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 1, 1] = 1.0  # centre tap only: out = x sampled at (p + offset of the centre tap)
    off = torch.zeros(1, 18, 3, 256)
    off[:, 9] = 1.0  # dx of the centre tap
    for fn in (L._deform_gather, L._deform_grid_sample):
        out = fn(x.bfloat16(), off.bfloat16(), w.bfloat16(), None, None, 1, 1, 1).float()
        want = torch.cat([torch.arange(1.0, 256.0), torch.zeros(1)]).bfloat16().float()
        torch.testing.assert_close(out[0, 0, 1], want, rtol=0, atol=0)


@pytest.mark.parametrize("with_mask", [True, False])
def test_gradcheck(with_mask):
    """Analytic gradients (grid_sample path, used in training) w.r.t. input, offset, mask, weight, bias."""
    x, off, w, m, b, kw = _case(n=1, c=2, h=4, w=5, c_out=2, spread=1.5, mask=with_mask, seed=3)
    off = off + 0.31  # keep samples away from integer positions, where bilinear sampling has kinks
    off[:, 0, -1, -1] = 9.0
    tensors = [t.requires_grad_() for t in (x, off, w, b)] + ([m.requires_grad_()] if with_mask else [])

    def fn(x_, off_, w_, b_, *rest):
        return deform_conv2d(x_, off_, w_, rest[0] if rest else None, b_, **kw)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-5)


def test_grad_mode_selects_the_autograd_path():
    """With grad enabled and a tensor requiring grad, the (out=-based, inference-only) gather is not used."""
    x, off, w, m, b, kw = _case(n=1, c=2, h=5, w=5, c_out=2, seed=5, dtype=torch.float32)
    m.requires_grad_()
    y = deform_conv2d(x, off, w, m, b, **kw)
    y.square().sum().backward()
    assert m.grad is not None and m.grad.abs().sum() > 0
    with torch.inference_mode():
        y2 = deform_conv2d(x, off, w, m, b, **kw)
    assert y2.is_contiguous(memory_format=torch.channels_last)  # the gather path's layout
    torch.testing.assert_close(y.detach(), y2, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="torchvision is not installed (optional); its deform_conv2d is the comparison target")
@pytest.mark.parametrize("case", CASES[:3], ids=["default", "stride2", "stride2-pad0"])
def test_matches_torchvision(case):
    tv = L._torchvision_deform()
    if tv is None:
        pytest.skip("torchvision is installed but torchvision.ops is not importable")
    x, off, w, m, b, kw = _case(**case)
    want = tv(x, off, w, b, mask=m, **kw)
    with torch.no_grad():
        got = deform_conv2d(x, off, w, m, b, backend="torch", **kw)
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_argument_errors():
    x, off, w, m, b, kw = _case(dtype=torch.float32)
    with pytest.raises(ValueError, match="offset has 9 channels"):
        deform_conv2d(x, off[:, :9], w, m, b)
    with pytest.raises(ValueError, match="mask has 8 channels"):
        deform_conv2d(x, off, w, m[:, :8], b)
    with pytest.raises(ValueError, match="does not fit input"):
        deform_conv2d(x, off[:, :, :-1], w, m[:, :, :-1], b)
    with pytest.raises(ValueError, match="batch size"):
        deform_conv2d(x[:1], off, w, m, b)
    with pytest.raises(ValueError, match="backend must be"):
        deform_conv2d(x, off, w, m, b, backend="cuda")


def test_deform_module_and_squeeze_excite_shapes():
    torch.manual_seed(0)
    dcn = DeformConv2d(6, 5, bias=True)
    x = torch.randn(2, 6, 6, 10)
    with torch.no_grad():
        y = dcn(x, torch.randn(2, 18, 6, 10), torch.rand(2, 9, 6, 10))
    assert y.shape == (2, 5, 6, 10)
    se = SqueezeExcite(8, reduction=4)
    a = se(torch.randn(3, 8, 5, 7))
    assert a.shape == (3, 8, 1, 1) and bool(((a > 0) & (a < 1)).all())
    assert [p.shape for p in se.parameters()] == [torch.Size([2, 8, 1, 1]), torch.Size([8, 2, 1, 1])]


def test_cpu_has_fast_dtype():
    assert L.cpu_has_fast_dtype(torch.float32) is True
    assert isinstance(L.cpu_has_fast_dtype(torch.bfloat16), bool)
    assert isinstance(L.lrelu(torch.tensor([-1.0, 2.0])), torch.Tensor)
    torch.testing.assert_close(L.lrelu(torch.tensor([-1.0, 2.0])), torch.tensor([-0.2, 2.0]))
