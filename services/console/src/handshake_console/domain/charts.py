"""Sparklines as SVG polyline points: drawn by the browser from markup alone, no script."""

from __future__ import annotations

from collections.abc import Sequence


def sparkline_points(values: Sequence[float | None], width: int = 120, height: int = 24, pad: int = 2) -> str:
    """ "x,y x,y ..." scaled into the box, the largest value at the top; gaps (None) are skipped. A flat series
    lies on the bottom line, so "nothing happened" looks like nothing."""
    known = [(i, v) for i, v in enumerate(values) if v is not None]
    if not known:
        return ""
    low = min(0.0, min(v for _, v in known))
    high = max(v for _, v in known)
    span = high - low or 1.0
    step = (width - 2 * pad) / max(1, len(values) - 1)
    points = []
    for i, v in known:
        x = pad + i * step
        y = height - pad - (v - low) / span * (height - 2 * pad)
        points.append(f"{x:.1f},{y:.1f}")
    return " ".join(points)
