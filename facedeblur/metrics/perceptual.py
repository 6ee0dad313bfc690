"""LPIPS and FID with the real networks only; "unavailable" (with the reason) otherwise, never a stand-in.

* LPIPS v0.1 (Zhang et al. 2018) from the ``lpips`` package, AlexNet backbone by default (the version pyiqa and
  most papers report), inputs mapped from [0, 1] to [-1, 1]. Needs ``lpips`` and ``torchvision`` importable,
  the package's linear-layer weights, and torchvision's ImageNet backbone weights already in the torch hub
  cache (``torch.hub.get_dir()/checkpoints``): nothing is downloaded.
* FID (Heusel et al. 2017) with ``pytorch-fid``'s InceptionV3 carrying the TF-ported FID weights
  (``pt_inception-2015-12-05``), pool3 2048-d features, bilinear resize to 299 (pytorch-fid's convention; it
  differs slightly from clean-fid). Same no-download rule. FID of small sets is strongly biased: report N.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InputError
from ._common import MetricUnavailable, check_pair, to_uint8_rgb

__all__ = ["lpips_available", "fid_available", "LPIPS", "FID", "frechet_distance", "feature_statistics"]

_LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def _hub_checkpoint(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def lpips_available(net: str = "alex", version: str = "0.1") -> tuple[bool, str]:
    """(True, description) when LPIPS ``net``/``version`` can be built offline, else (False, the reason)."""
    if net not in _LPIPS_BACKBONES:
        raise InputError(f"unknown LPIPS backbone {net!r}; use one of {sorted(_LPIPS_BACKBONES)}")
    for mod in ("lpips", "torchvision"):
        if importlib.util.find_spec(mod) is None:
            return False, f"LPIPS needs {mod}: pip install 'facedeblur[lpips]' torchvision"
    spec = importlib.util.find_spec("lpips")
    lin = Path(list(spec.submodule_search_locations or [""])[0]) / "weights" / f"v{version}" / f"{net}.pth"
    if not lin.is_file():
        return False, f"LPIPS v{version} {net} linear weights missing at {lin}"
    try:
        import torchvision.models as tvm

        url = getattr(tvm, _LPIPS_BACKBONES[net]).IMAGENET1K_V1.url
    except Exception as exc:
        return False, f"torchvision does not provide the {net} ImageNet weights: {exc}"
    ckpt = _hub_checkpoint(url)
    if not ckpt.is_file():
        return False, f"{net} ImageNet backbone weights are not cached at {ckpt} (no download is attempted)"
    return True, f"LPIPS v{version}, {net} backbone (lpips package, torchvision ImageNet weights)"


def fid_available() -> tuple[bool, str]:
    """(True, description) when pytorch-fid's FID InceptionV3 can be built offline, else (False, the reason)."""
    for mod in ("pytorch_fid", "torchvision"):
        if importlib.util.find_spec(mod) is None:
            return False, f"FID needs {mod}: pip install pytorch-fid torchvision"
    try:
        from pytorch_fid.inception import FID_WEIGHTS_URL
    except Exception as exc:
        return False, f"pytorch_fid failed to import: {exc}"
    ckpt = _hub_checkpoint(FID_WEIGHTS_URL)
    if not ckpt.is_file():
        return False, f"FID Inception weights are not cached at {ckpt} (no download is attempted)"
    return True, "FID, pytorch-fid InceptionV3 (pt_inception-2015-12-05), pool3 2048-d"


def _to_tensor(imgs: list[np.ndarray]):
    import torch

    x = np.stack([to_uint8_rgb(i) for i in imgs]).astype(np.float32) / 255.0
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


class LPIPS:
    """LPIPS distance (lower = closer) of RGB images, uint8 or float [0, 1]; raises MetricUnavailable if absent."""

    def __init__(self, net: str = "alex", version: str = "0.1", device: str = "cpu") -> None:
        ok, why = lpips_available(net, version)
        if not ok:
            raise MetricUnavailable(why)
        import lpips

        self._model = lpips.LPIPS(net=net, version=version, verbose=False).eval().to(device)
        self.device = device
        self.convention = f"{why}; inputs RGB [0, 1] mapped to [-1, 1]"

    def __call__(self, img: np.ndarray, ref: np.ndarray) -> float:
        import torch

        check_pair(img, ref, None)
        a, b = _to_tensor([img]).to(self.device), _to_tensor([ref]).to(self.device)
        with torch.no_grad():
            return float(self._model(a * 2 - 1, b * 2 - 1).flatten()[0])


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows = samples, ``np.cov`` with N-1) of an (N, D) feature matrix, float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise InputError(f"feature_statistics needs an (N, D) array with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians: ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise InputError(f"frechet_distance: shapes do not match: mu {mu1.shape}/{mu2.shape}, "
                         f"sigma {s1.shape}/{s2.shape}")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: regularise, as is customary
        eps = 1e-6 * np.eye(s1.shape[0])
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


class FID:
    """FID between two image sets (pytorch-fid InceptionV3); raises MetricUnavailable if it cannot be built."""

    def __init__(self, device: str = "cpu", batch_size: int = 16) -> None:
        ok, why = fid_available()
        if not ok:
            raise MetricUnavailable(why)
        from pytorch_fid.inception import InceptionV3

        self._model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                                  normalize_input=True).eval().to(device)
        self.device, self.batch_size = device, batch_size
        self.convention = f"{why}; images RGB [0, 1], bilinear resize to 299"

    def features(self, images: Iterable[np.ndarray], progress: bool = False) -> np.ndarray:
        """(N, 2048) pool3 features of RGB images (uint8 or float [0, 1])."""
        import torch
        from tqdm.auto import tqdm

        images = list(images)
        out = []
        for i in tqdm(range(0, len(images), self.batch_size), desc="fid features", disable=not progress):
            with torch.no_grad():
                f = self._model(_to_tensor(images[i:i + self.batch_size]).to(self.device))[0]
            out.append(f.flatten(1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))

    def __call__(self, images: Iterable[np.ndarray], reference: Iterable[np.ndarray]) -> float:
        return frechet_distance(*feature_statistics(self.features(images)),
                                *feature_statistics(self.features(reference)))
