"""Make the web demo's bundled examples (facedeblur/demo/examples/; issue #21). Needs scikit-image (dev only).

* ``astronaut_face_shake8.png``: the README example, ``examples/astronaut_motion_blur.png`` (made by
  ``examples/make_example.py``: the astronaut's face crop, 256 px, physically rendered camera shake of 8 px), copied.
* ``astronaut_photo_shake15.png``: ``skimage.data.astronaut()`` (NASA portrait of Eileen Collins, public domain),
  its top 384 rows (512 x 384, not square, so the demo's auto mode treats it as a photo and detects the face),
  blurred by the data engine: ``facedeblur.data.synth.shake_motion(np.random.default_rng(21), 15.0)`` rendered with
  ``facedeblur.data.synth.render`` (camera shake whose longest axis spans 15 px), rounded to 8 bits.

Run: ``python tools/make_demo_examples.py`` (prints the PSNR of each blurry example against its sharp source).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "facedeblur" / "demo" / "examples"
SEED, EXTENT, ROWS = 21, 15.0, 384


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * np.log10(255.0 ** 2 / mse)


def photo_example() -> tuple[np.ndarray, np.ndarray]:
    """(blurry, sharp) uint8 arrays of the photo example."""
    from skimage import data

    from facedeblur.data.synth import render, shake_motion

    sharp = np.ascontiguousarray(data.astronaut()[:ROWS])
    motion = shake_motion(np.random.default_rng(SEED), EXTENT)
    blurry = np.clip(np.round(render(sharp, motion)), 0, 255).astype(np.uint8)
    return blurry, sharp


def main() -> int:
    from PIL import Image

    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "examples" / "astronaut_motion_blur.png", OUT / "astronaut_face_shake8.png")
    blurry, sharp = photo_example()
    tmp = OUT / "astronaut_photo_shake15.png.tmp"
    Image.fromarray(blurry).save(tmp, format="PNG")
    tmp.replace(OUT / "astronaut_photo_shake15.png")
    face_b = np.asarray(Image.open(ROOT / "examples" / "astronaut_motion_blur.png").convert("RGB"))
    face_s = np.asarray(Image.open(ROOT / "examples" / "astronaut_sharp_crop.png").convert("RGB"))
    print(f"astronaut_face_shake8.png: PSNR {psnr(face_b, face_s):.2f} dB against the sharp crop")
    print(f"astronaut_photo_shake15.png: PSNR {psnr(blurry, sharp):.2f} dB against the sharp photo rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
