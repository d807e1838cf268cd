"""The report of a profile: report.md and a self-contained report.html (its twin) from
summary.csv, the runs' metrics.jsonl, config.yaml (claims, budgets) and eval/*.json (protocol).

Both render the same sections, built once by :func:`build_report`: the benchmark tables (mean
over seeds with a Student-t CI, delta vs grpo with a Welch CI and the minimum detectable effect
at the run's seed count), the claims table (each paper's
claimed effect beside the measured one and its verdict, evals.claims), training metrics, the
protocol (profile, seeds with results per reproduction, budget, sampling parameters, package
versions) and plots: per benchmark first the deltas vs grpo with their CIs (a forest plot around
a zero line, the MDE band shaded), then the absolute values as dots with CIs on an axis that
does not start at 0. The HTML inlines its plots as base64 PNG, so the one file is the whole
report; the Markdown links plots/*.png.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evals.aggregate import ABLATIONS_CSV, START_ROW, aggregate
from evals.claims import RATE, delta_vs_grpo, is_rate  # noqa: F401 (RATE: re-exported)

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


def _mde(r: pd.Series) -> str:
    """The minimum detectable effect of the row's delta vs grpo, in percentage points."""
    m = r.get("mde", float("nan"))
    return "" if m is None or math.isnan(m) or math.isnan(r["delta_vs_grpo"]) else f"{100 * m:.1f}"


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
    for fld, label in CURVES.items():
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for repro in _order(list(curves)):
            runs = [df.set_index("step")[fld] for df in curves[repro] if fld in df]
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
        p = plots / f"{fld}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


# --------------------------------------------------------------------------------------------
# the report's content, built once and rendered as Markdown and as HTML


@dataclass
class Table:
    id: str
    header: list[str]
    rows: list[list[str]]
    row_classes: list[str] = field(default_factory=list)  # HTML only (e.g. the verdict)


@dataclass
class Section:
    id: str
    heading: str
    text: list[str] = field(default_factory=list)  # paragraphs (inline `code` allowed)
    tables: list[Table] = field(default_factory=list)
    plots: list[tuple[str, Path]] = field(default_factory=list)  # (caption, png path)


@dataclass
class Report:
    title: str
    intro: str
    sections: list[Section]


_is_rate = is_rate


def _fmt_delta(metric: str, d: float, lo: float, hi: float) -> str:
    """A delta with its CI: percentage points for rates, 3 significant digits otherwise."""
    if math.isnan(d):
        return "n/a"
    if _is_rate(metric):
        s = f"{100 * d:+.1f} pp"
        return s if math.isnan(lo) else s + f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    s = f"{d:+.3g}"
    return s if math.isnan(lo) else s + f" [{lo:+.3g}, {hi:+.3g}]"


def _fmt_mde(metric: str, m: float) -> str:
    if m is None or math.isnan(m):
        return "n/a"
    return f"{100 * m:.1f} pp" if _is_rate(metric) else f"{m:.3g}"


def _claimed(metric: str, direction: str, margin: float) -> str:
    if direction == "equal":
        m = f"{100 * margin:.1f} pp" if _is_rate(metric) else f"{margin:g}"
        return f"no change (within ±{m})"
    return f"{direction} than grpo"


def _bench_columns(metrics: list[str]) -> list[str]:
    ks = [int(m.split("@")[1]) for m in metrics if re.fullmatch(r"avg@\d+", m)]
    k = max(ks) if ks else None
    passes = sorted((int(m.split("@")[1]) for m in metrics if m.startswith("pass@")), reverse=True)
    cols = [
        c for c in (f"avg@{k}", f"pass@{passes[0]}" if passes else None, f"maj@{k}") if c in metrics
    ]
    return cols or sorted(metrics)[:3]


# an agent benchmark's episode metrics (evals.agent), in table order; rates in percent
AGENT_COLUMNS = [
    ("success_rate", "success", True),
    ("score_mean", "score", False),
    ("steps_mean", "steps", False),
    ("searches_mean", "searches", False),
    ("tool_calls_mean", "tool calls", False),
    ("tool_productivity", "tool productivity", False),
    ("end_rate/done", "ended by the env", True),
]


def _success_delta(r: pd.Series) -> str:
    """The row's delta vs grpo in points with its 95% CI, paired or Welch as the claims judge
    it (evals.claims.delta_vs_grpo); '' without one."""
    d, lo, hi, _, kind = delta_vs_grpo(r)
    if math.isnan(d):
        return ""
    ci = "" if math.isnan(lo) else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return f"{100 * d:+.1f}{ci} ({'paired' if kind == 'paired' else 'Welch'})"


def _agent_table(sub: pd.DataFrame, bench: str, repros: list[str]) -> Table | None:
    """Success rate, score, steps, searches / tool calls and how episodes ended, per
    reproduction (mean over seeds [95% Student-t CI]), and the success delta vs grpo; None
    when the benchmark is not an agent's (no success_rate)."""
    have = set(sub["metric"])
    if "success_rate" not in have:
        return None
    cols = [c for c in AGENT_COLUMNS if c[0] in have]
    rows = []
    for repro in repros:
        rr = sub[sub.reproduction == repro].set_index("metric")
        if rr.empty or "success_rate" not in rr.index:
            continue
        cells = []
        for m, _, pct in cols:
            if m not in rr.index:
                cells.append("")
                continue
            r = rr.loc[m]
            lo = r["ci_low"] if r["n_seeds"] >= 2 else float("nan")
            cells.append(_ci_cell(r["mean"], lo, r["ci_high"], pct))
        d = _success_delta(rr.loc["success_rate"]) if repro != "grpo" else ""
        rows.append([repro, *cells, d, str(int(rr["n_seeds"].max()))])
    head = [f"{label} (%)" if pct else label for _, label, pct in cols]
    return Table(
        id=f"agent-{bench}",
        header=["reproduction", *head, "Δ success vs grpo (pts)", "seeds"],
        rows=rows,
    )


def _bench_section(sub: pd.DataFrame, bench: str, repros: list[str], plots: Path) -> Section:
    cols = _bench_columns(sub["metric"].unique().tolist())
    rows = []
    for repro in repros:
        rr = sub[sub.reproduction == repro].set_index("metric")
        if rr.empty:
            continue
        cells = [_cell(rr.loc[c]) if c in rr.index else "" for c in cols]
        base = repro != "grpo" and cols[0] in rr.index
        d = _delta(rr.loc[cols[0]]) if base else ""
        mde = _mde(rr.loc[cols[0]]) if base else ""
        rows.append([repro, *cells, d, mde, str(int(rr["n_seeds"].max()))])
    t = Table(
        id=f"bench-{bench}",
        header=["reproduction", *cols, f"Δ {cols[0]} vs grpo", "MDE (80% power)", "seeds"],
        rows=rows,
    )
    sec = Section(
        id=f"bench-{bench}",
        heading=bench,
        text=[
            f"MDE: the smallest true Δ {cols[0]} vs grpo that these seeds detect with 80% power "
            "(two-sided 5%, pooled seed std of the two rows): an inconclusive delta means "
            "effects below it cannot be seen here."
        ],
        tables=[t],
    )
    agent = _agent_table(sub, bench, repros)
    if agent is not None:
        sec.text.append(
            "The second table, agent metrics (evals.agent): per episode, success, score (the "
            "sum of its env rewards), policy turns, searches or tool calls where the env "
            "counts them, and whether the env ended it; mean over seeds [95% Student-t CI "
            "over seeds]. Each seed's CIs over its episodes (percentile bootstrap) are in "
            f"`runs/<reproduction>/seed<s>/eval/{bench}.json` (`ci`)."
        )
        sec.tables.append(agent)
    p = _plot_deltas(sub, cols[0], repros, plots / f"bench_{bench}_delta.png", bench)
    if p:
        sec.plots.append(
            (
                f"{bench}: Δ {cols[0]} vs grpo per reproduction (dot: mean delta; line: Welch 95% "
                "CI; grey band: ± MDE at 80% power)",
                p,
            )
        )
    p = _plot_bench(sub, cols[0], repros, plots / f"bench_{bench}.png", bench)
    if p:
        sec.plots.append(
            (f"{bench}: {cols[0]} per reproduction (mean, 95% CI over seeds; axis not from 0)", p)
        )
    return sec


def _plot_deltas(sub: pd.DataFrame, metric: str, repros: list[str], path: Path, bench: str):
    """Forest plot: each reproduction's delta vs grpo with its CI around a zero line, and its
    ± MDE band (deltas inside it are below what the seeds can resolve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [sub[(sub.reproduction == r) & (sub.metric == metric)] for r in repros if r != "grpo"]
    rows = [x.iloc[0] for x in rows if len(x) and not math.isnan(x.iloc[0]["delta_vs_grpo"])]
    if not rows:
        return None
    sc = 100 if _is_rate(metric) else 1
    fig, ax = plt.subplots(figsize=(6.5, 0.4 * len(rows) + 1.3))
    for i, x in enumerate(rows):
        mde = x.get("mde", float("nan"))
        if mde is not None and not math.isnan(mde):
            ax.fill_betweenx([i - 0.3, i + 0.3], -sc * mde, sc * mde, color="#dddddd", zorder=0)
        if not math.isnan(x["delta_ci_low"]):
            ax.plot([sc * x["delta_ci_low"], sc * x["delta_ci_high"]], [i, i], color="#1f5f8b")
        ax.plot([sc * x["delta_vs_grpo"]], [i], "o", color="#1f5f8b")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([x["reproduction"] for x in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    unit = " (percentage points)" if sc == 100 else ""
    ax.set_xlabel(f"Δ {metric} vs grpo{unit}")
    ax.set_title(f"{bench}: Δ {metric} vs grpo, 95% CI")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_bench(sub: pd.DataFrame, metric: str, repros: list[str], path: Path, bench: str):
    """Absolute values: a dot per reproduction with its CI over seeds, on an axis fitted to the
    values (not from 0, so differences of a few points stay visible); grpo's mean dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [sub[(sub.reproduction == r) & (sub.metric == metric)] for r in repros]
    rows = [(r, x.iloc[0]) for r, x in zip(repros, rows) if len(x)]
    if not rows:
        return None
    sc = 100 if _is_rate(metric) else 1
    fig, ax = plt.subplots(figsize=(6.5, 0.4 * len(rows) + 1.3))
    for i, (r, x) in enumerate(rows):
        if not math.isnan(x["ci_low"]):
            ax.plot([sc * x["ci_low"], sc * x["ci_high"]], [i, i], color="#7aa6c2", lw=2)
        ax.plot([sc * x["mean"]], [i], "o", color="#1f5f8b")
        if r == "grpo":
            ax.axvline(sc * x["mean"], color="#1f5f8b", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r for r, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(f"{metric}" + (" (%)" if sc == 100 else ""))
    ax.set_title(f"{bench}: {metric} (mean, 95% CI over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


VERDICT_COLOURS = {"supported": "#2e7d32", "not supported": "#c62828", "inconclusive": "#9e9e9e"}


def _claims_section(profile_dir: Path, df: pd.DataFrame, plots: Path) -> Section:
    from evals.claims import judge_profile, write_claims_csv

    verdicts = judge_profile(profile_dir, df)
    sec = Section(
        id="claims",
        heading="Claims",
        text=[
            "Each paper's claimed effect (`meta.claims` of its reproduction) beside the measured "
            "delta vs grpo with its 95% CI and the minimum detectable effect (MDE: 80% power, "
            "two-sided 5%): paired by seed when at least 2 seeds ran on both sides (seed s of "
            "both shares SFT start s and the data order: column *CI* = paired), else Welch with "
            "the pooled seed std (welch). Verdicts: *supported* when the CI lies on the "
            "claimed side of 0 (for a claim of no change: inside the margin), *not supported* when "
            "it lies on the other side (outside the margin), else *inconclusive*: then effects "
            "below the MDE cannot be seen here."
        ],
    )
    if not verdicts:
        sec.text.append("No reproduction in this profile declares claims (`meta.claims`).")
        return sec
    write_claims_csv(verdicts, profile_dir / "claims.csv")
    counts = {v: sum(x.verdict == v for x in verdicts) for v in VERDICT_COLOURS}
    sec.text.append(
        ", ".join(f"{n} {v}" for v, n in counts.items()) + f" of {len(verdicts)} claims."
    )
    rows = [
        [
            v.reproduction,
            v.text,
            f"{v.benchmark} / {v.metric}",
            _claimed(v.metric, v.direction, v.margin),
            _fmt_delta(v.metric, v.delta, v.ci_low, v.ci_high),
            _fmt_mde(v.metric, v.mde),
            str(v.n_seeds),
            v.ci,
            v.verdict,
            v.note,
        ]
        for v in verdicts
    ]
    header = [
        "reproduction",
        "claim",
        "benchmark / metric",
        "claimed",
        "measured Δ vs grpo [95% CI]",
        "MDE (80% power)",
    ]
    sec.tables.append(
        Table(
            id="claims",
            header=[*header, "seeds", "CI", "verdict", "why"],
            rows=rows,
            row_classes=[v.verdict.replace(" ", "-") for v in verdicts],
        )
    )
    p = _plot_claims(verdicts, plots / "claims.png")
    if p:
        sec.plots.append(("Measured deltas vs grpo with 95% CI, coloured by verdict", p))
    return sec


def _plot_claims(verdicts, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [v for v in verdicts if not math.isnan(v.delta)]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(pts) + 1.2))
    for i, v in enumerate(pts):
        sc = 100 if _is_rate(v.metric) else 1
        c = VERDICT_COLOURS[v.verdict]
        if not math.isnan(v.ci_low):
            ax.plot([sc * v.ci_low, sc * v.ci_high], [i, i], color=c, lw=2)
        ax.plot([sc * v.delta], [i], "o", color=c)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(pts)))
    ax.set_yticklabels([f"{v.reproduction}: {v.metric} ({v.benchmark})" for v in pts], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Δ vs grpo (percentage points for rates)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _train_section(tr: pd.DataFrame, repros: list[str]) -> Section:
    fields = [f for f in CURVES if f in tr["metric"].unique()] + (
        ["frac_zero_std_groups"] if "frac_zero_std_groups" in tr["metric"].unique() else []
    )
    rows = []
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
        rows.append([repro, *vals])
    return Section(
        id="train",
        heading="Training (final 10% of steps)",
        tables=[Table(id="train", header=["reproduction", *fields], rows=rows)],
    )


CURVE_BENCH = "curve"  # (evals.curves.CURVE_BENCH)


def _ci_cell(x: float, lo: float, hi: float, pct: bool) -> str:
    def f(v: float) -> str:
        return _pct(v) if pct else f"{v:.3g}"

    if x is None or math.isnan(x):
        return "n/a"
    return f(x) if lo is None or math.isnan(lo) else f"{f(x)} [{f(lo)}, {f(hi)}]"


def _scaling_section(
    profile_dir: Path, df: pd.DataFrame, repros: list[str], plots: Path
) -> Section | None:
    """The held-out compute-performance curves (eval.curve) with ScaleRL's sigmoid fits
    (evals.curves): a plot of the seed-mean points and fitted curves, and the table of A, B,
    C_mid with bootstrap CIs over seeds, the extrapolation check and delta A vs grpo."""
    from evals.curves import fit_profile, load_curves, mean_curve, write_curves_csv

    cfile = profile_dir / "curves.csv"
    fits = None
    if cfile.exists():
        cdf = pd.read_csv(cfile)
    else:
        fits = fit_profile(profile_dir)
        if not fits:
            return None
        cdf = pd.read_csv(write_curves_csv(fits, cfile))
    if not len(cdf):
        return None
    cur = df[(df.benchmark == CURVE_BENCH) & (df.metric == "A")].set_index("reproduction")
    rows = []
    for repro in _order(cdf["reproduction"].tolist()):
        r = cdf[cdf.reproduction == repro].iloc[0]
        d = ""
        if repro in cur.index and repro != "grpo":
            c = cur.loc[repro]
            d = _fmt_delta("accuracy", c["delta_vs_grpo"], c["delta_ci_low"], c["delta_ci_high"])
        rows.append(
            [
                repro,
                _pct(r["R0"]),
                _ci_cell(r["A"], r["A_ci_low"], r["A_ci_high"], True),
                _ci_cell(r["B"], r["B_ci_low"], r["B_ci_high"], False),
                _ci_cell(r["C_mid"], r["C_mid_ci_low"], r["C_mid_ci_high"], False),
                "n/a" if math.isnan(r["rmse"]) else f"{100 * r['rmse']:.1f}",
                "n/a" if math.isnan(r["extrap_mae"]) else f"{100 * r['extrap_mae']:.1f}",
                d,
                str(int(r["n_seeds"])),
            ]
        )
    sec = Section(
        id="scaling",
        heading="Compute-performance curves",
        text=[
            "Held-out accuracy (mean@k on a fixed subset of the test split, `eval.curve`) "
            "against training compute (the trainer's FLOP estimate: 2N per token of generation "
            "and no-grad passes, 6N per trained token), fitted per reproduction with ScaleRL's "
            "sigmoid R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B) (Khatri et al. 2025): R0 the "
            "start, A the asymptote, B the compute efficiency, C_mid the compute of half the "
            "gain. The fit is of the seed-mean curve, with bootstrap 95% CIs over seeds; "
            "extrapolation: the fit on the first half of the compute predicting the second "
            "(mean absolute error, points). Δ A vs grpo: mean of the per-seed fits, Welch CI."
        ],
        tables=[
            Table(
                id="scaling",
                header=[
                    "reproduction",
                    "R0",
                    "A (asymptote)",
                    "B (efficiency)",
                    "C_mid (FLOPs)",
                    "fit RMSE (pp)",
                    "extrapolation error (pp)",
                    "Δ A vs grpo",
                    "seeds",
                ],
                rows=rows,
            )
        ],
    )
    p = _plot_scaling(load_curves(profile_dir), cdf, plots / "scaling_curves.png", mean_curve)
    if p:
        sec.plots.append(
            ("held-out accuracy vs training compute (dots: seed means; lines: sigmoid fits)", p)
        )
    return sec


def _plot_scaling(curves: dict, cdf: pd.DataFrame, path: Path, mean_curve) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from evals.curves import sigmoid

    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, repro in enumerate(_order(list(curves))):
        _, c, r = mean_curve(list(curves[repro].values()))
        pos = c > 0
        if not pos.any():
            continue
        colour = f"C{i % 10}"
        ax.plot(c[pos], 100 * r[pos], "o", ms=3, color=colour, label=repro)
        row = cdf[cdf.reproduction == repro]
        if len(row) and not math.isnan(row.iloc[0]["A"]):
            f = row.iloc[0]
            xs = np.geomspace(c[pos].min(), c[pos].max() * 2, 100)
            ys = sigmoid(xs, f["R0"], f["A"], f["B"], f["C_mid"])
            ax.plot(xs, 100 * ys, "-", lw=1.2, color=colour)
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs, estimate)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("compute-performance curves and sigmoid fits")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _ablation_section(profile_dir: Path, df: pd.DataFrame) -> Section | None:
    """Leave-one-out ablations (``<reproduction>-no_<part>`` runs): each one's delta vs the
    full reproduction on the task's main metric (paired by seed when at least 2 seeds ran on
    both sides, else Welch) and on the curve's asymptote A, with the keys it reverts."""
    from grpo_core.config import ablation_parts
    from grpo_core.errors import UserError

    f = profile_dir / ABLATIONS_CSV
    if not f.exists():
        return None
    ab = pd.read_csv(f)
    if not len(ab):
        return None
    benches = [b for b in df["benchmark"].unique() if b not in ("train", CURVE_BENCH)]
    task = next((b for b in benches if b in set(ab["benchmark"])), None)
    metric = (
        _bench_columns(df[df.benchmark == task]["metric"].unique().tolist())[0] if task else None
    )

    def ci(sub: pd.DataFrame) -> tuple[float, float, float, bool] | None:
        if not len(sub):
            return None
        x = sub.iloc[0]
        paired = x["n_paired"] >= 2 and not math.isnan(x["paired_ci_low"])
        d, lo, hi = (
            (x["paired_delta"], x["paired_ci_low"], x["paired_ci_high"])
            if paired
            else (x["delta"], x["delta_ci_low"], x["delta_ci_high"])
        )
        return float(d), float(lo), float(hi), bool(paired)

    def delta(sub: pd.DataFrame, pct: bool) -> str:
        c = ci(sub)
        if c is None:
            return ""
        d, lo, hi, paired = c
        return _fmt_delta("accuracy" if pct else "x", d, lo, hi) + (" (paired)" if paired else "")

    rows = []
    # per reproduction: the parts whose removal moves a quantity (its 95% CI excludes 0)
    moved: dict[str, list[str]] = {}
    n_seeds: dict[str, int] = {}
    n_tests: dict[str, int] = {}  # comparisons with a CI, per reproduction
    for (repro, name), g in ab.groupby(["reproduction", "ablation"], sort=True):
        part = str(g.iloc[0]["part"])
        try:
            keys = ", ".join(ablation_parts(repro, profile_dir.name).get(part, []))
        except UserError:
            keys = ""
        main = g[(g.benchmark == task) & (g.metric == metric)] if task else g.iloc[:0]
        a = g[(g.benchmark == CURVE_BENCH) & (g.metric == "A")]
        b = g[(g.benchmark == CURVE_BENCH) & (g.metric == "B")]
        n = int(g["n_seeds"].max())
        n_seeds[repro] = max(n_seeds.get(repro, 0), n)
        rows.append([repro, name, keys, delta(main, True), delta(a, True), delta(b, False), str(n)])
        moves = []
        for label, sub in ((metric or "main metric", main), ("A", a), ("B", b)):
            c = ci(sub)
            if c is None or math.isnan(c[1]):
                continue
            n_tests[repro] = n_tests.get(repro, 0) + 1
            if c[1] > 0 or c[2] < 0:
                moves.append(f"{label} {'down' if c[0] < 0 else 'up'}")
        moved.setdefault(repro, [])
        if moves:
            moved[repro].append(f"removing {part} moves {', '.join(moves)}")
    if not rows:
        return None
    verdicts = []
    for repro, found in moved.items():
        what = f"{metric or 'the main metric'}, the asymptote A or the efficiency B"
        if found:
            verdicts.append(
                f"{repro}: {'; '.join(found)} (95% CI excludes 0); no other part's removal "
                f"moves {what} beyond its CI at {n_seeds[repro]} seeds. Of {n_tests[repro]} "
                f"such comparisons about {0.05 * n_tests[repro]:.1f} would exclude 0 by chance "
                "alone: an exclusion seen once is a lead to rerun with more seeds, not yet a finding."
            )
        else:
            verdicts.append(
                f"{repro}: no part's removal moves {what} beyond its 95% CI at "
                f"{n_seeds[repro]} seeds: the parts' effects are too small to see here."
            )
    return Section(
        id="ablations",
        heading="Leave-one-out ablations",
        text=[
            "Each `<reproduction>-no_<part>` run is the reproduction with one part of its diff "
            "over its base set back to the base's values (`grpo diff <name>` lists them; "
            "`snakemake --config ablate=<reproduction>` runs them). Δ: the ablation minus the "
            "full reproduction, 95% CI, paired by seed where at least 2 seeds ran on both sides. "
            "A: the held-out curve's fitted asymptote (ceiling), B: its efficiency exponent "
            "(ScaleRL's sigmoid, evals.curves).",
            *verdicts,
        ],
        tables=[
            Table(
                id="ablations",
                header=[
                    "reproduction",
                    "ablation",
                    "reverted keys",
                    f"Δ {metric or 'main metric'} vs full",
                    "Δ A (curve) vs full",
                    "Δ B (curve) vs full",
                    "seeds",
                ],
                rows=rows,
            )
        ],
    )


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = (
                json.dumps(v) if isinstance(v, list | bool) or v is None else str(v)
            )
    return out


BUDGET = [
    ("model", ("model", "name_or_path")),
    ("steps", ("train", "steps")),
    ("prompts/step", ("rollout", "prompts_per_step")),
    ("group size", ("rollout", "group_size")),
    ("max new tokens", ("rollout", "max_new_tokens")),
    ("temperature", ("rollout", "temperature")),
    ("lr", ("train", "lr")),
    ("advantage", ("advantage", "name")),
    ("loss", ("loss", "name")),
    ("sampler", ("sampler", "name")),
]


def _get(d: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def seeds_with_results(profile_dir: Path, repros: list[str]) -> dict[str, list[int]]:
    """Per reproduction, the seeds that left results: an eval/*.json or a non-empty
    metrics.jsonl (a run directory without either, e.g. a crashed or never-started run, is not
    listed)."""
    out: dict[str, list[int]] = {}
    for repro in repros:
        seeds = []
        for d in sorted(Path(profile_dir).glob(f"runs/{repro}/seed*")):
            num = d.name.removeprefix("seed")
            mj = d / "metrics.jsonl"
            has = any((d / "eval").glob("*.json")) or (mj.exists() and mj.stat().st_size > 0)
            if num.isdigit() and has:
                seeds.append(int(num))
        if seeds:
            out[repro] = sorted(seeds)
    return out


def _seeded_start(profile_dir: Path) -> bool:
    """Whether the runs were trained from seeded starts (workflow.seeded_start in a run's
    resolved config.yaml)."""
    import yaml

    for cfg in sorted(Path(profile_dir).glob("runs/*/seed*/config.yaml")):
        c = yaml.safe_load(cfg.read_text()) or {}
        return bool(_get(c, ("workflow", "seeded_start")))
    return False


def _protocol_section(profile_dir: Path, df: pd.DataFrame, repros: list[str]) -> Section:
    import yaml

    with_results = seeds_with_results(profile_dir, repros)
    seeded = _seeded_start(profile_dir)
    sec = Section(
        id="protocol",
        heading="Protocol",
        text=[
            f"Profile `{profile_dir.name}`; reproductions: "
            + ", ".join(f"`{r}`" for r in repros if r != START_ROW)
            + ". Baseline for every delta: `grpo`.",
            "Seeds with results (an evaluation or training metrics), per reproduction: "
            + (
                "; ".join(f"`{r}` {', '.join(map(str, s))}" for r, s in with_results.items())
                or "none"
            )
            + ".",
        ],
    )
    if seeded:
        sec.text.append(
            "Seeded starts (`workflow.seeded_start`): seed s trains from its own SFT start "
            "`base/seed<s>/model` (initial weights and SFT data order from seed s), and "
            f"`{START_ROW}` seed s evaluates that start, so the seed CIs include the start's "
            "variance."
        )
    # training budget per reproduction, from the first seed's resolved config
    rows = []
    for repro in repros:
        cfgs = sorted(profile_dir.glob(f"runs/{repro}/seed*/config.yaml"))
        if not cfgs:
            continue
        c = yaml.safe_load(cfgs[0].read_text()) or {}
        rows.append([repro, *("" if (v := _get(c, p)) is None else str(v) for _, p in BUDGET)])
    if rows:
        sec.tables.append(
            Table(id="budget", header=["reproduction", *(n for n, _ in BUDGET)], rows=rows)
        )
    # the evaluation protocol per benchmark (sampling parameters, grader, package versions)
    for bench in [b for b in df["benchmark"].unique() if b != "train"]:
        files = sorted(profile_dir.glob(f"runs/*/seed*/eval/{bench}.json"))
        files = [f for f in files if f.parent.parent.parent.name != START_ROW] or files
        if not files:
            continue
        d = json.loads(files[0].read_text())
        info = {"n_prompts": d.get("n_prompts"), "k": d.get("k")}
        info.update(_flat(d.get("protocol") or {}))
        rows = [[k, str(v)] for k, v in info.items() if v is not None]
        sec.tables.append(
            Table(id=f"protocol-{bench}", header=[f"{bench}: setting", "value"], rows=rows)
        )
    return sec


def build_report(profile_dir: Path, title: str | None = None) -> Report:
    profile_dir = Path(profile_dir)
    summ = profile_dir / "summary.csv"
    df = pd.read_csv(summ) if summ.exists() else aggregate(profile_dir)
    repros = _order(df["reproduction"].unique().tolist())
    seeds = int(df[df.reproduction != START_ROW]["n_seeds"].max()) if len(df) else 0
    plots = profile_dir / "plots"
    intro = (
        f"Profile `{profile_dir.name}`: {len([r for r in repros if r != START_ROW])} reproductions, "
        f"up to {seeds} seeds each. Cells: mean over seeds [95% Student-t CI], in percent; "
        f"delta vs grpo with a Welch 95% CI, beside its minimum detectable effect (MDE: 80% "
        f"power, two-sided 5%, pooled seed std). `{START_ROW}` is the starting (SFT) checkpoint."
    )
    sections = [
        _bench_section(df[df.benchmark == b], b, repros, plots)
        for b in df["benchmark"].unique()
        if b not in ("train", CURVE_BENCH)
    ]
    sections.append(_claims_section(profile_dir, df, plots))
    tr = df[df.benchmark == "train"]
    if len(tr):
        sections.append(_train_section(tr, repros))
    curves = plot_curves(profile_dir)
    if curves:
        sections.append(
            Section(
                id="curves",
                heading="Learning curves",
                plots=[(CURVES[p.stem], p) for p in curves],
            )
        )
    scaling = _scaling_section(profile_dir, df, repros, plots)
    if scaling is not None:
        sections.append(scaling)
    ablations = _ablation_section(profile_dir, df)
    if ablations is not None:
        sections.append(ablations)
    sections.append(_protocol_section(profile_dir, df, repros))
    return Report(title=title or "GRPO variants", intro=intro, sections=sections)


# --------------------------------------------------------------------------------------------
# rendering


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(rep: Report, base: Path) -> str:
    lines = [f"# {rep.title}", "", rep.intro, ""]
    for sec in rep.sections:
        lines += [f"## {sec.heading}", ""]
        for t in sec.text:
            lines += [t, ""]
        for t in sec.tables:
            lines.append("| " + " | ".join(map(_md_cell, t.header)) + " |")
            lines.append("|---" * len(t.header) + "|")
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in t.rows]
            lines.append("")
        for _cap, p in sec.plots:
            rel = p.relative_to(base) if p.is_relative_to(base) else p
            lines.append(f"![{p.stem}]({rel.as_posix()})")
        if sec.plots:
            lines.append("")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tbody tr:nth-child(even){background:#fafafa}
code{background:#f1f1f1;padding:0 .25em;border-radius:3px}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%}
td.verdict{font-weight:600;color:#fff}
tr.supported td.verdict{background:#2e7d32}tr.not-supported td.verdict{background:#c62828}
tr.inconclusive td.verdict{background:#9e9e9e}
nav a{margin-right:1em}
"""


def _inline(text: str) -> str:
    """Escape, then render `code` and *emphasis* (all the Markdown the report's text uses)."""
    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", s)


def render_html(rep: Report) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(rep.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(rep.title)}</h1>",
        "<nav>"
        + "".join(f'<a href="#{e(s.id)}">{e(s.heading)}</a>' for s in rep.sections)
        + "</nav>",
        f"<p>{_inline(rep.intro)}</p>",
    ]
    for sec in rep.sections:
        out.append(f'<section id="{e(sec.id)}"><h2>{e(sec.heading)}</h2>')
        out += [f"<p>{_inline(t)}</p>" for t in sec.text]
        for t in sec.tables:
            out.append(f'<table id="table-{e(t.id)}"><thead><tr>')
            out += [f"<th>{e(h)}</th>" for h in t.header]
            out.append("</tr></thead><tbody>")
            for i, r in enumerate(t.rows):
                cls = t.row_classes[i] if i < len(t.row_classes) else ""
                out.append(f'<tr class="{e(cls)}">' if cls else "<tr>")
                for h, c in zip(t.header, r):
                    out.append('<td class="verdict">' if h == "verdict" else "<td>")
                    out.append(f"{e(c)}</td>")
                out.append("</tr>")
            out.append("</tbody></table>")
        for cap, p in sec.plots:
            b64 = base64.b64encode(p.read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{e(p.stem)}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{e(cap)}</figcaption></figure>"
            )
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(profile_dir: Path, title: str | None = None) -> Path:
    """Write report.md and its self-contained twin report.html (and claims.csv when any
    reproduction declares claims); return the report.md path."""
    profile_dir = Path(profile_dir)
    rep = build_report(profile_dir, title)
    md = profile_dir / "report.md"
    md.write_text(render_markdown(rep, profile_dir))
    (profile_dir / "report.html").write_text(render_html(rep), encoding="utf-8")
    return md
