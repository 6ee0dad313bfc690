"""Weights: safetensors loading with integrity checks, resolution, Hub sources, export and imports.

* :func:`read_state_dict` reads ``.safetensors`` only (sha256-verified); pickles are refused.
* :func:`load_state_dict_strict` loads with exact key/shape matching.
* :func:`resolve_weights` finds a card's file: explicit ``weights=`` -> the package's embedded file ->
  the Hugging Face Hub at the card's pinned revision (``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``cache_dir``
  honoured); :func:`load_pretrained_into` = resolve + read + strict load.
* :func:`card_from_source` reads ``local-dir:PATH`` / ``hf-hub:ORG/REPO[@REVISION]`` model folders.
* :func:`save_pretrained` writes a Hub-ready folder; :func:`push_to_hub` uploads it and returns the commit.
* :func:`download` fetches a card's weights into the cache (``facedeblur download NAME``).
* :mod:`facedeblur.weights.official` converts the CFMD-GAN authors' checkpoint without ``torch.load``.
* :mod:`facedeblur.weights.dlib_resnet` reads dlib's face-recognition ResNet (``.dat``) for
  :class:`facedeblur.models.face_resnet.DlibFaceResNet` (a face prior, not a zoo model).
"""
from __future__ import annotations

from .dlib_resnet import convert_dlib_face_resnet, load_dlib_face_resnet, read_dlib_face_resnet
from .export import push_to_hub, render_model_card, save_pretrained
from .hub import card_from_source, download, load_pretrained_into, resolve_weights
from .official import import_cfmd_gan_official
from .store import load_state_dict_strict, read_state_dict, sha256_file

__all__ = ["read_state_dict", "load_state_dict_strict", "resolve_weights", "load_pretrained_into",
           "card_from_source", "save_pretrained", "push_to_hub", "download", "import_cfmd_gan_official",
           "render_model_card", "sha256_file", "convert_dlib_face_resnet", "load_dlib_face_resnet",
           "read_dlib_face_resnet"]
