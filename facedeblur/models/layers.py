"""Building blocks shared by the facedeblur model files.

Everything here is written from the papers' definitions:

* :func:`deform_conv2d` — modulated deformable convolution (DCNv2, Zhu et al., CVPR 2019, Eq. 3):
  ``y(p) = sum_k w_k * x(p + p_k + dp_k) * m_k``, with bilinear sampling and zero padding.
  Pure PyTorch (one ``embedding_bag`` gather + one matmul), so it runs on any device and in fp32/bf16/fp16.
  On CUDA it dispatches to ``torchvision.ops.deform_conv2d`` when torchvision is importable
  (faster there); on CPU ours is faster than torchvision's kernel (see ``benchmarks/speed.py``).
* :class:`SqueezeExcite` — channel attention (Hu et al.; RCAN-style) used by several methods.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["deform_conv2d", "deform_conv2d_reference", "DeformConv2d", "SqueezeExcite", "lrelu"]


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


def _base_grid(h_out: int, w_out: int, kh: int, kw: int, stride: int, padding: int, dilation: int,
               device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling positions p + p_k (no offset) as (K, Ho, Wo) row and column tensors."""
    ys = torch.arange(h_out, device=device, dtype=dtype) * stride - padding
    xs = torch.arange(w_out, device=device, dtype=dtype) * stride - padding
    ky = torch.arange(kh, device=device, dtype=dtype) * dilation
    kx = torch.arange(kw, device=device, dtype=dtype) * dilation
    ky, kx = torch.meshgrid(ky, kx, indexing="ij")  # (kh, kw)
    rows = ky.reshape(-1, 1, 1) + ys.view(1, -1, 1)  # (K, Ho, 1)
    cols = kx.reshape(-1, 1, 1) + xs.view(1, 1, -1)  # (K, 1, Wo)
    return rows.expand(-1, h_out, w_out), cols.expand(-1, h_out, w_out)


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


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, stride: int = 1, padding: int = 1, dilation: int = 1,
                  backend: str = "auto") -> torch.Tensor:
    """Modulated deformable convolution (DCNv2), one offset group, groups=1.

    Offsets use torchvision's layout: channel ``2k`` is the row (y) shift and ``2k+1`` the column (x)
    shift of kernel location ``k`` (row-major over the kernel). Samples outside the input read zero,
    corner by corner, exactly like the reference CUDA kernels.

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

    n, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    k = kh * kw
    h_out, w_out = offset.shape[2], offset.shape[3]
    pdt = torch.float64 if offset.dtype == torch.float64 else torch.float32  # positions never in 16-bit
    rows, cols = _base_grid(h_out, w_out, kh, kw, stride, padding, dilation, x.device, pdt)
    off = offset.to(pdt).view(n, k, 2, h_out, w_out)
    pos_y = rows + off[:, :, 0]  # (N, K, Ho, Wo), pixel coordinates
    pos_x = cols + off[:, :, 1]
    m = None if mask is None else mask.to(pdt)
    if torch.is_grad_enabled() and (x.requires_grad or offset.requires_grad or weight.requires_grad):
        # training: grid_sample's fused backward is ~4x faster than embedding_bag's sort-based one
        sampled = _bilinear_grid_sample(x, pos_y, pos_x, m)
    else:
        sampled = _bilinear_gather(x, pos_y, pos_x, m)  # (N, L, K*C)
    w_mat = weight.permute(0, 2, 3, 1).reshape(c_out, k * c).to(x.dtype)  # (Cout, K*C), K major like `sampled`
    out = torch.matmul(sampled, w_mat.t())  # (N, L, Cout)
    out = out.transpose(1, 2).reshape(n, c_out, h_out, w_out)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1).to(x.dtype)
    return out


def _bilinear_grid_sample(x: torch.Tensor, pos_y: torch.Tensor, pos_x: torch.Tensor,
                          mask: torch.Tensor | None) -> torch.Tensor:
    """Same result as :func:`_bilinear_gather` through ``grid_sample`` (faster backward; used in training)."""
    n, c, h, w = x.shape
    k, h_out, w_out = pos_y.shape[1:]
    # align_corners=False puts pixel i at (2i + 1)/size - 1; zero padding reads 0 outside, corner by corner
    grid = torch.stack(((2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1), dim=-1)
    sampled = F.grid_sample(x, grid.view(n, k * h_out, w_out, 2).to(x.dtype), mode="bilinear",
                            padding_mode="zeros", align_corners=False).view(n, c, k, h_out * w_out)
    if mask is not None:
        sampled = sampled * mask.reshape(n, 1, k, h_out * w_out).to(x.dtype)
    return sampled.permute(0, 3, 2, 1).reshape(n, h_out * w_out, k * c)


def _bilinear_gather(x: torch.Tensor, pos_y: torch.Tensor, pos_x: torch.Tensor,
                     mask: torch.Tensor | None) -> torch.Tensor:
    """Bilinear samples of ``x`` at (pos_y, pos_x), times ``mask``, as (N, Ho*Wo, K*C).

    One ``embedding_bag`` call does it: every output sample is a bag of the four neighbouring pixel rows
    of the channels-last input, weighted by the bilinear weights times the modulation (neighbours outside
    the image get weight zero). Rows are C contiguous values, so the gather is
    cache-friendly, and autograd gives the gradients for ``x``, the offsets and the mask.
    """
    n, c, h, w = x.shape
    k, h_out, w_out = pos_y.shape[1:]
    table = x.permute(0, 2, 3, 1).contiguous().view(n * h * w, c)
    py = pos_y.permute(0, 2, 3, 1).unsqueeze(-1)  # (N, Ho, Wo, K, 1): rows of the result are (n, position, k)
    px = pos_x.permute(0, 2, 3, 1).unsqueeze(-1)
    y0, x0 = torch.floor(py), torch.floor(px)
    fy, fx = py - y0, px - x0
    ys = torch.cat([y0, y0 + 1], dim=-1)  # (..., 2) neighbour rows / columns
    xs = torch.cat([x0, x0 + 1], dim=-1)
    # bilinear weight per axis, zero for neighbours outside the image (their index is clamped to any valid one)
    wy = torch.cat([1 - fy, fy], dim=-1) * ((ys >= 0) & (ys <= h - 1))
    wx = torch.cat([1 - fx, fx], dim=-1) * ((xs >= 0) & (xs <= w - 1))
    weights = wy.unsqueeze(-1) * wx.unsqueeze(-2)  # (..., 2, 2)
    if mask is not None:
        weights = weights * mask.permute(0, 2, 3, 1)[..., None, None]
    base = (torch.arange(n, device=x.device, dtype=torch.int64) * (h * w)).view(n, 1, 1, 1, 1)
    idx = (base + ys.clamp(0, h - 1).long() * w).unsqueeze(-1) + xs.clamp(0, w - 1).long().unsqueeze(-2)
    out = F.embedding_bag(idx.view(-1, 4), table, per_sample_weights=weights.reshape(-1, 4).to(x.dtype), mode="sum")
    return out.view(n, h_out * w_out, k * c)


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
