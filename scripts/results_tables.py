"""Markdown tables for the README from a profile's results (summary.csv, claims.csv).

    python scripts/results_tables.py results/tiny [--bench arith_mix] [--only grpo,dapo,...]

Prints one table: reproduction, seeds, avg@k [95% CI], pass@k, delta vs grpo [Welch 95% CI], the
minimum detectable effect (80% power) of that delta, the delta paired by seed (seed s of both
starts from SFT start s) with its CI and MDE, and the claim verdicts (supported / not /
inconclusive) of the reproduction's meta.claims; then the claims, one line each. Every number
comes from the two CSV files: nothing here is typed in by hand.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd


def _pct(x: float) -> str:
    return "" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _delta(x: float) -> str:
    return "" if x is None or math.isnan(x) else f"{100 * x:+.1f}"


def table(res: Path, bench: str | None, only: list[str] | None) -> str:
    s = pd.read_csv(res / "summary.csv")
    claims = pd.read_csv(res / "claims.csv") if (res / "claims.csv").exists() else None
    bench = bench or next(b for b in s.benchmark.unique() if b != "train")
    s = s[s.benchmark == bench]
    k = next(m.split("@")[1] for m in s.metric if m.startswith("avg@"))
    avg, pas = f"avg@{k}", f"pass@{k}"
    repros = list(dict.fromkeys(s.reproduction))
    if only:
        repros = [r for r in only if r in repros]
    lines = [
        f"| reproduction | seeds | {avg} [95% CI] | {pas} | Δ {avg} vs grpo [Welch 95% CI] "
        "| MDE (80% power) | Δ paired by seed [95% CI] (MDE) | claims: supported / not / inconclusive |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in repros:
        a = s[(s.reproduction == r) & (s.metric == avg)].iloc[0]
        p = s[(s.reproduction == r) & (s.metric == pas)]
        p = _pct(p.iloc[0]["mean"]) if len(p) else ""
        cell = f"{_pct(a['mean'])} [{_pct(a.ci_low)}, {_pct(a.ci_high)}]"
        if int(a.n_seeds) < 2:
            cell = _pct(a["mean"])
        d = ""
        if r != "grpo" and not math.isnan(a.delta_vs_grpo):
            d = f"{_delta(a.delta_vs_grpo)} [{_delta(a.delta_ci_low)}, {_delta(a.delta_ci_high)}]"
        mde = "" if r == "grpo" else _pct(a.mde)
        pair = ""
        if r != "grpo" and "paired_ci_low" in a and not math.isnan(a.paired_ci_low):
            pair = (
                f"[{_delta(a.paired_ci_low)}, {_delta(a.paired_ci_high)}] "
                f"({_pct(a.paired_mde)}, {int(a.n_paired)} pairs)"
            )
        v = ""
        if claims is not None and r in set(claims.reproduction):
            c = claims[claims.reproduction == r].verdict.value_counts()
            v = " / ".join(
                str(int(c.get(x, 0))) for x in ("supported", "not supported", "inconclusive")
            )
        lines.append(f"| {r} | {int(a.n_seeds)} | {cell} | {p} | {d} | {mde} | {pair} | {v} |")
    return "\n".join(lines)


def claims_lines(res: Path, only: list[str] | None) -> str:
    if not (res / "claims.csv").exists():
        return ""
    c = pd.read_csv(res / "claims.csv")
    if only:
        c = c[c.reproduction.isin(only)]
    out = []
    for _, r in c.iterrows():
        scale = (
            100 if r.metric.startswith(("avg@", "pass@", "maj@")) or r.metric == "accuracy" else 1
        )
        if math.isnan(r.delta):
            eff = "not measured"
        else:
            eff = (
                f"{scale * r.delta:+.3g} [{scale * r.ci_low:+.3g}, {scale * r.ci_high:+.3g}], "
                f"MDE {scale * r.mde:.3g}"
            )
            if "ci" in r and isinstance(r.ci, str):
                eff += f" ({r.ci})"
        out.append(
            f"- {r.reproduction} ({r.benchmark} {r.metric}): **{r.verdict}**: {r.text} — {eff}"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path, help="results/<profile>")
    ap.add_argument("--bench", default=None)
    ap.add_argument("--only", default=None, help="comma-separated reproductions, in this order")
    ap.add_argument("--claims", action="store_true", help="also list every claim's verdict")
    a = ap.parse_args()
    only = a.only.split(",") if a.only else None
    print(table(a.results, a.bench, only))
    if a.claims:
        print()
        print(claims_lines(a.results, only))


if __name__ == "__main__":
    main()
