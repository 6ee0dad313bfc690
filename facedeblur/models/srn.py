"""SRN-DeblurNet: the scale-recurrent deblurring network of CycleGAN->SRN (Nahli, Cao, Xu, *Face Image Deblurring:
A Data-Driven Strategy*, §3.2, §4 and Fig. 3; network of Tao, Gao, Shen, Wang, Jia, *Scale-Recurrent Network for Deep
Image Deblurring*, CVPR 2018).

Nahli et al. "borrowed [the network] directly from [7] but with few changes" (§4) and do not list the changes, so
the network is SRN-DeblurNet as Tao et al. describe it and as their released code (``jiangsutx/SRN-Deblur``, MIT;
facts only, REFERENCE_FACTS §7) builds it:

* 3 scales (ratio 1/2), coarse to fine, **one set of weights shared by all scales**. The input of a scale is the
  blurry image resized to that scale, concatenated with the previous scale's output resized up (6 channels); at the
  coarsest scale the "previous output" is the blurry image itself. The previous output enters with a stop-gradient
  (code), so each scale is trained by its own loss term.
* Encoder-decoder, all kernels 5x5, ReLU, no normalisation: InBlock (conv -> C, 3 ResBlocks), EBlock1 (stride-2 conv
  -> 2C, 3 ResBlocks), EBlock2 (stride-2 conv -> 4C, 3 ResBlocks); ConvLSTM (3x3 gates, 4C hidden units) at 1/4
  resolution; DBlock (3 ResBlocks, 4x4 transposed conv -> 2C + ReLU, **added** to EBlock1's output), the same again
  to C, then 3 ResBlocks and OutBlock (conv 5x5 -> 3, no activation). ResBlock = conv + ReLU + conv, plus the
  identity. The output is not residual to the input. Paper width C = 32: 8,061,411 parameters (REFERENCE_FACTS §7:
  "with the ConvLSTM ... ~8.06 M").
* The ConvLSTM state (c, h) of one scale is resized (bilinear) to the next scale and carried on: the recurrence
  across scales that gives the network its name (Tao et al. §3.1). At the coarsest scale it starts at zero.
* Init (code): Xavier-uniform weights and zero biases for the convs; gate conv weights N(0, 1e-3) truncated at 2
  sigma; forget-gate bias 1.0 added inside the cell (TensorFlow's ``BasicConvLSTMCell`` convention, gate order
  i, j, f, o).
* Resizing is bilinear throughout (image pyramid, previous output, LSTM state; the GT pyramid of the loss is
  the training wrapper's). We use PyTorch's half-pixel-centred bilinear resize; TF 1.x's ``resize_images`` has no
  half-pixel centres. That only matters when importing the TF checkpoint, which this project does not do.
* Stride-2 convs pad as TensorFlow's ``SAME`` does (1 before, 2 after for a 5x5 kernel on even sizes), so a
  feature pixel sees the same input window as in the authors' network.

H and W must be multiples of 16 (:attr:`SRNDeblurNet.pad_multiple`: 1/4 at the coarsest scale, then two stride-2
convs; the authors' test script requires the same). ``forward`` returns the outputs of all scales coarse to fine;
the registered :data:`SRN_ADAPTER` takes the last (full resolution) for inference; training uses all of them
(multi-scale MSE, Nahli Eq. 3; :mod:`facedeblur.train.methods.srn`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import InferenceAdapter, register_model
from .layers import check_image_batch, exporting

__all__ = ["SRNDeblurNet", "ConvLSTMCell", "ResBlock", "SRN_ADAPTER", "srn"]

#: how SRN-DeblurNet is called: ``model(x)``, outputs coarse to fine (the last one is the restored image)
SRN_ADAPTER = InferenceAdapter(control=False, multiscale=True)

LSTMState = tuple[torch.Tensor, torch.Tensor]


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class _StridedSame(nn.Module):
    """A stride-2 conv padded as TensorFlow's ``SAME`` pads it on even sizes: (k - 2) // 2 before, the rest after."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.pad = ((k - 2) // 2, k - 2 - (k - 2) // 2)
        self.conv = nn.Conv2d(cin, cout, k, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pad
        return self.conv(F.pad(x, (a, b, a, b)))


class ResBlock(nn.Module):
    """SRN's ResBlock (Tao et al. §3.2): ``x + conv(relu(conv(x)))``, no normalisation, no final activation."""

    def __init__(self, channels: int, kernel: int = 5) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, kernel)
        self.conv2 = _conv(channels, channels, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class _Stage(nn.Sequential):
    """``num_res`` ResBlocks of one width."""

    def __init__(self, channels: int, num_res: int, kernel: int) -> None:
        super().__init__(*[ResBlock(channels, kernel) for _ in range(num_res)])


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM (Shi et al. 2015) as SRN uses it (Tao et al. §3.1, Eq. 2): the gates are one conv of
    ``concat(x, h)``; ``c' = c * sigmoid(f + forget_bias) + sigmoid(i) * tanh(j)``, ``h' = tanh(c') * sigmoid(o)``."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3, forget_bias: float = 1.0) -> None:
        super().__init__()
        self.hidden, self.forget_bias = hidden, forget_bias
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def zero_state(self, x: torch.Tensor) -> LSTMState:
        """(c, h) of zeros for input features ``x`` (N, C, H, W)."""
        z = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
        return z, z

    def forward(self, x: torch.Tensor, state: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        c, h = self.zero_state(x) if state is None else state
        i, j, f, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = c * torch.sigmoid(f + self.forget_bias) + torch.sigmoid(i) * torch.tanh(j)
        h = torch.tanh(c) * torch.sigmoid(o)
        return h, (c, h)


def _rescale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resize by ``factor`` (half-pixel centres, no antialiasing)."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class SRNDeblurNet(nn.Module):
    """SRN-DeblurNet (Tao et al. 2018 §3; Nahli et al. §4, Fig. 3): a scale-recurrent encoder-decoder.

    Args:
        width: InBlock width C (levels C, 2C, 4C). Paper / code: 32.
        num_res: ResBlocks per encoder and decoder block. Paper / code: 3.
        levels: number of scales (ratio ``scale``). Paper / code: 3.
        scale: resize ratio between neighbouring scales. Paper / code: 0.5.
        kernel: kernel size of every conv but the gates and the transposed convs. Paper / code: 5.
        lstm: the ConvLSTM at the bottleneck (the paper's "lstm" model); False gives SRN's "color" model.
        lstm_kernel: kernel of the ConvLSTM gates. Code: 3.

    ``forward(x)`` takes blurry faces (N, 3, H, W) in [0, 1], H and W multiples of :attr:`pad_multiple`, and
    returns the ``levels`` outputs coarse to fine (the last is the full-resolution restored image).
    """

    def __init__(self, width: int = 32, num_res: int = 3, levels: int = 3, scale: float = 0.5, kernel: int = 5,
                 lstm: bool = True, lstm_kernel: int = 3) -> None:
        super().__init__()
        if levels < 1 or not 0 < scale < 1:
            raise ValueError(f"SRNDeblurNet needs levels >= 1 and 0 < scale < 1, got levels={levels}, scale={scale}")
        if scale != 0.5 and levels > 1:
            raise ValueError("SRNDeblurNet supports scale 0.5 only (the paper's; other ratios give sizes that do not "
                             "divide evenly)")
        c = width
        self.levels, self.scale = levels, scale
        #: H and W must be multiples of this: the coarsest scale (1 / 2^(levels-1)) goes through two stride-2 convs
        self.pad_multiple = 4 * 2 ** (levels - 1)
        self.inp = nn.Sequential(_conv(6, c, kernel), nn.ReLU())
        self.enc1 = _Stage(c, num_res, kernel)
        self.down2 = nn.Sequential(_StridedSame(c, 2 * c, kernel), nn.ReLU())
        self.enc2 = _Stage(2 * c, num_res, kernel)
        self.down3 = nn.Sequential(_StridedSame(2 * c, 4 * c, kernel), nn.ReLU())
        self.enc3 = _Stage(4 * c, num_res, kernel)
        self.lstm = ConvLSTMCell(4 * c, 4 * c, lstm_kernel) if lstm else None
        self.dec3 = _Stage(4 * c, num_res, kernel)
        self.up2 = nn.Sequential(nn.ConvTranspose2d(4 * c, 2 * c, 4, stride=2, padding=1), nn.ReLU())
        self.dec2 = _Stage(2 * c, num_res, kernel)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.ReLU())
        self.dec1 = _Stage(c, num_res, kernel)
        self.out = _conv(c, 3, kernel)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """The authors' code's initialisation (the paper is silent): Xavier-uniform convs with zero biases; ConvLSTM
        gate weights N(0, 1e-3) truncated at 2 sigma, zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        if self.lstm is not None:
            nn.init.trunc_normal_(self.lstm.gates.weight, 0.0, 1e-3, -2e-3, 2e-3)
            nn.init.zeros_(self.lstm.gates.bias)

    def scale_sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """(H, W) of every scale, coarse to fine."""
        return [(int(round(h * self.scale ** k)), int(round(w * self.scale ** k)))
                for k in reversed(range(self.levels))]

    def scale_step(self, blurry: torch.Tensor, previous: torch.Tensor, state: LSTMState | None
                   ) -> tuple[torch.Tensor, LSTMState | None]:
        """One scale (Tao et al. Eq. 1): the restored image at the size of ``blurry`` (the input at this scale) from
        ``concat(blurry, previous)`` and the ConvLSTM state, already at this scale's 1/4 size (None: zeros).
        Returns the output and the new state."""
        e1 = self.enc1(self.inp(torch.cat([blurry, previous], dim=1)))
        e2 = self.enc2(self.down2(e1))
        e3 = self.enc3(self.down3(e2))
        if self.lstm is not None:
            e3, state = self.lstm(e3, state)
        d2 = self.dec2(self.up2(self.dec3(e3)) + e2)
        d1 = self.dec1(self.up1(d2) + e1)
        return self.out(d1), state

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not exporting():  # an exported graph takes any size; ONNX users pad as the card says
            check_image_batch(x, self.pad_multiple, "SRNDeblurNet")
        outputs: list[torch.Tensor] = []
        previous: torch.Tensor | None = None
        state: LSTMState | None = None
        # resizes by scale factors, not sizes: the same samples (H and W are multiples of 16, so every factor is
        # exact), and no Python arithmetic on shapes, so an exported graph keeps a dynamic size
        for k in reversed(range(self.levels)):
            blurry = x if k == 0 else _rescale(x, self.scale ** k)
            if previous is None:
                previous = blurry
            else:  # stop-gradient (code): each scale learns from its own loss
                previous = _rescale(previous.detach(), 1.0 / self.scale)
            if state is not None:
                state = (_rescale(state[0], 1.0 / self.scale), _rescale(state[1], 1.0 / self.scale))
            previous, state = self.scale_step(blurry, previous, state)
            outputs.append(previous)
        return outputs


@register_model("srn", task="image", adapter=SRN_ADAPTER)
def srn(**kwargs) -> SRNDeblurNet:
    """SRN-DeblurNet, the deblurrer of CycleGAN->SRN; kwargs as in :class:`SRNDeblurNet` (zoo configs set them)."""
    return SRNDeblurNet(**kwargs)

