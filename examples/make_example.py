"""Make the shipped example: a face from scikit-image's ``astronaut`` with real (physically rendered) motion blur.

Source: ``skimage.data.astronaut()``, a NASA portrait of Eileen Collins (public domain). Steps:

1. **Face crop.** The square box follows the zoo cards' input contract (68-landmark box enlarged by 0.5x its
   width/height on each side, squared): dlib's 68 landmarks on the 512x512 image span x 179..272, y 87..178,
   which gives a 186 px square centred at (x, y) = (225.5, 132.5). The numbers are fixed here so the script needs
   no landmark detector.
2. **Camera shake.** A seeded random smooth 2-D path (a random walk in acceleration, integrated twice, so the
   velocity is continuous) with a small smooth in-plane rotation. The path is centred on its mean position and
   scaled so the largest distance between two of its positions is ``extent`` output pixels (default 8).
3. **Exposure.** The sharp scene is rendered at ``frames`` (default 13) positions along the path. Each frame is
   one sub-pixel ``cv2.warpAffine`` (Lanczos-4) straight from the original 512 px photograph into a 512x512
   canvas (crop, scale and shake in one affine map, so edges are resampled once), then area-downscaled 2x to
   256x256. Frames are averaged in linear light (sRGB decoded, averaged, re-encoded): that is how a sensor
   integrates light during the exposure (paper Eq. 5 with g = the sRGB curve).
4. The sharp reference is the same pipeline with one frame at the identity.

Outputs (written atomically): ``astronaut_motion_blur.png`` (the blurry face) and ``astronaut_sharp_crop.png`` (the
sharp reference, for comparing restorations), both 256x256 RGB.

Committed files, made with the defaults (seed 2207, 13 frames, extent 8 px) on x86-64 Linux, numpy 2.4,
opencv-python-headless 4.14 (``tests/test_example.py`` regenerates them and compares pixels, +-1 grey level):

==========================  ==========================================  ==========================================
file                        sha1 of the file                            sha1 of the RGB pixels (H, W, 3 uint8)
==========================  ==========================================  ==========================================
astronaut_motion_blur.png   c63b3fd545778867e84e7a8e9282544805d0cec4    e6240e70e2483691a55fad5350df2e0752c3b6e7
astronaut_sharp_crop.png    d20e289c16aad080ae70b6e554137968b9265636    6a39dd0389ea3011e8ea2bd7a0d50af3ecceb278
==========================  ==========================================  ==========================================

The PNG bytes depend on the encoder's zlib; the pixel hashes are the ones that matter. Measured with the defaults:
PSNR of the blurry face against the sharp one 25.85 dB; Laplacian variance 335.4 (sharp) vs 61.7 (blurry).

Run: ``python examples/make_example.py [--out-dir DIR]`` (prints the PSNR of the blurry face against the sharp one).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

__all__ = ["CROP_CENTER", "CROP_SIDE", "OUT_SIZE", "srgb_to_linear", "linear_to_srgb", "shake_trajectory",
           "render", "sharp_crop", "motion_blurred", "psnr", "laplacian_variance", "write_png", "main"]

CROP_CENTER = (225.5, 132.5)  # (x, y) in pixel-centre coordinates of the 512x512 astronaut image
CROP_SIDE = 186.0  # source pixels
OUT_SIZE = 256
SUPERSAMPLE = 2  # frames are rendered at OUT_SIZE * SUPERSAMPLE, then area-downscaled
DEFAULT_SEED = 2207
DEFAULT_FRAMES = 13
DEFAULT_EXTENT = 8.0  # output pixels
DEFAULT_ROTATION_DEG = 1.5  # total in-plane rotation range over the exposure


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light (IEC 61966-2-1)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] to sRGB-encoded values (inverse of :func:`srgb_to_linear`)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def shake_trajectory(frames: int = DEFAULT_FRAMES, extent: float = DEFAULT_EXTENT,
                     rotation_deg: float = DEFAULT_ROTATION_DEG, seed: int = DEFAULT_SEED) -> np.ndarray:
    """A smooth random camera-shake path sampled at ``frames`` instants: rows of (dx, dy, theta_deg).

    dx, dy are in output pixels, centred on their mean, with the largest pairwise distance equal to ``extent``;
    theta sweeps a smooth random path over a range of ``rotation_deg`` degrees, centred on 0.
    """
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    if extent <= 0:
        raise ValueError(f"extent must be > 0 px, got {extent}")
    rng = np.random.default_rng(seed)
    steps = 64
    # Position: random initial velocity plus random accelerations, integrated twice (C1-smooth, mostly directional).
    heading = rng.uniform(0.0, 2.0 * np.pi)
    velocity = np.array([np.cos(heading), np.sin(heading)]) + np.cumsum(rng.normal(0.0, 0.12, (steps, 2)), axis=0)
    path = np.cumsum(velocity, axis=0)
    # Rotation: a smooth random walk as well (random angular velocity, integrated once).
    omega = rng.normal(0.0, 1.0) + np.cumsum(rng.normal(0.0, 0.15, steps))
    theta = np.cumsum(omega)

    t_fine = np.linspace(0.0, 1.0, steps)
    t = np.linspace(0.0, 1.0, frames)
    xy = np.stack([np.interp(t, t_fine, path[:, 0]), np.interp(t, t_fine, path[:, 1])], axis=1)
    xy -= xy.mean(axis=0)
    span = np.max(np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1))
    xy *= extent / span
    th = np.interp(t, t_fine, theta)
    th -= th.mean()
    th_range = th.max() - th.min()
    th = th * (rotation_deg / th_range) if th_range > 0 else th
    return np.concatenate([xy, th[:, None]], axis=1)


def _source_linear() -> np.ndarray:
    from skimage import data

    return srgb_to_linear(data.astronaut().astype(np.float64) / 255.0)


def render(source_linear: np.ndarray, trajectory: np.ndarray) -> np.ndarray:
    """Average of the face crop rendered at each (dx, dy, theta) of ``trajectory``, in linear light.

    Each frame is a single affine warp from ``source_linear`` (the full photograph) into an
    ``OUT_SIZE * SUPERSAMPLE`` canvas; the mean is area-downscaled to ``OUT_SIZE``. Returns linear RGB float64.
    """
    canvas = OUT_SIZE * SUPERSAMPLE
    c_dst = (canvas - 1) / 2.0
    scale = CROP_SIDE / canvas  # source pixels per canvas pixel
    acc = np.zeros((canvas, canvas, 3), dtype=np.float64)
    for dx, dy, th_deg in trajectory:
        th = np.deg2rad(th_deg)
        # The scene moves by (dx, dy) output px and rotates by th about the crop centre, so canvas point q shows
        # the sharp scene at R(-th) (q - c - d); mapped to source pixels by the crop's scale and centre.
        rot_inv = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
        d = np.array([dx, dy]) * SUPERSAMPLE
        lin = scale * rot_inv
        offset = np.asarray(CROP_CENTER) - lin @ (np.array([c_dst, c_dst]) + d)
        m = np.concatenate([lin, offset[:, None]], axis=1)
        acc += cv2.warpAffine(source_linear, m, (canvas, canvas), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT_101)
    acc /= len(trajectory)
    return cv2.resize(acc, (OUT_SIZE, OUT_SIZE), interpolation=cv2.INTER_AREA)


def _to_uint8(linear: np.ndarray) -> np.ndarray:
    return np.round(linear_to_srgb(linear) * 255.0).astype(np.uint8)


def sharp_crop() -> np.ndarray:
    """The sharp 256x256 RGB uint8 face (the identity frame of :func:`render`)."""
    return _to_uint8(render(_source_linear(), np.zeros((1, 3))))


def motion_blurred(frames: int = DEFAULT_FRAMES, extent: float = DEFAULT_EXTENT,
                   rotation_deg: float = DEFAULT_ROTATION_DEG, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The motion-blurred 256x256 RGB uint8 face (see the module docstring)."""
    return _to_uint8(render(_source_linear(), shake_trajectory(frames, extent, rotation_deg, seed)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (data range 255)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def laplacian_variance(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: the usual sharpness score (higher = sharper)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.tobytes())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent,
                        help="folder for the two PNGs (default: this script's folder)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--extent", type=float, default=DEFAULT_EXTENT, help="shake extent in output pixels")
    parser.add_argument("--rotation", type=float, default=DEFAULT_ROTATION_DEG, help="rotation range in degrees")
    args = parser.parse_args(argv)
    if not args.out_dir.is_dir():
        parser.error(f"--out-dir {args.out_dir} is not an existing folder; create it first")

    sharp = sharp_crop()
    blurry = motion_blurred(args.frames, args.extent, args.rotation, args.seed)
    write_png(args.out_dir / "astronaut_motion_blur.png", blurry)
    write_png(args.out_dir / "astronaut_sharp_crop.png", sharp)
    print(f"wrote {args.out_dir / 'astronaut_motion_blur.png'} and {args.out_dir / 'astronaut_sharp_crop.png'}")
    print(f"PSNR blurry vs sharp: {psnr(blurry, sharp):.2f} dB; Laplacian variance sharp "
          f"{laplacian_variance(sharp):.1f}, blurry {laplacian_variance(blurry):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
