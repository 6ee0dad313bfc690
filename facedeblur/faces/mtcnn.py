"""MTCNN: face boxes and 5 landmarks, offline on CPU (Zhang, Zhang, Li, Qiao, "Joint Face Detection and Alignment
using Multi-task Cascaded Convolutional Networks", IEEE Signal Processing Letters 23(10), 2016).

Three cascaded networks (paper §II-A, Fig. 2): P-Net proposes candidate windows on an image pyramid, R-Net rejects
false candidates and refines the boxes, O-Net refines again and outputs five landmarks. Each stage applies
bounding-box regression, squares the boxes and merges overlapping ones with non-maximum suppression (NMS).

The weights are embedded in the package (``weights/mtcnn.safetensors``, 2 MB, sha256 checked on load): the MIT
licensed conversion shipped with facenet-pytorch (see ``weights/LICENSE-mtcnn.txt``), converted once by
``tools/convert_mtcnn_weights.py``. Nothing is downloaded at run time; only torch and numpy are needed.
"""
from __future__ import annotations

import math
import pathlib
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.face_landmarks import Face
from ..errors import InputError

__all__ = ["MTCNN", "MTCNNNets", "PNet", "RNet", "ONet", "WEIGHTS_PATH", "WEIGHTS_SHA256", "WEIGHTS_ORIGIN",
           "WEIGHTS_LICENSE"]

WEIGHTS_PATH = pathlib.Path(__file__).resolve().parent / "weights" / "mtcnn.safetensors"
WEIGHTS_SHA256 = "d07f487ee95673f728f40fdb797a2e741847c6ec9b348d3d17e4dfce52ac9e8b"
WEIGHTS_ORIGIN = ("facenet-pytorch 2.6.0 (https://github.com/timesler/facenet-pytorch), facenet_pytorch/data/"
                  "{pnet,rnet,onet}.pt, converted by tools/convert_mtcnn_weights.py; those descend from the MTCNN "
                  "authors' Caffe models via David Sandberg's TensorFlow port (github.com/davidsandberg/facenet)")
WEIGHTS_LICENSE = "MIT (Copyright (c) 2019 Timothy Esler); full text in facedeblur/faces/weights/LICENSE-mtcnn.txt"

_PIXEL_MEAN, _PIXEL_SCALE = 127.5, 1.0 / 128.0  # network input: (x - 127.5) / 128
_CELL, _STRIDE = 12, 2  # P-Net window and stride in the pyramid level (paper Fig. 2)
_NMS_PNET_SCALE, _NMS_PNET, _NMS_RNET, _NMS_ONET = 0.5, 0.7, 0.7, 0.7
_CHUNK = 256  # crops per R/O-Net forward
_MIN_FACE_LOWER = 6.0


# ------------------------------------------------------------------------------------------------ networks


class PNet(nn.Module):
    """Proposal network: fully convolutional, a 12x12 window every 2 px. Returns (face probability (N, h, w),
    box offsets (N, 4, h, w))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.cls, self.reg = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.cls(x), dim=1)[:, 1], self.reg(x)


class RNet(nn.Module):
    """Refinement network on 24x24 crops. Returns (face probability (N,), box offsets (N, 4))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.fc, self.prelu4 = nn.Linear(64 * 3 * 3, 128), nn.PReLU(128)
        self.cls, self.reg = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.fc(self.prelu3(self.conv3(x)).flatten(1)))
        return torch.softmax(self.cls(x), dim=1)[:, 1], self.reg(x)


class ONet(nn.Module):
    """Output network on 48x48 crops. Returns (face probability (N,), box offsets (N, 4), landmarks (N, 10) as
    five x then five y, relative to the crop)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.fc, self.prelu5 = nn.Linear(128 * 3 * 3, 256), nn.PReLU(256)
        self.cls, self.reg, self.landmarks = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.fc(self.prelu4(self.conv4(x)).flatten(1)))
        return torch.softmax(self.cls(x), dim=1)[:, 1], self.reg(x), self.landmarks(x)


class MTCNNNets(nn.Module):
    """The three networks; the state dict keys are those of ``weights/mtcnn.safetensors``."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()


# ------------------------------------------------------------------------------------------------ box maths


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float,
         mode: Literal["union", "min"] = "union") -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best first. ``min`` divides the overlap by the smaller area."""
    x0, y0, x1, y1 = boxes.T
    areas = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        denom = np.minimum(areas[i], areas[rest]) if mode == "min" else areas[i] + areas[rest] - inter
        order = rest[inter <= threshold * np.maximum(denom, 1e-9)]
    return np.asarray(keep, dtype=np.int64)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Bounding-box regression (paper §II-B.2): offsets are fractions of the box width/height."""
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    return boxes + offsets * wh


def _square(boxes: np.ndarray) -> np.ndarray:
    """Integer square boxes (x0, y0, x0 + side, y0 + side) around the centres of ``boxes``, side = longer side."""
    side = np.maximum(np.round(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])), 1)
    x0 = np.round((boxes[:, 0] + boxes[:, 2] - side) / 2)
    y0 = np.round((boxes[:, 1] + boxes[:, 3] - side) / 2)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def _valid(boxes: np.ndarray) -> np.ndarray:
    return np.isfinite(boxes).all(axis=1) & (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)


# ------------------------------------------------------------------------------------------------ input checks


def _check_rgb(img: object, what: str = "image") -> np.ndarray:
    """An HxWx3 uint8 RGB array, or InputError naming the problem and the fix."""
    if isinstance(img, torch.Tensor):
        raise InputError(f"{what} is a torch.Tensor; MTCNN takes an HxWx3 uint8 numpy array: for a CHW float "
                         f"tensor in [0, 1] pass (t.permute(1, 2, 0) * 255).round().clamp(0, 255).byte().cpu().numpy()")
    if not isinstance(img, np.ndarray):
        hint = " (a PIL image: pass np.asarray(img.convert('RGB')))" if hasattr(img, "convert") else ""
        raise InputError(f"{what} is a {type(img).__name__}, expected an HxWx3 uint8 numpy array{hint}")
    if img.size == 0:
        raise InputError(f"{what} is empty (shape {img.shape}); pass an HxWx3 uint8 RGB image")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        raise InputError(f"{what} is greyscale (shape {img.shape}); MTCNN needs RGB: "
                         f"np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)")
    if img.ndim == 3 and img.shape[2] == 4:
        raise InputError(f"{what} has 4 channels (RGBA?); drop alpha: img[..., :3]")
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"{what} has shape {img.shape}; expected HxWx3 (RGB, channels last). For a CHW array "
                         f"pass img.transpose(1, 2, 0)")
    if img.dtype != np.uint8:
        fix = ("(img * 255).round().clip(0, 255).astype(np.uint8)" if np.issubdtype(img.dtype, np.floating)
               else "img.clip(0, 255).astype(np.uint8)")
        raise InputError(f"{what} has dtype {img.dtype}; MTCNN expects uint8 RGB in 0..255. If it holds values "
                         f"in [0, 1] convert with {fix}")
    return img


def _check_box(box: Sequence[float]) -> np.ndarray:
    try:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"box {box!r} is not 4 numbers (x0, y0, x1, y1)") from None
    if b.size != 4 or not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
        raise InputError(f"box {box!r} must be 4 finite numbers (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
    return b


def _check_min_face(v: float) -> float:
    if not isinstance(v, (int, float)) or not math.isfinite(v) or v < _MIN_FACE_LOWER:
        raise InputError(f"min_face_size={v!r}: must be a number of pixels >= {_MIN_FACE_LOWER:g} (P-Net sees 12x12 "
                         f"windows; smaller faces would need the image upsampled more than 2x). Upscale the image "
                         f"instead")
    return float(v)


# ------------------------------------------------------------------------------------------------ detector


class MTCNN:
    """Multi-task cascaded face detector with 5 landmarks (left eye, right eye, nose, mouth left, mouth right;
    left/right as seen in the image). Implements :class:`facedeblur.data.landmarks.LandmarkDetector`.

    Args:
        device: torch device for the networks ("cpu" is fine: ~tens of ms for a 512x512 image).
        min_face_size: smallest face (px, longer side of the box) searched for and returned; sets the first
            pyramid scale 12 / min_face_size (P-Net sometimes fires on smaller faces: those are dropped).
        thresholds: face-probability thresholds of P-Net, R-Net and O-Net (paper defaults 0.6, 0.7, 0.7).
        factor: scale step of the image pyramid (0.709 ~ 1/sqrt(2): the searched area halves per level).
        weights: a different ``.safetensors`` file with the same keys (default: the embedded one, sha256 checked).

    Raises:
        InputError: bad options. WeightsIntegrityError / WeightsMismatchError: a corrupt or foreign weight file.
    """

    def __init__(self, device: str | torch.device = "cpu", min_face_size: float = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 weights: str | pathlib.Path | None = None) -> None:
        from ..weights.store import load_state_dict_strict, read_state_dict

        self.min_face_size = _check_min_face(min_face_size)
        ts = tuple(thresholds) if isinstance(thresholds, (tuple, list)) else ()
        if len(ts) != 3 or not all(isinstance(t, (int, float)) and 0 < t < 1 for t in ts):
            raise InputError(f"thresholds={thresholds!r}: need three probabilities in (0, 1) for P-, R- and O-Net, "
                             f"e.g. (0.6, 0.7, 0.7)")
        if not isinstance(factor, (int, float)) or not 0.1 <= factor <= 0.95:
            raise InputError(f"factor={factor!r}: the pyramid scale step must be in [0.1, 0.95] (paper: 0.709)")
        self.thresholds = tuple(float(t) for t in ts)
        self.factor = float(factor)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise InputError(f"device={device!r} is not a torch device ({e}); use 'cpu', 'cuda' or 'cuda:0'") from None
        path = WEIGHTS_PATH if weights is None else pathlib.Path(weights)
        sd = read_state_dict(path, expected_sha256=WEIGHTS_SHA256 if weights is None else None)
        self.nets = MTCNNNets()
        load_state_dict_strict(self.nets, sd, source=str(path))
        # channels-last: CPU max-pooling with ceil_mode is several times faster in this layout
        self.nets.to(self.device, memory_format=torch.channels_last).eval().requires_grad_(False)

    # -------------------------------------------------------------------------------------- public API

    def detect(self, rgb: np.ndarray, *, max_faces: int | None = None, only_center_face: bool = False,
               min_face_size: float | None = None, sort_by: Literal["size", "score"] = "size") -> list[Face]:
        """Faces in an HxWx3 uint8 RGB image, largest first (``sort_by="score"``: most confident first).

        ``max_faces`` keeps the first N after sorting; ``only_center_face`` keeps the one face whose box centre is
        nearest the image centre; ``min_face_size`` overrides the detector's for this call (faces whose longer box
        side is below it are not returned). Boxes are (x0, y0, x1, y1) floats and may reach outside the image for
        faces cut by the border; landmarks are (5, 2) float32 (x, y) pixels.
        """
        return self.detect_batch([rgb], max_faces=max_faces, only_center_face=only_center_face,
                                 min_face_size=min_face_size, sort_by=sort_by)[0]

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[np.ndarray], *, max_faces: int | None = None,
                     only_center_face: bool = False, min_face_size: float | None = None,
                     sort_by: Literal["size", "score"] = "size") -> list[list[Face]]:
        """:meth:`detect` for several images at once (same-size images share P-Net passes; all crops of R-Net and
        O-Net are batched together). Returns one list per image."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        if not isinstance(images, (list, tuple)) or not images:
            raise InputError("detect_batch needs a non-empty list of HxWx3 uint8 images (for one image use detect)")
        arrays = [_check_rgb(im, f"images[{i}]") for i, im in enumerate(images)]
        if max_faces is not None and (not isinstance(max_faces, (int, np.integer)) or isinstance(max_faces, bool)
                                      or max_faces < 1):
            raise InputError(f"max_faces={max_faces!r}: pass a positive int, or None for all faces")
        if sort_by not in ("size", "score"):
            raise InputError(f"sort_by={sort_by!r}: use 'size' (largest first) or 'score'")
        min_face = self.min_face_size if min_face_size is None else _check_min_face(min_face_size)

        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device).permute(2, 0, 1).float() for a in arrays]
        idx, boxes, _ = self._stage_p(tensors, min_face)
        idx, boxes, _ = self._stage_r(tensors, idx, boxes)
        idx, boxes, scores, points = self._stage_o(tensors, idx, boxes)

        out: list[list[Face]] = []
        for k, a in enumerate(arrays):
            sel = np.flatnonzero(idx == k)
            faces = [Face(tuple(float(v) for v in boxes[i]), float(scores[i]), points[i].astype(np.float32))
                     for i in sel if max(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]) >= min_face]
            if sort_by == "size":
                faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            else:
                faces.sort(key=lambda f: -f.score)
            if only_center_face and faces:
                cy, cx = a.shape[0] / 2, a.shape[1] / 2
                faces = [min(faces, key=lambda f: ((f.box[0] + f.box[2]) / 2 - cx) ** 2
                             + ((f.box[1] + f.box[3]) / 2 - cy) ** 2)]
            out.append(faces[:int(max_faces)] if max_faces is not None else faces)
        return out

    @torch.inference_mode()
    def refine(self, rgb: np.ndarray, box: Sequence[float]) -> Face:
        """Box, score and landmarks of a face known to lie in ``box`` (x0, y0, x1, y1): R-Net then O-Net on the
        squared box, no thresholds (read ``score`` to judge the result). Used to track a face between frames."""
        img = torch.from_numpy(np.ascontiguousarray(_check_rgb(rgb))).to(self.device).permute(2, 0, 1).float()
        b = _square(_check_box(box)[None])
        prob, reg = self._run_rnet([img], np.zeros(1, np.int64), b)
        refined = _square(_regress(b, reg))
        if _valid(refined).all():
            b = refined
        prob, reg, lm = self._run_onet([img], np.zeros(1, np.int64), b)
        pts = self._landmarks(b, lm)[0]
        out = _regress(b, reg)[0]
        if not _valid(out[None]).all():
            out = b[0]
        return Face(tuple(float(v) for v in out), float(prob[0]), pts.astype(np.float32))

    # -------------------------------------------------------------------------------------- stages

    def _scales(self, h: int, w: int, min_face: float) -> list[float]:
        """Image pyramid (paper §II-A): from 12 / min_face down while the short side stays >= 12 px."""
        scales, s = [], _CELL / min_face
        while min(h, w) * s >= _CELL:
            scales.append(s)
            s *= self.factor
        return scales

    def _stage_p(self, tensors: list[torch.Tensor], min_face: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P-Net on every pyramid level; per-level NMS 0.5, then NMS 0.7 per image, regression, square boxes."""
        groups: dict[tuple[int, int], list[int]] = {}
        for k, t in enumerate(tensors):
            groups.setdefault(tuple(t.shape[1:]), []).append(k)
        per_image: dict[int, list[np.ndarray]] = {k: [] for k in range(len(tensors))}
        t0 = self.thresholds[0]
        for (h, w), members in groups.items():
            batch = torch.stack([tensors[k] for k in members])
            for s in self._scales(h, w, min_face):
                size = (math.ceil(h * s), math.ceil(w * s))
                level = F.interpolate(batch, size=size, mode="area" if s < 1 else "bilinear",
                                      **({} if s < 1 else {"align_corners": False}))
                x = ((level - _PIXEL_MEAN) * _PIXEL_SCALE).contiguous(memory_format=torch.channels_last)
                prob, reg = self.nets.pnet(x)
                b, i, j = torch.nonzero(prob > t0, as_tuple=True)
                if b.numel() == 0:
                    continue
                score = prob[b, i, j].cpu().numpy().astype(np.float64)
                offs = reg[b, :, i, j].cpu().numpy().astype(np.float64)
                y0, x0 = i.cpu().numpy() * _STRIDE / s, j.cpu().numpy() * _STRIDE / s
                cand = np.stack([x0, y0, x0 + _CELL / s, y0 + _CELL / s], axis=1)
                b = b.cpu().numpy()
                for m, k in enumerate(members):
                    sel = np.flatnonzero(b == m)
                    if sel.size:
                        keep = sel[_nms(cand[sel], score[sel], _NMS_PNET_SCALE)]
                        per_image[k].append(np.concatenate([cand[keep], score[keep, None], offs[keep]], axis=1))
        idx, boxes, scores = [], [], []
        for k, rows in per_image.items():
            if not rows:
                continue
            r = np.concatenate(rows)
            r = r[_nms(r[:, :4], r[:, 4], _NMS_PNET)]
            sq = _square(_regress(r[:, :4], r[:, 5:9]))
            ok = _valid(sq)
            idx.append(np.full(int(ok.sum()), k, np.int64))
            boxes.append(sq[ok])
            scores.append(r[ok, 4])
        return _cat(idx, boxes, scores)

    def _stage_r(self, tensors: list[torch.Tensor], idx: np.ndarray, boxes: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """R-Net on 24x24 crops: threshold, NMS 0.7 per image, regression, square boxes."""
        if not len(idx):
            return idx, boxes, np.zeros(0)
        prob, reg = self._run_rnet(tensors, idx, boxes)
        keep = prob > self.thresholds[1]
        idx, boxes, prob, reg = idx[keep], boxes[keep], prob[keep], reg[keep]
        keep = _per_image_nms(idx, boxes, prob, _NMS_RNET)
        sq = _square(_regress(boxes[keep], reg[keep]))
        ok = _valid(sq)
        return idx[keep][ok], sq[ok], prob[keep][ok]

    def _stage_o(self, tensors: list[torch.Tensor], idx: np.ndarray, boxes: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """O-Net on 48x48 crops: threshold, landmarks, regression, NMS 0.7 (overlap / smaller area) per image."""
        if not len(idx):
            return idx, boxes, np.zeros(0), np.zeros((0, 5, 2))
        prob, reg, lm = self._run_onet(tensors, idx, boxes)
        keep = prob > self.thresholds[2]
        pts = self._landmarks(boxes[keep], lm[keep])
        out = _regress(boxes[keep], reg[keep])
        idx, prob = idx[keep], prob[keep]
        ok = _valid(out)
        idx, out, prob, pts = idx[ok], out[ok], prob[ok], pts[ok]
        keep = _per_image_nms(idx, out, prob, _NMS_ONET, mode="min")
        return idx[keep], out[keep], prob[keep], pts[keep]

    @staticmethod
    def _landmarks(boxes: np.ndarray, lm: np.ndarray) -> np.ndarray:
        """O-Net's landmark outputs (five x, five y, as fractions of the crop) -> (N, 5, 2) pixel (x, y)."""
        w = (boxes[:, 2] - boxes[:, 0])[:, None]
        h = (boxes[:, 3] - boxes[:, 1])[:, None]
        return np.stack([boxes[:, :1] + lm[:, :5] * w, boxes[:, 1:2] + lm[:, 5:] * h], axis=2)

    def _run_rnet(self, tensors: list[torch.Tensor], idx: np.ndarray, boxes: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        probs, regs = [], []
        for a in range(0, len(idx), _CHUNK):
            p, r = self.nets.rnet(self._crops(tensors, idx[a:a + _CHUNK], boxes[a:a + _CHUNK], 24))
            probs.append(p.cpu().numpy())
            regs.append(r.cpu().numpy())
        return np.concatenate(probs).astype(np.float64), np.concatenate(regs).astype(np.float64)

    def _run_onet(self, tensors: list[torch.Tensor], idx: np.ndarray, boxes: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        probs, regs, lms = [], [], []
        for a in range(0, len(idx), _CHUNK):
            p, r, lm = self.nets.onet(self._crops(tensors, idx[a:a + _CHUNK], boxes[a:a + _CHUNK], 48))
            probs.append(p.cpu().numpy())
            regs.append(r.cpu().numpy())
            lms.append(lm.cpu().numpy())
        return (np.concatenate(probs).astype(np.float64), np.concatenate(regs).astype(np.float64),
                np.concatenate(lms).astype(np.float64))

    def _crops(self, tensors: list[torch.Tensor], idx: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
        """Normalised size x size crops of integer square boxes; parts outside the image are black (0)."""
        out = torch.empty(len(idx), 3, size, size, device=self.device)
        for n, (k, (x0, y0, x1, y1)) in enumerate(zip(idx, boxes.astype(np.int64))):
            img = tensors[k]
            h, w = img.shape[1:]
            patch = img.new_zeros(3, y1 - y0, x1 - x0)
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if cx1 > cx0 and cy1 > cy0:
                patch[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = img[:, cy0:cy1, cx0:cx1]
            if patch.shape[1] >= size:
                out[n] = F.interpolate(patch[None], size=(size, size), mode="area")[0]
            else:
                out[n] = F.interpolate(patch[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        return ((out - _PIXEL_MEAN) * _PIXEL_SCALE).contiguous(memory_format=torch.channels_last)


def _per_image_nms(idx: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float,
                   mode: Literal["union", "min"] = "union") -> np.ndarray:
    """NMS within each image of a batch; kept indices, grouped by image."""
    keep = [sel[_nms(boxes[sel], scores[sel], threshold, mode)] for k in np.unique(idx)
            for sel in [np.flatnonzero(idx == k)]]
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


def _cat(idx: list[np.ndarray], boxes: list[np.ndarray], scores: list[np.ndarray]
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not idx:
        return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)
    return np.concatenate(idx), np.concatenate(boxes), np.concatenate(scores)
