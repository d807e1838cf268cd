"""Headroom check of a testbed (issue 18): is grpo's held-out curve still rising at the end?

For a reproduction's runs (``runs/<reproduction>/seed<N>/curve.jsonl``): per seed the start
(step 0), the end (last point) and the gain, and the last-quarter slope of held-out accuracy
against steps: ordinary least squares over the points with step >= 3/4 of the last step, per
seed and pooled over seeds with one intercept per seed (seed fixed effects), with a Student-t
95% CI. "Not at its plateau" = the pooled slope's CI lies above 0.

    python -m evals.headroom results/tiny_headroom [--reproduction grpo]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evals.curves import load_curves
from evals.metrics import mean_ci, t_quantile


@dataclass
class Slope:
    slope: float  # accuracy per step
    lo: float  # 95% CI
    hi: float
    n: int  # points
    df: int


def fixed_effects_slope(groups: list[tuple], level: float = 0.95) -> Slope:
    """OLS slope of y on x shared by every group, each group with its own intercept.

    ``groups``: [(x, y)] arrays. slope = sum_g sum_i (x - mean_g x)(y - mean_g y) / Sxx,
    residual variance SSE / (n - groups - 1), se = sqrt(var / Sxx), CI slope +- t * se.
    One group is plain OLS. Fewer than groups + 2 points: NaN CI."""
    sxy = sxx = 0.0
    n = 0
    cent = []
    for x, y in groups:
        x, y = np.asarray(x, float), np.asarray(y, float)
        dx, dy = x - x.mean(), y - y.mean()
        sxy += float((dx * dy).sum())
        sxx += float((dx * dx).sum())
        n += len(x)
        cent.append((dx, dy))
    if sxx == 0:
        return Slope(float("nan"), float("nan"), float("nan"), n, 0)
    b = sxy / sxx
    df = n - len(groups) - 1
    if df < 1:
        return Slope(b, float("nan"), float("nan"), n, df)
    sse = sum(float(((dy - b * dx) ** 2).sum()) for dx, dy in cent)
    se = math.sqrt(sse / df / sxx)
    h = t_quantile((1 + level) / 2, df) * se
    return Slope(b, b - h, b + h, n, df)


def last_quarter(steps: np.ndarray, acc: np.ndarray, frac: float = 0.75) -> tuple:
    """The points with step >= frac * the last step."""
    keep = steps >= frac * steps.max()
    return steps[keep], acc[keep]


def check(profile_dir: Path, reproduction: str = "grpo", frac: float = 0.75) -> dict:
    """Per-seed start / end / gain / last-quarter slope and the pooled slope (see module)."""
    curves = load_curves(Path(profile_dir)).get(reproduction, {})
    seeds = {}
    groups = []
    for s, (steps, _c, acc) in sorted(curves.items()):
        x, y = last_quarter(steps, acc, frac)
        groups.append((x, y))
        seeds[s] = dict(
            start=float(acc[0]),
            end=float(acc[-1]),
            gain=float(acc[-1] - acc[0]),
            last_step=int(steps[-1]),
            slope=fixed_effects_slope([(x, y)]),
        )
    pooled = fixed_effects_slope(groups) if groups else None
    gains = [v["gain"] for v in seeds.values()]
    return dict(seeds=seeds, pooled=pooled, gain=mean_ci(gains) if gains else None)


def format_check(res: dict) -> str:
    lines = []
    for s, v in res["seeds"].items():
        sl = v["slope"]
        lines.append(
            f"seed {s}: start {v['start']:.3f} end {v['end']:.3f} (step {v['last_step']}) "
            f"gain {v['gain'] * 100:+.1f} pts; last-quarter slope {sl.slope * 1e4:+.1f} "
            f"[{sl.lo * 1e4:+.1f}, {sl.hi * 1e4:+.1f}] pts/100 steps"
        )
    if res["gain"] and len(res["seeds"]) > 1:
        m, _sd, lo, hi = res["gain"]
        lines.append(f"gain mean {m * 100:+.1f} pts [95% CI {lo * 100:+.1f}, {hi * 100:+.1f}]")
    p = res["pooled"]
    if p:
        lines.append(
            f"pooled last-quarter slope {p.slope * 1e4:+.1f} pts/100 steps "
            f"[95% CI {p.lo * 1e4:+.1f}, {p.hi * 1e4:+.1f}] ({p.n} points, df {p.df})"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile_dir", type=Path)
    ap.add_argument("--reproduction", default="grpo")
    a = ap.parse_args(argv)
    print(format_check(check(a.profile_dir, a.reproduction)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
