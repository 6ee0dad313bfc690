"""Identity distance: how far a restored face is from the sharp face in a face-recognition embedding.

Backends (pick with ``IdentityDistance(backend=...)``):

* ``"dlib"`` (default, works offline): dlib's ResNet face-recognition model
  ``dlib_face_recognition_resnet_model_v1.dat`` (128-d; 99.38% on LFW per dlib) on a 150x150 chip aligned with
  the 5-point predictor ``shape_predictor_5_face_landmarks.dat`` (both from ``face_recognition_models``);
  faces found by dlib's HOG frontal detector. Distance = Euclidean distance of the embeddings; dlib's
  same-person threshold is 0.6.
* ``"arcface"``: insightface's ``buffalo_l`` pack (RetinaFace detector + ArcFace ResNet-50, 512-d), when
  ``insightface``/``onnxruntime`` are installed and the pack is already in ``~/.insightface/models``.
  Distance = 1 - cosine similarity. Its model weights are for non-commercial research only.
* ``"facenet"``: facenet-pytorch's MTCNN + InceptionResnetV1 trained on VGGFace2 (512-d, L2-normalised) when
  the package is installed and the weights are already in the torch hub cache. Distance = Euclidean.

Nothing is ever downloaded: a backend whose weights are absent raises :class:`MetricUnavailable`.

Modes: ``"detect"`` finds the largest face in each image independently (a face that is not found gives
``None`` and is counted); ``"aligned"`` treats the whole image as the face box (for aligned face crops).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from ..errors import InputError
from ._common import MetricUnavailable, face_model_path, require_dlib, to_uint8_rgb

__all__ = ["IdentityDistance", "IdentityReport", "identity_backends"]

Mode = Literal["detect", "aligned"]
Backend = Literal["dlib", "arcface", "facenet"]

_FACENET_WEIGHTS = "20180402-114759-vggface2.pt"  # facenet-pytorch's VGGFace2 checkpoint name in the torch hub cache


def _insightface_root() -> Path:
    return Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface"))


def _availability(backend: str) -> tuple[bool, str]:
    if backend == "dlib":
        try:
            require_dlib()
            face_model_path("dlib_face_recognition_resnet_model_v1.dat")
            face_model_path("shape_predictor_5_face_landmarks.dat")
        except MetricUnavailable as exc:
            return False, str(exc)
        return True, "dlib ResNet 128-d (dlib_face_recognition_resnet_model_v1)"
    if backend == "arcface":
        for mod in ("insightface", "onnxruntime"):
            if importlib.util.find_spec(mod) is None:
                return False, f"ArcFace needs {mod}: pip install insightface onnxruntime (weights: non-commercial)"
        pack = _insightface_root() / "models" / "buffalo_l"
        if not pack.is_dir() or not any(pack.glob("*.onnx")):
            return False, f"ArcFace model pack buffalo_l is not in {pack} (no download is attempted)"
        return True, f"insightface buffalo_l (ArcFace R50, 512-d) from {pack}"
    if backend == "facenet":
        if importlib.util.find_spec("facenet_pytorch") is None:
            return False, "FaceNet needs facenet-pytorch: pip install facenet-pytorch"
        import torch

        ckpt = Path(torch.hub.get_dir()) / "checkpoints" / _FACENET_WEIGHTS
        if not ckpt.is_file():
            return False, f"FaceNet VGGFace2 weights are not cached at {ckpt} (no download is attempted)"
        return True, f"facenet-pytorch InceptionResnetV1 VGGFace2 (512-d) from {ckpt}"
    raise InputError(f"unknown identity backend {backend!r}; use 'dlib', 'arcface' or 'facenet'")


def identity_backends() -> dict[str, tuple[bool, str]]:
    """Each identity backend -> (available, reason or description)."""
    return {b: _availability(b) for b in ("dlib", "arcface", "facenet")}


class _Dlib:
    name = "dlib"
    threshold: float | None = 0.6
    convention = ("identity: dlib ResNet 128-d (dlib_face_recognition_resnet_model_v1, 150x150 chip aligned by the "
                  "5-point predictor, padding 0.25, no jitter), Euclidean distance, < 0.6 = same person")

    def __init__(self, upsample: int, detect_size: int) -> None:
        dlib = require_dlib()
        self._dlib = dlib
        self._det = dlib.get_frontal_face_detector()
        self._sp = dlib.shape_predictor(str(face_model_path("shape_predictor_5_face_landmarks.dat")))
        self._rec = dlib.face_recognition_model_v1(str(face_model_path("dlib_face_recognition_resnet_model_v1.dat")))
        self.upsample, self.detect_size = upsample, detect_size

    def detect(self, rgb: np.ndarray) -> tuple[float, float, float, float] | None:
        import cv2

        scale = min(1.0, self.detect_size / max(rgb.shape[:2]))
        small = rgb if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rects = self._det(np.ascontiguousarray(small), self.upsample)
        if not len(rects):
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        return r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale

    def embed(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._sp(rgb, rect)
        return np.asarray(self._rec.compute_face_descriptor(rgb, shape, 0), dtype=np.float64)

    def find(self, rgb: np.ndarray) -> np.ndarray | None:
        box = self.detect(rgb)
        return None if box is None else self.embed(rgb, box)

    def embed_whole(self, rgb: np.ndarray) -> np.ndarray:
        return self.embed(rgb, (0.0, 0.0, float(rgb.shape[1] - 1), float(rgb.shape[0] - 1)))

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))


class _ArcFace:
    name = "arcface"
    threshold: float | None = None
    convention = ("identity: ArcFace R50 (insightface buffalo_l, 512-d, RetinaFace 5-point alignment to 112x112), "
                  "cosine distance 1 - cos")

    def __init__(self) -> None:
        from insightface.app import FaceAnalysis

        self._app = FaceAnalysis(name="buffalo_l", root=str(_insightface_root()),
                                 allowed_modules=["detection", "recognition"], providers=["CPUExecutionProvider"])
        self._app.prepare(ctx_id=-1, det_size=(640, 640))

    def find(self, rgb: np.ndarray) -> np.ndarray | None:
        faces = self._app.get(np.ascontiguousarray(rgb[..., ::-1]))  # insightface takes BGR
        if not faces:
            return None
        f = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
        return np.asarray(f.normed_embedding, dtype=np.float64)

    def embed_whole(self, rgb: np.ndarray) -> np.ndarray:
        import cv2  # the crop is taken as an ArcFace-aligned face

        chip = cv2.resize(rgb, (112, 112), interpolation=cv2.INTER_AREA)
        e = np.asarray(self._app.models["recognition"].get_feat([chip[..., ::-1]]), dtype=np.float64).ravel()
        return e / np.linalg.norm(e)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


class _FaceNet:
    name = "facenet"
    threshold: float | None = None
    convention = ("identity: FaceNet InceptionResnetV1 VGGFace2 (facenet-pytorch, MTCNN box resized to 160x160, 512-d "
                  "L2-normalised), Euclidean distance")

    def __init__(self) -> None:
        from facenet_pytorch import MTCNN, InceptionResnetV1

        self._mtcnn = MTCNN(image_size=160, margin=0, select_largest=True, device="cpu")
        self._net = InceptionResnetV1(pretrained="vggface2").eval()

    def find(self, rgb: np.ndarray) -> np.ndarray | None:
        boxes, _ = self._mtcnn.detect(rgb)
        if boxes is None or not len(boxes):
            return None
        x0, y0, x1, y1 = (int(round(float(v))) for v in max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])))
        return self.embed_whole(rgb[max(y0, 0):y1, max(x0, 0):x1])

    def embed_whole(self, rgb: np.ndarray) -> np.ndarray:
        import cv2
        import torch

        chip = cv2.resize(rgb, (160, 160), interpolation=cv2.INTER_AREA)
        # MTCNN's fixed standardisation (x - 127.5) / 128
        t = (torch.from_numpy(chip.astype(np.float32)).permute(2, 0, 1)[None] - 127.5) / 128.0
        with torch.no_grad():
            return self._net(t)[0].double().numpy()

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))


@dataclass
class IdentityReport:
    """Summary of :meth:`IdentityDistance.evaluate`: distances of restored (and blurry) images to the sharp ones."""

    convention: str
    n: int
    distances: list[float | None]
    blurry_distances: list[float | None] | None
    no_face_sharp: int
    no_face_restored: int
    no_face_blurry: int | None
    threshold: float | None

    @staticmethod
    def _mean(v: Sequence[float | None]) -> float:
        vals = [x for x in v if x is not None]
        return float(np.mean(vals)) if vals else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """Means over the pairs where both faces were found, match rates, and the no-face counts."""
        out: dict[str, Any] = {"convention": self.convention, "n": self.n, "no_face_sharp": self.no_face_sharp,
                               "no_face_restored": self.no_face_restored,
                               "identity_distance": self._mean(self.distances)}
        if self.threshold is not None:
            ok = [d for d in self.distances if d is not None]
            out["same_person_rate"] = float(np.mean([d < self.threshold for d in ok])) if ok else float("nan")
        if self.blurry_distances is not None:
            out["identity_distance_blurry"] = self._mean(self.blurry_distances)
            out["no_face_blurry"] = self.no_face_blurry
            if self.threshold is not None:
                ok = [d for d in self.blurry_distances if d is not None]
                out["same_person_rate_blurry"] = (float(np.mean([d < self.threshold for d in ok]))
                                                  if ok else float("nan"))
        return out


class IdentityDistance:
    """Identity distance between a restored face and the sharp face (lower = closer). See the module docstring.

    ``distance(img, ref)`` returns None when either face is not found (``no_face`` counts those images).
    """

    def __init__(self, backend: Backend = "dlib", mode: Mode = "detect", upsample: int = 1,
                 detect_size: int = 640) -> None:
        if mode not in ("detect", "aligned"):
            raise InputError(f"IdentityDistance: unknown mode {mode!r}; use 'detect' or 'aligned'")
        ok, why = _availability(backend)
        if not ok:
            raise MetricUnavailable(why)
        self.mode = mode
        self.backend: _Dlib | _ArcFace | _FaceNet
        if backend == "dlib":
            self.backend = _Dlib(upsample, detect_size)
        elif backend == "arcface":
            self.backend = _ArcFace()
        else:
            self.backend = _FaceNet()
        self.no_face = 0

    @property
    def convention(self) -> str:
        how = "whole image as the face box (aligned crops)" if self.mode == "aligned" else "largest detected face"
        return f"{self.backend.convention}; {how}"

    @property
    def threshold(self) -> float | None:
        """The backend's same-person distance threshold (dlib: 0.6), None where the backend publishes none."""
        return self.backend.threshold

    def embed(self, img: np.ndarray) -> np.ndarray | None:
        """The embedding of the face in ``img`` (uint8 or float [0, 1] RGB), or None if no face is found."""
        rgb = to_uint8_rgb(img)
        if self.mode == "aligned":
            return self.backend.embed_whole(rgb)
        e = self.backend.find(rgb)
        if e is None:
            self.no_face += 1
        return e

    def distance(self, img: np.ndarray, ref: np.ndarray) -> float | None:
        """Distance of the face in ``img`` to the face in ``ref``; None if either has no face."""
        a, b = self.embed(img), self.embed(ref)
        return None if a is None or b is None else self.backend.distance(a, b)

    def evaluate(self, restored: Iterable[np.ndarray], sharp: Iterable[np.ndarray],
                 blurry: Iterable[np.ndarray] | None = None, progress: bool = False) -> IdentityReport:
        """Distances restored->sharp (and blurry->sharp when ``blurry`` is given) over paired sequences."""
        from tqdm.auto import tqdm

        restored, sharp = list(restored), list(sharp)
        blurry = None if blurry is None else list(blurry)
        if len(restored) != len(sharp) or (blurry is not None and len(blurry) != len(sharp)):
            raise InputError(f"IdentityDistance.evaluate: sequences differ in length (restored {len(restored)}, "
                             f"sharp {len(sharp)}, blurry {None if blurry is None else len(blurry)})")
        dists: list[float | None] = []
        bd: list[float | None] | None = None if blurry is None else []
        no_s = no_r = no_b = 0
        for i in tqdm(range(len(sharp)), desc="identity", disable=not progress):
            ref = self.embed(sharp[i])
            no_s += ref is None
            e = self.embed(restored[i])
            no_r += e is None
            dists.append(None if ref is None or e is None else self.backend.distance(e, ref))
            if blurry is not None and bd is not None:
                eb = self.embed(blurry[i])
                no_b += eb is None
                bd.append(None if ref is None or eb is None else self.backend.distance(eb, ref))
        return IdentityReport(self.convention, len(sharp), dists, bd, no_s, no_r, None if blurry is None else no_b,
                              self.threshold)
