"""The README example restored, side by side: blurry input | restored (u = 0.5) | sharp reference.

Writes one PNG (three 256 px panels, each with its eye region enlarged to the panel width below it) and prints the PSNR of the blurry and of the
restored face against the sharp crop, and the mean absolute change of the pixels.

    python examples/side_by_side.py --model cfmd-gan --out docs/images/readme_example.png
    python examples/side_by_side.py --model local-dir:runs/NAME/export --out /tmp/cmp.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
EYES = (slice(92, 140), slice(76, 180))  # rows, cols of the eye region in the 256 px crop


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _panel(img: np.ndarray, label: str) -> np.ndarray:
    zoom = cv2.resize(img[EYES], None, fx=256 / (EYES[1].stop - EYES[1].start), fy=256 / (EYES[1].stop - EYES[1].start),
                      interpolation=cv2.INTER_NEAREST)
    out = np.concatenate([img, zoom], axis=0).copy()
    cv2.putText(out, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.putText(out, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def main(argv: list[str] | None = None) -> int:
    import facedeblur
    from facedeblur.restore.convert import write_bytes_atomic

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cfmd-gan")
    p.add_argument("--u", type=float, default=0.5)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--json", default=None, help="also write the numbers here")
    a = p.parse_args(argv)
    blurry = cv2.cvtColor(cv2.imread(str(HERE / "astronaut_motion_blur.png")), cv2.COLOR_BGR2RGB)
    sharp = cv2.cvtColor(cv2.imread(str(HERE / "astronaut_sharp_crop.png")), cv2.COLOR_BGR2RGB)
    restored = facedeblur.load(a.model).restore(blurry, u=a.u, faces=False)
    nums = {"model": a.model, "u": a.u, "psnr_blurry_db": round(psnr(blurry, sharp), 3),
            "psnr_restored_db": round(psnr(restored, sharp), 3),
            "mean_abs_change": round(float(np.abs(restored.astype(np.float64) - blurry).mean()), 3)}
    nums["gain_db"] = round(nums["psnr_restored_db"] - nums["psnr_blurry_db"], 3)
    row = np.concatenate([_panel(blurry, f"blurry {nums['psnr_blurry_db']:.2f} dB"),
                          _panel(restored, f"{a.model} {nums['psnr_restored_db']:.2f} dB"),
                          _panel(sharp, "sharp reference")], axis=1)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(a.out, buf.tobytes())
    if a.json:
        write_bytes_atomic(a.json, (json.dumps(nums, indent=1) + "\n").encode())
    print(json.dumps(nums))
    return 0


if __name__ == "__main__":
    sys.exit(main())
