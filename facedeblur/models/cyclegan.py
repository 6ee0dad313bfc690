"""CycleGAN networks of CycleGAN->SRN's first stage (Nahli, Cao, Xu, *Face Image Deblurring: A Data-Driven Strategy*,
§3.1, §4, Fig. 2): the ResNet generator and the 70x70 PatchGAN of Zhu, Park, Isola, Efros, *Unpaired Image-to-Image
Translation using Cycle-Consistent Adversarial Networks* (ICCV 2017, §4 and appendix 7.2).

Nahli et al. train a CycleGAN "similar to that from [6]" between unpaired sharp and real blurry faces and use its
sharp -> blurry generator G to make blurry/sharp training pairs for the SRN deblurrer. They give no layer list, so the
networks are CycleGAN's, as its paper's appendix and its authors' code (``junyanz/pytorch-CycleGAN-and-pix2pix``, BSD;
facts only, REFERENCE_FACTS §8) define them:

* **ResNet generator** (``resnet_9blocks``): reflection pad 3 + 7x7 conv -> F + IN + ReLU; two 3x3 stride-2 convs
  (F -> 2F -> 4F) + IN + ReLU; ``blocks`` residual blocks at 4F (reflection pad 1, 3x3 conv, IN, ReLU, reflection
  pad 1, 3x3 conv, IN, plus the identity; no dropout); two 3x3 stride-2 transposed convs (output padding 1, 4F -> 2F
  -> F) + IN + ReLU; reflection pad 3 + 7x7 conv -> 3 + tanh. Instance norm without affine parameters, so the convs
  keep their biases. Paper variant (F = 64, 9 blocks): 11,378,179 parameters.
* **70x70 PatchGAN** (``basic``, 3 layers): 4x4 convs, padding 1: stride 2 3 -> D (no norm), stride 2 D -> 2D, stride
  2 2D -> 4D, stride 1 4D -> 8D (each + IN + LeakyReLU 0.2), stride 1 8D -> 1 (one score per 70x70 patch, no
  sigmoid: least-squares GAN). Paper variant (D = 64): 2,764,737 parameters.
* Init N(0, 0.02), zero biases (code; the paper says only "Gaussian").

Not in either paper, a convention of this project: images are in [0, 1] at the networks' boundaries (the zoo's
input contract). CycleGAN works in [-1, 1], so both networks map ``x -> 2x - 1`` on the way in and the generator
maps its tanh output back with ``(y + 1) / 2``; the arithmetic inside is CycleGAN's.

H and W must be multiples of 4 for the generator (:attr:`ResnetGenerator.pad_multiple`: two stride-2 convs, then two
x2 transposed convs) and at least 8 (reflection padding at 1/4 scale needs 2 pixels). The registered architecture
``cyclegan_blur`` is the sharp -> blurry generator G, a zoo entry for data work (``cyclegan-blur.*``); its training
wrapper (:mod:`facedeblur.train.methods.cyclegan`) also trains the blurry -> sharp generator F and both PatchGANs.
"""
from __future__ import annotations

import torch
from torch import nn

from ._registry import InferenceAdapter, register_model
from .layers import check_image_batch

__all__ = ["ResnetGenerator", "PatchDiscriminator", "cyclegan_blur", "cyclegan_patchgan", "CYCLEGAN_ADAPTER"]

#: how the blur generator is called: ``model(x)``, one output
CYCLEGAN_ADAPTER = InferenceAdapter(control=False, multiscale=False)


def _init_normal_(module: nn.Module, std: float = 0.02) -> None:
    """CycleGAN's init (code ``init_type=normal``, gain 0.02): conv weights N(0, std), biases zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """CycleGAN's residual block (appendix 7.2 "R256"): two reflection-padded 3x3 convs with IN, ReLU between."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels),
                                  nn.ReLU(True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator (Zhu et al. 2017 appendix 7.2: c7s1-64, d128, d256, 9 x R256, u128, u64, c7s1-3).

    Args:
        width: F, the first conv's width (levels F, 2F, 4F). Paper / code: 64.
        blocks: residual blocks at 4F. Paper / code: 9 for 256 px images (6 for 128 px).

    ``forward(x)`` maps images (N, 3, H, W) in [0, 1] (H, W multiples of 4, at least 8) to images in [0, 1].
    """

    pad_multiple = 4
    min_size = 8

    def __init__(self, width: int = 64, blocks: int = 9) -> None:
        super().__init__()
        f = width
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, f, 7), _norm(f), nn.ReLU(True)]
        for i in range(2):
            layers += [nn.Conv2d(f * 2 ** i, f * 2 ** (i + 1), 3, stride=2, padding=1), _norm(f * 2 ** (i + 1)),
                       nn.ReLU(True)]
        layers += [ResnetBlock(4 * f) for _ in range(blocks)]
        for i in (2, 1):
            layers += [nn.ConvTranspose2d(f * 2 ** i, f * 2 ** (i - 1), 3, stride=2, padding=1, output_padding=1),
                       _norm(f * 2 ** (i - 1)), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(f, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _init_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.pad_multiple, type(self).__name__, self.min_size)
        return (self.net(x * 2 - 1) + 1) * 0.5


class PatchDiscriminator(nn.Module):
    """CycleGAN's 70x70 PatchGAN (appendix 7.2: C64-C128-C256-C512, then a 1-channel conv): one real/fake score per
    overlapping 70x70 patch, no sigmoid (least-squares GAN).

    Args:
        width: D, the first conv's width (D, 2D, 4D, 8D). Paper / code: 64.
        layers: stride-2 convs (3 gives the 70x70 receptive field).

    ``forward(x)`` takes images (N, 3, H, W) in [0, 1], H and W at least :attr:`min_size` (24 for 3 layers), and
    returns scores (N, 1, H / 8 - 2, W / 8 - 2) for 3 layers.
    """

    def __init__(self, width: int = 64, layers: int = 3) -> None:
        super().__init__()
        body: list[nn.Module] = [nn.Conv2d(3, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        cin = width
        for i in range(1, layers + 1):
            cout = width * min(2 ** i, 8)
            body += [nn.Conv2d(cin, cout, 4, stride=2 if i < layers else 1, padding=1), _norm(cout),
                     nn.LeakyReLU(0.2, True)]
            cin = cout
        body.append(nn.Conv2d(cin, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*body)
        #: the smallest input side with a score map of at least 1x1 (each stride-2 conv halves, each stride-1
        #: 4x4 conv with padding 1 takes one pixel off)
        self.min_size = 3 * 2 ** layers
        _init_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, 1, type(self).__name__, self.min_size)
        return self.net(x * 2 - 1)


@register_model("cyclegan_blur", task="image", discriminator="cyclegan_patchgan", adapter=CYCLEGAN_ADAPTER)
def cyclegan_blur(**kwargs) -> ResnetGenerator:
    """CycleGAN->SRN's learned-blur generator G: sharp -> realistic blurry face; kwargs as in
    :class:`ResnetGenerator`."""
    return ResnetGenerator(**kwargs)


def cyclegan_patchgan(**kwargs) -> PatchDiscriminator:
    """The 70x70 PatchGAN (training only); kwargs as in :class:`PatchDiscriminator`."""
    return PatchDiscriminator(**kwargs)
