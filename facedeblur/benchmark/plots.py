"""A small self-contained SVG chart writer (line and grouped-bar charts) for benchmark reports.

No plotting library: the charts are plain SVG 1.1 text (well-formed XML), readable in any browser and in
Markdown previews. Values that are None or not finite are skipped (a line breaks there).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

__all__ = ["Series", "line_chart", "bar_chart", "nice_ticks", "write_svg", "write_text_atomic", "PALETTE"]

#: colour-blind-safe palette (Okabe-Ito) followed by greys
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
           "#7F7F7F", "#B2B2B2")
_DASHES = ("", "6,3", "2,2", "8,3,2,3")

W, H = 720, 440
ML, MR, MT, MB = 70, 190, 46, 56  # margins: left (y labels), right (legend), top (title), bottom (x labels)


@dataclass
class Series:
    """One line (or one bar colour): ``label`` and y values at the chart's x values (None = missing)."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    dashed: bool = False
    markers: bool = True
    extra: dict = field(default_factory=dict)


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        lo, hi = lo - 0.5 if lo == hi else hi, hi + 0.5 if lo == hi else lo
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000 or a < 0.01:
        return f"{v:.3g}"
    return f"{v:.4g}"


def _header(title: str, width: int = W, height: int = H) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
            f"<title>{escape(title)}</title>",
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
            f'<text x="{ML + (width - ML - MR) / 2:.1f}" y="24" text-anchor="middle" font-size="15" '
            f'font-weight="bold">{escape(title)}</text>']


def _axes(lines: list[str], xlabel: str, ylabel: str, yt: list[float], ymap, xticks: list[tuple[float, str]]) -> None:
    x0, x1, y0, y1 = ML, W - MR, H - MB, MT
    for t in yt:
        y = ymap(t)
        lines.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        lines.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(_fmt(t))}</text>')
    for x, label in xticks:
        lines.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 5}" stroke="#333"/>')
        lines.append(f'<text x="{x:.1f}" y="{y0 + 19}" text-anchor="middle">{escape(label)}</text>')
    lines.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>')
    lines.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>')
    lines.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{H - 14}" text-anchor="middle">{escape(xlabel)}</text>')
    lines.append(f'<text x="18" y="{(y0 + y1) / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 18 {(y0 + y1) / 2:.1f})">{escape(ylabel)}</text>')


def _legend(lines: list[str], labels: list[str], dashed: list[bool], kind: str = "line") -> None:
    x = W - MR + 14
    for i, label in enumerate(labels):
        y = MT + 8 + 18 * i
        col = PALETTE[i % len(PALETTE)]
        if kind == "bar":
            lines.append(f'<rect x="{x}" y="{y - 8}" width="16" height="10" fill="{col}"/>')
        else:
            dash = f' stroke-dasharray="{_DASHES[1]}"' if dashed[i] else ""
            lines.append(f'<line x1="{x}" y1="{y - 3}" x2="{x + 18}" y2="{y - 3}" stroke="{col}" '
                         f'stroke-width="2"{dash}/>')
        text = label if len(label) <= 26 else label[:25] + "…"
        lines.append(f'<text x="{x + 24}" y="{y + 1}">{escape(text)}</text>')


def line_chart(series: Sequence[Series], *, title: str, xlabel: str, ylabel: str,
               x_categories: Sequence[str] | None = None, xlim: tuple[float, float] | None = None,
               ylim: tuple[float, float] | None = None, log_x: bool = False, log_y: bool = False,
               hline: float | None = None, note: str = "") -> str:
    """An SVG line chart. With ``x_categories`` the x values are indices into it (evenly spaced labels)."""
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: float(v))
    ty = (lambda v: math.log10(v)) if log_y else (lambda v: float(v))
    pts = [(tx(x), ty(y)) for s in series for x, y in zip(s.x, s.y)
           if _finite(y) and _finite(x) and (not log_y or y > 0) and (not log_x or x > 0)]
    if x_categories is not None:
        xr = (-0.5, len(x_categories) - 0.5)
    elif xlim is not None:
        xr = (tx(xlim[0]), tx(xlim[1]))
    else:
        xs = [p[0] for p in pts] or [0.0, 1.0]
        xr = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, max(xs) + 1)
    if ylim is not None:
        yr = (ty(ylim[0]), ty(ylim[1]))
    else:
        ys = [p[1] for p in pts] + ([hline] if hline is not None else [])
        ys = ys or [0.0, 1.0]
        pad = (max(ys) - min(ys)) * 0.06 or 0.5
        yr = (min(ys) - pad, max(ys) + pad)
    yt = [t for t in nice_ticks(*yr)]
    yr = (min(yr[0], yt[0]), max(yr[1], yt[-1]))
    x0, x1, y0, y1 = ML, W - MR, H - MB, MT

    def xmap(v: float) -> float:
        return x0 + (v - xr[0]) / (xr[1] - xr[0]) * (x1 - x0)

    def ymap(v: float) -> float:
        return y0 - (v - yr[0]) / (yr[1] - yr[0]) * (y0 - y1)

    if x_categories is not None:
        xticks = [(xmap(i), c) for i, c in enumerate(x_categories)]
    else:
        ticks = nice_ticks(*xr) if not log_x else list(range(math.floor(xr[0]), math.ceil(xr[1]) + 1))
        xticks = [(xmap(t), _fmt(10 ** t if log_x else t)) for t in ticks if xr[0] - 1e-9 <= t <= xr[1] + 1e-9]
    lines = _header(title)
    ytick_vals = [t for t in yt if yr[0] - 1e-9 <= t <= yr[1] + 1e-9]
    _axes(lines, xlabel, ylabel, ytick_vals, ymap, xticks)
    if log_y:  # relabel the log ticks with real values
        lines = [ln for ln in lines if not (ln.startswith(f'<text x="{x0 - 6}"'))]
        for t in ytick_vals:
            lines.append(f'<text x="{x0 - 6}" y="{ymap(t) + 4:.1f}" text-anchor="end">{escape(_fmt(10 ** t))}</text>')
    if hline is not None and yr[0] <= hline <= yr[1]:
        lines.append(f'<line x1="{x0}" y1="{ymap(hline):.1f}" x2="{x1}" y2="{ymap(hline):.1f}" stroke="#555" '
                     'stroke-dasharray="4,3"/>')
    for i, s in enumerate(series):
        col = PALETTE[i % len(PALETTE)]
        dash = f' stroke-dasharray="{_DASHES[1]}"' if s.dashed else ""
        segment: list[str] = []
        segments: list[list[str]] = []
        marks = []
        for x, y in zip(s.x, s.y):
            ok = _finite(x) and _finite(y) and (not log_y or y > 0) and (not log_x or x > 0)
            if not ok:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            px, py = xmap(tx(x)), ymap(ty(y))
            segment.append(f"{px:.1f},{py:.1f}")
            marks.append((px, py))
        if segment:
            segments.append(segment)
        for seg in segments:
            if len(seg) > 1:
                lines.append(f'<polyline fill="none" stroke="{col}" stroke-width="2"{dash} points="{" ".join(seg)}"/>')
        if s.markers:
            for px, py in marks:
                lines.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{col}"/>')
    _legend(lines, [s.label for s in series], [s.dashed for s in series])
    if note:
        lines.append(f'<text x="{x0}" y="{MT - 8}" font-size="10" fill="#555">{escape(note)}</text>')
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def bar_chart(categories: Sequence[str], series: Sequence[Series], *, title: str, xlabel: str, ylabel: str,
              note: str = "") -> str:
    """An SVG grouped bar chart: one group per category, one bar per series (``series[i].y[j]`` = bar j)."""
    vals = [v for s in series for v in s.y if _finite(v)] or [0.0]
    lo, hi = min(0.0, min(vals)), max(0.0, max(vals))
    yt = nice_ticks(lo, hi if hi > lo else lo + 1)
    yr = (yt[0], yt[-1])
    x0, x1, y0, y1 = ML, W - MR, H - MB, MT

    def ymap(v: float) -> float:
        return y0 - (v - yr[0]) / (yr[1] - yr[0]) * (y0 - y1)

    n, k = len(categories), max(len(series), 1)
    gw = (x1 - x0) / max(n, 1)
    bw = gw * 0.8 / k
    lines = _header(title)
    _axes(lines, xlabel, ylabel, yt, ymap, [(x0 + gw * (i + 0.5), c) for i, c in enumerate(categories)])
    zero = ymap(0.0)
    for si, s in enumerate(series):
        col = PALETTE[si % len(PALETTE)]
        for ci, v in enumerate(s.y):
            if not _finite(v):
                continue
            x = x0 + gw * ci + gw * 0.1 + bw * si
            top, bottom = sorted((ymap(v), zero))
            lines.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{bw:.1f}" height="{max(bottom - top, 0.5):.1f}" '
                         f'fill="{col}"><title>{escape(f"{s.label}, {categories[ci]}: {_fmt(v)}")}</title></rect>')
    lines.append(f'<line x1="{x0}" y1="{zero:.1f}" x2="{x1}" y2="{zero:.1f}" stroke="#333"/>')
    _legend(lines, [s.label for s in series], [False] * len(series), kind="bar")
    if note:
        lines.append(f'<text x="{x0}" y="{MT - 8}" font-size="10" fill="#555">{escape(note)}</text>')
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) atomically (:func:`facedeblur.restore.convert.write_bytes_atomic`)."""
    from ..restore.convert import write_bytes_atomic

    return write_bytes_atomic(path, text.encode("utf-8"))


def write_svg(path: str | os.PathLike, svg: str) -> Path:
    """Write ``svg`` atomically."""
    return write_text_atomic(path, svg)
