"""The foundation issue's quality-bar verdict in facedeblur.benchmark.quality.format_report."""
from __future__ import annotations

import numpy as np

from facedeblur.benchmark.quality import evaluate_windows, format_report


def _windows(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 220, (16, 16, 3))
    return [np.clip(base + rng.integers(-40, 41, (5, 16, 16, 3)) * s, 0, 255).astype(np.uint8)
            for s in (0.05, 0.2, 0.6, 1.0)]


def test_bar_met_by_the_oracle_and_not_by_the_identity():
    windows = _windows()

    def identity(blurry, us):
        return np.stack([blurry] * len(us))

    def oracle(blurry, us):  # knows the window: returns its frames (perfect restoration at every u)
        frames = next(w for w in windows if np.array_equal(blurry, np.round(w.mean(0)).astype(np.uint8))
                      or np.abs(blurry.astype(int) - w.mean(0)).max() <= 1)
        return np.stack([frames[round(u * (len(frames) - 1))] for u in us])

    text, summary = format_report(evaluate_windows(oracle, windows, progress=False))
    assert summary["bar"]["met"] and summary["bar"]["positions"] == 5 and "**met**" in text
    text, summary = format_report(evaluate_windows(identity, windows, progress=False))
    assert not summary["bar"]["met"] and summary["bar"]["bins_beaten"] == 0 and "**not met**" in text
