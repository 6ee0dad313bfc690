"""How the training stills are framed compared with the inference crop (the face pipeline's template).

For a seeded sample of the sharpness-filtered UTKFace stills (resized to the model's 256 px, as the data engine
uses them), fit the similarity transform of their 5 landmarks (dlib 68 points, reduced to 5) onto the
``cfmd-256-loose`` template. Scale < 1 means the still's face is larger than an inference crop's face.

    python benchmarks/still_framing.py --data ../shared/data [--count 80] [--out benchmarks/results/still_framing.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from facedeblur.data.engine import _find_stills
from facedeblur.data.landmarks import default_detector
from facedeblur.faces.align import affine_scale, five_points, similarity_transform, template_points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--count", type=int, default=80)
    ap.add_argument("--out", default="benchmarks/results/still_framing.json")
    args = ap.parse_args()
    det = default_detector()
    paths = _find_stills(Path(args.data))
    pick = [paths[i] for i in np.random.default_rng(0).choice(len(paths), min(args.count, len(paths)), replace=False)]
    tmpl = template_points("cfmd-256-loose", 256)
    scales, shifts, eyes = [], [], []
    for p in pick:
        img = cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), (256, 256), interpolation=cv2.INTER_CUBIC)
        found = det.detect(img)
        if not found:
            continue
        pts = five_points(np.asarray(found[0].landmarks))
        m = similarity_transform(pts, tmpl)
        scales.append(affine_scale(m))
        shifts.append(m[:, 2].tolist())
        eyes.append(float(np.linalg.norm(pts[1] - pts[0])))
    s = np.array(scales)
    res = {"stills": len(pick), "faces_found": len(s), "template": "cfmd-256-loose",
           "template_eye_distance_px": float(np.linalg.norm(tmpl[1] - tmpl[0])),
           "still_eye_distance_px_median": float(np.median(eyes)),
           "scale_median": float(np.median(s)), "scale_p10": float(np.percentile(s, 10)),
           "scale_p90": float(np.percentile(s, 90)),
           "translation_median_px": np.median(np.array(shifts), axis=0).tolist()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(args.out)
    print(f"{res['faces_found']}/{res['stills']} stills: still -> template scale median {res['scale_median']:.3f} "
          f"(p10 {res['scale_p10']:.3f}, p90 {res['scale_p90']:.3f}); eye distance {res['still_eye_distance_px_median']:.1f} px "
          f"vs template {res['template_eye_distance_px']:.1f} px")


if __name__ == "__main__":
    main()
