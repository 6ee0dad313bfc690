"""``python -m facedeblur.train MODEL --data DIR`` (and ``torchrun --nproc_per_node N -m facedeblur.train ...``)."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
