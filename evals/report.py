"""report.md and learning-curve plots from summary.csv and the runs' metrics.jsonl."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from evals.aggregate import START_ROW, aggregate

CURVES = {
    "reward_mean": "reward",
    "accuracy": "training accuracy",
    "completion_len_mean": "completion length (tokens)",
    "entropy": "entropy (nats/token)",
    "kl": "KL to reference",
}


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _cell(r: pd.Series) -> str:
    if r["n_seeds"] < 2 or math.isnan(r["ci_low"]):
        return f"{_pct(r['mean'])} ({int(r['n_seeds'])} seed)"
    return f"{_pct(r['mean'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"


def _delta(r: pd.Series) -> str:
    if math.isnan(r["delta_vs_grpo"]):
        return ""
    d = f"{100 * r['delta_vs_grpo']:+.1f}"
    if not math.isnan(r["delta_ci_low"]):
        d += f" [{100 * r['delta_ci_low']:+.1f}, {100 * r['delta_ci_high']:+.1f}]"
    return d


def _order(repros: list[str]) -> list[str]:
    rank = {"grpo": 0, START_ROW: 1}
    return sorted(set(repros), key=lambda x: (rank.get(x, 2), x))


def load_curves(profile_dir: Path) -> dict[str, list[pd.DataFrame]]:
    out: dict[str, list[pd.DataFrame]] = {}
    for mj in sorted(Path(profile_dir).glob("runs/*/seed*/metrics.jsonl")):
        rows = [json.loads(x) for x in mj.read_text().splitlines() if x.strip()]
        if rows:
            out.setdefault(mj.parent.parent.name, []).append(pd.DataFrame(rows))
    return out


def plot_curves(profile_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = load_curves(profile_dir)
    plots = Path(profile_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    paths = []
    for field, label in CURVES.items():
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for repro in _order(list(curves)):
            runs = [df.set_index("step")[field] for df in curves[repro] if field in df]
            if not runs:
                continue
            m = pd.concat(runs, axis=1)
            w = max(1, len(m) // 20)
            sm = m.rolling(w, min_periods=1).mean()
            ax.plot(sm.index, sm.mean(axis=1), label=repro, lw=1.5)
            ax.fill_between(sm.index, sm.min(axis=1), sm.max(axis=1), alpha=0.15)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_title(f"{label} (mean over seeds, band min-max)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = plots / f"{field}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


def write_report(profile_dir: Path, title: str | None = None) -> Path:
    profile_dir = Path(profile_dir)
    summ = profile_dir / "summary.csv"
    df = pd.read_csv(summ) if summ.exists() else aggregate(profile_dir)
    repros = _order(df["reproduction"].unique().tolist())
    seeds = int(df[df.reproduction != START_ROW]["n_seeds"].max()) if len(df) else 0
    lines = [
        f"# {title or 'GRPO variants'}",
        "",
        f"Profile `{profile_dir.name}`: {len([r for r in repros if r != START_ROW])} reproductions, up to "
        f"{seeds} seeds each. Cells: mean over seeds [95% Student-t CI], in percent; "
        f"delta vs grpo with a Welch 95% CI. `{START_ROW}` is the starting (SFT) checkpoint.",
        "",
    ]
    for bench in [b for b in df["benchmark"].unique() if b != "train"]:
        sub = df[df.benchmark == bench]
        metrics = sub["metric"].unique().tolist()
        ks = [int(m.split("@")[1]) for m in metrics if re.fullmatch(r"avg@\d+", m)]
        k = max(ks) if ks else None
        passes = sorted(
            (int(m.split("@")[1]) for m in metrics if m.startswith("pass@")), reverse=True
        )
        cols = [
            c
            for c in (f"avg@{k}", f"pass@{passes[0]}" if passes else None, f"maj@{k}")
            if c in metrics
        ]
        lines += [f"## {bench}", ""]
        lines.append("| reproduction | " + " | ".join(cols) + f" | Δ {cols[0]} vs grpo | seeds |")
        lines.append("|---" * (len(cols) + 3) + "|")
        for repro in repros:
            rr = sub[sub.reproduction == repro].set_index("metric")
            if rr.empty:
                continue
            cells = [_cell(rr.loc[c]) if c in rr.index else "" for c in cols]
            d = _delta(rr.loc[cols[0]]) if repro != "grpo" and cols[0] in rr.index else ""
            lines.append(
                f"| {repro} | " + " | ".join(cells) + f" | {d} | {int(rr['n_seeds'].max())} |"
            )
        lines.append("")
    tr = df[df.benchmark == "train"]
    if len(tr):
        fields = [f for f in CURVES if f in tr["metric"].unique()] + (
            ["frac_zero_std_groups"] if "frac_zero_std_groups" in tr["metric"].unique() else []
        )
        lines += ["## Training (final 10% of steps)", ""]
        lines.append("| reproduction | " + " | ".join(fields) + " |")
        lines.append("|---" * (len(fields) + 1) + "|")
        for repro in repros:
            rr = tr[tr.reproduction == repro].set_index("metric")
            if rr.empty:
                continue
            vals = []
            for f in fields:
                if f not in rr.index:
                    vals.append("")
                    continue
                r = rr.loc[f]
                ci = "" if math.isnan(r["ci_low"]) else f" ± {(r['ci_high'] - r['ci_low']) / 2:.3g}"
                vals.append(f"{r['mean']:.3g}{ci}")
            lines.append(f"| {repro} | " + " | ".join(vals) + " |")
        lines.append("")
    plots = plot_curves(profile_dir)
    if plots:
        lines += ["## Learning curves", ""]
        lines += [f"![{p.stem}](plots/{p.name})" for p in plots]
        lines.append("")
    out = profile_dir / "report.md"
    out.write_text("\n".join(lines))
    return out
