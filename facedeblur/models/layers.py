"""Building blocks shared by the facedeblur model files.

Everything here is written from the papers' definitions:

* :func:`deform_conv2d` — modulated deformable convolution (DCNv2, Zhu et al., CVPR 2019, Eq. 3; CFMD-GAN
  Eq. 10): ``y(p) = sum_k w_k * x(p + p_k + dp_k) * m_k``, with bilinear sampling and zero padding.
  Pure PyTorch, so it runs on any device and in fp32/bf16/fp16. Inference: an ``embedding_bag`` gather
  from a zero-bordered channels-last table + one matmul, chunked over output rows so the im2col block
  stays cache- and allocator-friendly. Training (autograd): ``grid_sample`` + a batched matmul on its
  output as is (no permute copy). On CUDA it dispatches to ``torchvision.ops.deform_conv2d`` when
  torchvision is importable; on CPU ours is used (the official CFMD-GAN code spends 87% of its 9.8 s per
  face inside torchvision's CPU kernel on a 2-core machine; see ``benchmarks/results/speed_cfmd_cpu.md``).
* :class:`SqueezeExcite` — channel attention (Hu et al.; RCAN-style) used by several methods.
* :func:`check_image_batch` — the typed input check of networks with a ``pad_multiple``.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = ["deform_conv2d", "deform_conv2d_reference", "DeformConv2d", "SqueezeExcite", "lrelu", "cpu_has_fast_dtype",
           "exporting", "check_image_batch"]


def exporting() -> bool:
    """Whether the code runs under a graph exporter (ONNX, TorchScript tracing or ``torch.export``), where
    layers take their exportable formulation."""
    compiler = getattr(torch, "compiler", None)
    is_exporting = getattr(compiler, "is_exporting", None)  # torch >= 2.3
    return bool(torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or (is_exporting is not None and is_exporting()))


def check_image_batch(x: torch.Tensor, multiple: int, name: str, min_size: int = 1) -> None:
    """Raise :class:`~facedeblur.errors.InputError` unless ``x`` is an (N, 3, H, W) tensor with H and W multiples of
    ``multiple`` and at least ``min_size``: the input check of networks that need a size (their ``pad_multiple``)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{name} takes (N, 3, H, W) RGB tensors in [0, 1], got {shape}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple or h < min_size or w < min_size:
        raise InputError(f"{name} needs H and W divisible by {multiple} and at least {max(min_size, multiple)}, got "
                         f"{h}x{w}; pad the input (facedeblur.load(...).restore pads for you)")


def lrelu(x: torch.Tensor, slope: float = 0.2) -> torch.Tensor:
    """LeakyReLU(0.2), the activation of CFMD-GAN (paper §4.2) and many face GANs."""
    return F.leaky_relu(x, slope)


@lru_cache(maxsize=1)
def _torchvision_deform():  # pragma: no cover - depends on the optional install
    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        from torchvision.ops import deform_conv2d as tv_deform
    except Exception:  # a broken torchvision (CUDA wheel on a CPU torch) must not break us
        return None
    return tv_deform


# Inference gathers work on chunks of output rows whose im2col block is about this many elements
# (4 Mi fp32 values = 16 MiB): big enough that per-call overhead is negligible, small enough that the
# buffers are recycled by the allocator (glibc hands blocks > 32 MiB straight to mmap, and page-faulting
# a fresh 75 MiB block per call cost more than the gather itself) and stay near the caches.
_CHUNK_ELEMENTS = 1 << 18


@lru_cache(maxsize=4)
def cpu_has_fast_dtype(dtype: torch.dtype) -> bool:
    """Whether this CPU computes ``dtype`` convolutions/matmuls natively (fast) in oneDNN.

    float32/float64: always True. bfloat16 needs AVX512-BF16 or AMX (oneDNN's check); float16 needs
    AVX512-FP16 or AMX-FP16. Without it, oneDNN emulates 16-bit math and runs 10-200x slower than float32
    (e.g. AVX2-only CPUs; see ``benchmarks/results/speed_cfmd_cpu.md``).
    """
    if dtype not in (torch.bfloat16, torch.float16):
        return True
    name = "_is_mkldnn_bf16_supported" if dtype == torch.bfloat16 else "_is_mkldnn_fp16_supported"
    try:
        return bool(getattr(torch.ops.mkldnn, name)())
    except (AttributeError, RuntimeError):  # older torch: fall back to the CPU feature flags
        if dtype == torch.bfloat16:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(getattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)())


def _check_args(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor) -> None:
    if x.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError("deform_conv2d expects 4-D input, offset and weight tensors (N, C, H, W)")
    k = weight.shape[2] * weight.shape[3]
    if offset.shape[1] != 2 * k:
        raise ValueError(
            f"offset has {offset.shape[1]} channels; a {weight.shape[2]}x{weight.shape[3]} kernel with one offset "
            f"group needs {2 * k} (dy, dx per kernel location)")
    if mask is not None and mask.shape[1] != k:
        raise ValueError(f"mask has {mask.shape[1]} channels; expected {k} (one per kernel location)")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"input has {x.shape[1]} channels but weight expects {weight.shape[1]} (groups=1 only)")
    if offset.shape[0] != x.shape[0] or (mask is not None and mask.shape[0] != x.shape[0]):
        raise ValueError(f"offset/mask batch size must equal the input's ({x.shape[0]})")
    if mask is not None and mask.shape[2:] != offset.shape[2:]:
        raise ValueError(f"mask spatial size {tuple(mask.shape[2:])} differs from offset's {tuple(offset.shape[2:])}")


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, stride: int = 1, padding: int = 1, dilation: int = 1,
                  backend: str = "auto") -> torch.Tensor:
    """Modulated deformable convolution (DCNv2), one offset group, groups=1.

    Offsets use torchvision's layout: channel ``2k`` is the row (y) shift and ``2k+1`` the column (x)
    shift of kernel location ``k`` (row-major over the kernel). Samples outside the input read zero,
    corner by corner, exactly like the reference CUDA kernels.

    Without autograd (inference) the result is returned in ``channels_last`` memory format (that is the
    layout the gather produces; convolutions downstream are faster on it too).

    Args:
        x: input (N, C, H, W). offset: (N, 2K, Ho, Wo). weight: (Cout, C, kh, kw).
        mask: modulation (N, K, Ho, Wo) or None (all ones). bias: (Cout,) or None.
        backend: ``"auto"`` (torchvision on CUDA when importable, else pure PyTorch), ``"torch"`` or
            ``"torchvision"``.
    """
    _check_args(x, offset, mask, weight)
    if backend not in ("auto", "torch", "torchvision"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'torchvision', not {backend!r}")
    tv = _torchvision_deform() if backend != "torch" else None
    if backend == "torchvision" and tv is None:
        raise RuntimeError("backend='torchvision' requested but torchvision.ops is not importable; "
                           "install torchvision or use backend='torch'")
    if tv is not None and (backend == "torchvision" or (x.is_cuda and x.dtype in (torch.float32, torch.float16))):
        return tv(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
    h_out, w_out = offset.shape[2], offset.shape[3]
    kh, kw = weight.shape[2], weight.shape[3]
    h, w = x.shape[2], x.shape[3]
    need_h = (h_out - 1) * stride - 2 * padding + dilation * (kh - 1) + 1  # smallest input giving h_out rows
    need_w = (w_out - 1) * stride - 2 * padding + dilation * (kw - 1) + 1
    if not (need_h <= h < need_h + stride and need_w <= w < need_w + stride):
        raise ValueError(f"offset spatial size {(h_out, w_out)} does not fit input {(h, w)} with kernel {kh}x{kw}, "
                         f"stride {stride}, padding {padding}, dilation {dilation}")
    grads = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, offset, mask, weight, bias))
    if exporting():
        return _deform_export(x, offset, weight, mask, bias, stride, padding, dilation)
    if grads:
        # training: grid_sample's fused backward is ~4x faster than embedding_bag's sort-based one
        return _deform_grid_sample(x, offset, weight, mask, bias, stride, padding, dilation)
    return _deform_gather(x, offset, weight, mask, bias, stride, padding, dilation)


def _deform_grid_sample(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor | None,
                        bias: torch.Tensor | None, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """Autograd path: bilinear samples through ``grid_sample``, then ``weight (Cout, C*K) @ sampled (N, C*K, L)``.

    ``grid_sample`` returns the samples as (N, C, K*Ho, Wo), which is already the (N, C*K, L) operand of the
    matmul with the weight in its natural (Cout, C, kh, kw) order, so no permute/copy of the big tensor is needed.
    """
    n, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    k = kh * kw
    h_out, w_out = offset.shape[2], offset.shape[3]
    pdt = torch.float64 if x.dtype == torch.float64 or offset.dtype == torch.float64 else torch.float32
    dev = x.device
    # align_corners=False puts pixel i at (2i + 1)/size - 1: normalised = pixel * 2/size + (1/size - 1)
    ys = torch.arange(h_out, device=dev, dtype=pdt) * stride - padding
    xs = torch.arange(w_out, device=dev, dtype=pdt) * stride - padding
    ky = (torch.arange(kh, device=dev, dtype=pdt) * dilation).repeat_interleave(kw)
    kx = (torch.arange(kw, device=dev, dtype=pdt) * dilation).repeat(kh)
    base = torch.empty(k, h_out, w_out, 2, device=dev, dtype=pdt)  # (x, y) order, normalised
    base[..., 0] = ((kx.view(k, 1, 1) + xs.view(1, 1, w_out)) * 2 + 1) / w - 1
    base[..., 1] = ((ky.view(k, 1, 1) + ys.view(1, h_out, 1)) * 2 + 1) / h - 1
    scale = torch.tensor([2.0 / w, 2.0 / h], device=dev, dtype=pdt)
    off_xy = offset.view(n, k, 2, h_out, w_out).flip(2).permute(0, 1, 3, 4, 2).to(pdt)  # (N, K, Ho, Wo, [dx, dy])
    grid = torch.addcmul(base, off_xy, scale).view(n, k * h_out, w_out, 2)
    if x.dtype in (torch.float16, torch.bfloat16):
        # a 16-bit normalised grid is off by up to ~size/256 pixels: sample with a float32 grid
        sampled = F.grid_sample(x.float(), grid.float(), mode="bilinear", padding_mode="zeros",
                                align_corners=False).to(x.dtype)
    else:
        sampled = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(n, c, k, h_out * w_out)
    if mask is not None:
        sampled = sampled * mask.reshape(n, 1, k, h_out * w_out).to(x.dtype)
    w_mat = weight.reshape(c_out, c * k).to(x.dtype).expand(n, -1, -1)
    sampled = sampled.reshape(n, c * k, h_out * w_out)
    if bias is None:
        out = torch.bmm(w_mat, sampled)
    else:
        out = torch.baddbmm(bias.to(x.dtype).view(1, -1, 1).expand(n, -1, h_out * w_out), w_mat, sampled)
    return out.view(n, c_out, h_out, w_out)


def _deform_export(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor | None,
                   bias: torch.Tensor | None, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """Graph-export path: the :func:`_deform_grid_sample` formula with every size taken from the tensors at run
    time (``Shape`` ops, index vectors made by ``cumsum`` of ones), so an exported graph keeps a dynamic batch and
    image size. ``grid_sample`` becomes ONNX ``GridSample`` (opset >= 16), which ONNX Runtime runs on CPU; the
    gather path (``embedding_bag``, a Python chunk loop) does not export. Float32 (or float64) only."""
    c_out, c, kh, kw = weight.shape
    k = kh * kw
    shape = torch._shape_as_tensor(x).to(torch.float32)
    h, w = shape[2], shape[3]
    ys = torch.ones_like(offset[0, 0, :, 0]).cumsum(0) - 1  # 0 .. Ho-1, length read from the tensor
    xs = torch.ones_like(offset[0, 0, 0, :]).cumsum(0) - 1
    ys, xs = ys.to(torch.float32) * stride - padding, xs.to(torch.float32) * stride - padding
    ky = torch.tensor([float(a * dilation) for a in range(kh) for _ in range(kw)]).view(k, 1, 1)
    kx = torch.tensor([float(e * dilation) for _ in range(kh) for e in range(kw)]).view(k, 1, 1)
    bx = ((kx + xs.view(1, 1, -1)) * 2 + 1) / w - 1  # (K, 1, Wo), normalised, align_corners=False
    by = ((ky + ys.view(1, -1, 1)) * 2 + 1) / h - 1  # (K, Ho, 1)
    base = torch.stack(torch.broadcast_tensors(bx, by), dim=-1)  # (K, Ho, Wo, [x, y])
    scale = torch.stack([2.0 / w, 2.0 / h])
    off = offset.to(torch.float32).unflatten(1, (k, 2)).flip(2).permute(0, 1, 3, 4, 2)  # (N, K, Ho, Wo, [dx, dy])
    grid = (base + off * scale).flatten(1, 2)  # (N, K*Ho, Wo, 2)
    sampled = F.grid_sample(x.to(torch.float32), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.unflatten(2, (k, -1))  # (N, C, K, Ho, Wo)
    if mask is not None:
        sampled = sampled * mask.to(torch.float32).unsqueeze(1)
    out = torch.matmul(weight.to(torch.float32).reshape(c_out, c * k), sampled.flatten(1, 2).flatten(2))
    out = out.reshape_as(offset[:, :1].expand(-1, c_out, -1, -1))  # (N, Cout, Ho, Wo), sizes from the graph
    if bias is not None:
        out = out + bias.to(torch.float32).view(1, -1, 1, 1)
    return out.to(x.dtype)


def _deform_gather(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor | None,
                   bias: torch.Tensor | None, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """Inference path (no autograd: it writes with ``out=``): ``embedding_bag`` gather of bilinear samples +
    one ``addmm`` per chunk of output rows.

    The input is copied once into a channels-last table with a zero border (1 pixel before, 2 after each
    spatial axis). Sample positions are clamped to [-1, size] in image coordinates: a clamped position reads
    only border zeros (or gets weight 0), which is exactly the "zero outside the image, corner by corner" rule,
    so no per-corner validity masks are needed. Each output sample is a bag of the four neighbouring table rows
    weighted by the bilinear weights times the modulation; rows are C contiguous values (cache-friendly).
    The result is written straight into a channels-last (N, Ho, Wo, Cout) buffer.
    """
    n, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    k = kh * kw
    h_out, w_out = offset.shape[2], offset.shape[3]
    dt, dev = x.dtype, x.device
    hp, wp = h + 3, w + 3
    # positions in float32 are exact integers below 2**24; fall back to float64 for huge or float64 inputs
    pdt = torch.float64 if (dt == torch.float64 or offset.dtype == torch.float64 or hp * wp >= 1 << 24) \
        else torch.float32
    table = x.new_empty(n, hp, wp, c)
    table[:, 1:h + 1, 1:w + 1].copy_(x.permute(0, 2, 3, 1))
    table[:, 0].zero_()  # zero border: 1 row/column before, 2 after
    table[:, h + 1:].zero_()
    table[:, 1:h + 1, 0].zero_()
    table[:, 1:h + 1, w + 1:].zero_()
    table = table.view(n * hp * wp, c)
    # positions in table coordinates (image coordinate + 1): row/column base per (Ho, Wo, K, [y, x])
    ys = torch.arange(h_out, device=dev, dtype=pdt) * stride + (1 - padding)
    xs = torch.arange(w_out, device=dev, dtype=pdt) * stride + (1 - padding)
    ky = (torch.arange(kh, device=dev, dtype=pdt) * dilation).repeat_interleave(kw)
    kx = (torch.arange(kw, device=dev, dtype=pdt) * dilation).repeat(kh)
    base = torch.empty(h_out, w_out, k, 2, device=dev, dtype=pdt)
    base[..., 0] = ys.view(-1, 1, 1) + ky
    base[..., 1] = xs.view(1, -1, 1) + kx
    corners = torch.tensor([0, 1, wp, wp + 1], device=dev, dtype=torch.int64)
    # 16-bit on a CPU without native 16-bit GEMMs: oneDNN/MKL emulate them ~20x slower than float32, so the
    # matmul takes the (small, per-chunk) samples up to float32; storage and the gather stay 16-bit
    mdt = torch.float32 if (dt in (torch.bfloat16, torch.float16) and dev.type == "cpu"
                            and not cpu_has_fast_dtype(dt)) else dt
    w_mat = weight.permute(2, 3, 1, 0).reshape(k * c, c_out).to(mdt)  # (K*C, Cout), K major like the samples
    b = None if bias is None else bias.to(mdt)
    off = offset.permute(0, 2, 3, 1)  # (N, Ho, Wo, 2K) view; [.., 2k] = dy, [.., 2k+1] = dx
    msk = None if mask is None else mask.permute(0, 2, 3, 1)
    out = torch.empty(n, h_out, w_out, c_out, device=dev, dtype=mdt)
    rows = max(1, min(h_out, _CHUNK_ELEMENTS // max(1, w_out * k * c)))
    for i in range(n):
        m = None if msk is None else msk[i].to(pdt)
        idx, wts = _bilinear_terms(off[i], base, m, h, w, wp, corners, i * hp * wp)
        wts = wts.to(dt)
        per_row = w_out * k
        for r0 in range(0, h_out, rows):
            r1 = min(h_out, r0 + rows)
            samples = F.embedding_bag(idx[r0 * per_row:r1 * per_row], table,
                                      per_sample_weights=wts[r0 * per_row:r1 * per_row], mode="sum")
            o = out[i, r0:r1].view(-1, c_out)
            samples = samples.view(-1, k * c).to(mdt)
            if b is None:
                torch.mm(samples, w_mat, out=o)
            else:
                torch.addmm(b, samples, w_mat, out=o)
    return out.to(dt).permute(0, 3, 1, 2)


def _bilinear_terms(off: torch.Tensor, base: torch.Tensor, mask: torch.Tensor | None, h: int, w: int, wp: int,
                    corners: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows (B, 4) and bilinear x modulation weights (B, 4) of the four neighbours of every sample.

    ``off`` (R, Wo, 2K) offsets, ``base`` (R, Wo, K, 2) positions in padded-table coordinates, ``mask``
    (R, Wo, K) or None. Neighbour order: (y0, x0), (y0, x1), (y1, x0), (y1, x1).
    """
    r, w_out, k = base.shape[:3]
    p = torch.add(base, off.reshape(r, w_out, k, 2))  # contiguous like `base`
    if h == w:  # one contiguous pass; per axis otherwise
        p.clamp_(0, h + 1)
    else:
        p[..., 0].clamp_(0, h + 1)
        p[..., 1].clamp_(0, w + 1)
    p0 = torch.floor(p)
    frac = p.sub_(p0)
    fy, fx = frac[..., 0], frac[..., 1]
    lin = torch.add(p0[..., 1], p0[..., 0], alpha=wp).to(torch.int64)
    if start:
        lin += start
    idx = (lin.unsqueeze(-1) + corners).view(-1, 4)
    wts = torch.empty(r, w_out, k, 4, device=p.device, dtype=p.dtype)
    wy1 = fy * mask if mask is not None else fy.clone()
    wy0 = (mask - wy1) if mask is not None else (1 - wy1)
    torch.mul(wy1, fx, out=wts[..., 3])
    torch.sub(wy1, wts[..., 3], out=wts[..., 2])
    torch.mul(wy0, fx, out=wts[..., 1])
    torch.sub(wy0, wts[..., 1], out=wts[..., 0])
    return idx, wts.view(-1, 4)


def deform_conv2d_reference(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                            mask: torch.Tensor | None = None, bias: torch.Tensor | None = None, stride: int = 1,
                            padding: int = 1, dilation: int = 1) -> torch.Tensor:
    """Direct, loop-based evaluation of the DCNv2 formula in float64 (for tests; slow).

    Bilinear interpolation is written out corner by corner: ``x(py, px) = sum over the four integer
    neighbours q of max(0, 1-|py-qy|) * max(0, 1-|px-qx|) * x(q)``, where neighbours outside the
    image contribute zero.
    """
    _check_args(x, offset, mask, weight)
    x, offset, weight = x.double(), offset.double(), weight.double()
    n, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    h_out, w_out = offset.shape[2], offset.shape[3]
    out = torch.zeros(n, c_out, h_out, w_out, dtype=torch.float64)
    for b in range(n):
        for i in range(h_out):
            for j in range(w_out):
                acc = torch.zeros(c_out, dtype=torch.float64)
                for a in range(kh):
                    for e in range(kw):
                        kk = a * kw + e
                        py = i * stride - padding + a * dilation + float(offset[b, 2 * kk, i, j])
                        px = j * stride - padding + e * dilation + float(offset[b, 2 * kk + 1, i, j])
                        y0, x0 = int(torch.floor(torch.tensor(py))), int(torch.floor(torch.tensor(px)))
                        val = torch.zeros(c, dtype=torch.float64)
                        for qy in (y0, y0 + 1):
                            for qx in (x0, x0 + 1):
                                if 0 <= qy < h and 0 <= qx < w:
                                    wgt = max(0.0, 1 - abs(py - qy)) * max(0.0, 1 - abs(px - qx))
                                    val = val + wgt * x[b, :, qy, qx]
                        m = 1.0 if mask is None else float(mask[b, kk, i, j])
                        acc = acc + weight[:, :, a, e] @ val * m
                out[b, :, i, j] = acc
    if bias is not None:
        out = out + bias.double().view(1, -1, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """Weight holder for :func:`deform_conv2d`; offsets and mask are given by the caller."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Conv2d's default init

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return deform_conv2d(x, offset, self.weight, mask, self.bias, self.stride, self.padding)


class SqueezeExcite(nn.Module):
    """Channel attention: global average pool -> 1x1 (C -> C/r) -> act -> 1x1 (C/r -> C) -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 4, bias: bool = False) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1, bias=bias)
        self.expand = nn.Conv2d(channels // reduction, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the attention weights (N, C, 1, 1), not the re-weighted input."""
        return torch.sigmoid(self.expand(lrelu(self.reduce(x.mean(dim=(2, 3), keepdim=True)))))
