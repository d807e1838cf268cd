"""Aggregate runs into results/<profile>/summary.csv: one row per (reproduction, benchmark,
metric) with the mean over seeds, its 95% Student-t CI and the delta to the grpo baseline
(Welch CI). Final-window training metrics appear as benchmark "train"."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from evals.metrics import diff_ci, mean_ci

COLUMNS = [
    "reproduction",
    "benchmark",
    "metric",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "n_seeds",
    "delta_vs_grpo",
    "delta_ci_low",
    "delta_ci_high",
]
TRAIN_FIELDS = [
    "reward_mean",
    "accuracy",
    "completion_len_mean",
    "entropy",
    "kl",
    "frac_zero_std_groups",
    "frac_nonzero_adv",
    "adv_abs_mean",  # mean |advantage| of the training batch (update size; SEED-GRPO)
]
START_ROW = "sft_start"


def _final_window(path: Path) -> dict[str, float]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if not rows:
        return {}
    w = rows[-max(1, len(rows) // 10) :]
    out = {}
    for f in TRAIN_FIELDS:
        vals = [r[f] for r in w if isinstance(r.get(f), int | float) and not math.isnan(r[f])]
        if vals:
            out[f] = sum(vals) / len(vals)
    return out


def collect(profile_dir: Path, files: list[Path] | None = None) -> pd.DataFrame:
    """Long table: reproduction, seed, benchmark, metric, value."""
    profile_dir = Path(profile_dir)
    files = files or sorted(profile_dir.glob("runs/*/seed*/eval/*.json"))
    recs = []
    for f in files:
        d = json.loads(Path(f).read_text())
        for m, v in d["metrics"].items():
            recs.append((d["reproduction"], int(d["seed"]), d["benchmark"], m, float(v)))
    run_dirs = {Path(f).parent.parent for f in files} or set(profile_dir.glob("runs/*/seed*"))
    for rd in sorted(run_dirs):
        mj = rd / "metrics.jsonl"
        if mj.exists():
            for m, v in _final_window(mj).items():
                recs.append((rd.parent.name, int(rd.name.removeprefix("seed")), "train", m, v))
    return pd.DataFrame(recs, columns=["reproduction", "seed", "benchmark", "metric", "value"])


def aggregate(
    profile_dir: Path, baseline: str = "grpo", files: list[Path] | None = None
) -> pd.DataFrame:
    long = collect(profile_dir, files)
    rows = []
    for (repro, bench, metric), g in long.groupby(
        ["reproduction", "benchmark", "metric"], sort=False
    ):
        vals = g.sort_values("seed")["value"].tolist()
        mean, std, lo, hi = mean_ci(vals)
        base = long[
            (long.reproduction == baseline) & (long.benchmark == bench) & (long.metric == metric)
        ]
        if len(base):
            d, dlo, dhi = diff_ci(vals, base["value"].tolist())
        else:
            d = dlo = dhi = float("nan")
        rows.append((repro, bench, metric, mean, std, lo, hi, len(vals), d, dlo, dhi))
    df = pd.DataFrame(rows, columns=COLUMNS)
    order = {baseline: 0, START_ROW: 1}
    df = df.sort_values(
        by=["benchmark", "reproduction", "metric"],
        key=lambda s: s.map(lambda x: (order.get(x, 2), x)) if s.name == "reproduction" else s,
    ).reset_index(drop=True)
    df.to_csv(Path(profile_dir) / "summary.csv", index=False)
    return df
