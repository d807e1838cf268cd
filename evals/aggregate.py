"""Aggregate runs into results/<profile>/summary.csv: one row per (reproduction, benchmark,
metric) with the mean over seeds, its 95% Student-t CI, the delta to the grpo baseline (Welch
CI) and the minimum detectable effect of that comparison (``mde``: 80% power, two-sided 5%; see
:func:`min_detectable_effect`). Final-window training metrics appear as benchmark "train", the
held-out curve's ScaleRL fit per seed (A, B, C_mid, extrap_mae; evals.curves) as benchmark
"curve", and curves.csv holds each reproduction's seed-mean fit with bootstrap CIs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from evals.curves import CURVE_BENCH, fit_profile, run_records, write_curves_csv
from evals.metrics import diff_ci, mean_ci, paired_diff_ci, t_quantile

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
    "mde",
    # paired over the seeds both ran (seed s of both starts from SFT start s): the start's
    # variance cancels; evals.metrics.paired_diff_ci. paired_delta is the mean of the per-seed
    # differences (equal to delta_vs_grpo when both ran the same seeds)
    "paired_delta",
    "paired_ci_low",
    "paired_ci_high",
    "paired_mde",
    "n_paired",
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
    "tool_calls_mean",  # tool calls per episode (an env that counts them: tools; OTC-GRPO)
    # share of tokens of A >= 0 responses whose likelihood fell since sampling (the llds term,
    # or its weight-0 probe: profile tiny_search_hot gives it to grpo too; LLDS)
    "reg/llds/active_frac",
]
START_ROW = "sft_start"


def min_detectable_effect(
    a: list[float], b: list[float], power: float = 0.8, alpha: float = 0.05
) -> float:
    """The smallest true difference of means a two-sample comparison of ``a`` and ``b`` (seeds
    of two reproductions) detects with probability ``power`` at two-sided level ``alpha``:

        MDE = (t_{1 - alpha/2, df} + t_{power, df}) * s_p * sqrt(1/n_a + 1/n_b),
        s_p^2 = ((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / df,   df = n_a + n_b - 2,

    with s_a, s_b the sample (ddof 1) stds and Student-t quantiles at the pooled df: the usual
    normal-theory formula with t in place of z. It approximates the exact noncentral-t answer;
    at the MDE the exact power is 0.77 for df 2, 0.79 for df 4 and 0.80 from df 10 on.
    Example: n = 3 per arm, s = 2.0 -> df 4, (2.7764 + 0.9410) * 2.0 * sqrt(2/3) = 6.07.
    NaN when either side has fewer than 2 values. In the values' units."""
    x = np.asarray([v for v in a if not math.isnan(v)], float)
    y = np.asarray([v for v in b if not math.isnan(v)], float)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    df = len(x) + len(y) - 2
    sp = math.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / df)
    t = t_quantile(1 - alpha / 2, df) + t_quantile(power, df)
    return float(t * sp * math.sqrt(1 / len(x) + 1 / len(y)))


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
        # the held-out curve's ScaleRL fit (eval.curve; evals.curves): A, B, C_mid per seed
        for m, v in run_records(rd):
            recs.append((rd.parent.name, int(rd.name.removeprefix("seed")), CURVE_BENCH, m, v))
    return pd.DataFrame(recs, columns=["reproduction", "seed", "benchmark", "metric", "value"])


def aggregate(
    profile_dir: Path, baseline: str = "grpo", files: list[Path] | None = None
) -> pd.DataFrame:
    long = collect(profile_dir, files)
    rows = []
    for (repro, bench, metric), g in long.groupby(
        ["reproduction", "benchmark", "metric"], sort=False
    ):
        g = g.sort_values("seed")
        vals = g["value"].tolist()
        mean, std, lo, hi = mean_ci(vals)
        base = long[
            (long.reproduction == baseline) & (long.benchmark == bench) & (long.metric == metric)
        ]
        if len(base):
            d, dlo, dhi = diff_ci(vals, base["value"].tolist())
            mde = min_detectable_effect(vals, base["value"].tolist())
            pd_, plo, phi, pmde, npair = paired_diff_ci(
                dict(zip(g["seed"], vals)), dict(zip(base["seed"], base["value"]))
            )
        else:
            d = dlo = dhi = mde = pd_ = plo = phi = pmde = float("nan")
            npair = 0
        rows.append(
            (repro, bench, metric, mean, std, lo, hi, len(vals), d, dlo, dhi, mde)
            + (pd_, plo, phi, pmde, npair)
        )
    df = pd.DataFrame(rows, columns=COLUMNS)
    order = {baseline: 0, START_ROW: 1}
    df = df.sort_values(
        by=["benchmark", "reproduction", "metric"],
        key=lambda s: s.map(lambda x: (order.get(x, 2), x)) if s.name == "reproduction" else s,
    ).reset_index(drop=True)
    df.to_csv(Path(profile_dir) / "summary.csv", index=False)
    cur = long[long.benchmark == CURVE_BENCH][["reproduction", "seed"]].drop_duplicates()
    dirs = [Path(profile_dir) / "runs" / r / f"seed{s}" for r, s in cur.itertuples(index=False)]
    fits = fit_profile(profile_dir, run_dirs=dirs) if dirs else []
    if fits:  # the seed-mean fits with bootstrap CIs over seeds (evals.curves)
        write_curves_csv(fits, Path(profile_dir) / "curves.csv")
    abl = ablation_deltas(long)
    if len(abl):
        abl.to_csv(Path(profile_dir) / ABLATIONS_CSV, index=False)
    return df


ABLATIONS_CSV = "ablations.csv"
ABLATION_COLUMNS = [
    "reproduction",
    "ablation",
    "part",
    "benchmark",
    "metric",
    "mean",
    "full_mean",
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "paired_delta",
    "paired_ci_low",
    "paired_ci_high",
    "n_seeds",
    "n_paired",
]


def ablation_deltas(long: pd.DataFrame) -> pd.DataFrame:
    """Each leave-one-out ablation's delta vs its full reproduction (runs named
    ``<reproduction>-no_<part>``, grpo_core.config.parse_ablation), per benchmark and metric:
    the Welch delta of the seed means with its 95% CI and the paired one over shared seeds."""
    from grpo_core.config import ABLATION_NAME

    rows = []
    for (name, bench, metric), g in long.groupby(["reproduction", "benchmark", "metric"]):
        m = ABLATION_NAME.match(name)
        if not m:
            continue
        full = long[
            (long.reproduction == m.group(1)) & (long.benchmark == bench) & (long.metric == metric)
        ]
        if not len(full):
            continue
        a, b = g["value"].tolist(), full["value"].tolist()
        d, lo, hi = diff_ci(a, b)
        pd_, plo, phi, _pmde, npair = paired_diff_ci(
            dict(zip(g["seed"], a)), dict(zip(full["seed"], b))
        )
        rows.append(
            (m.group(1), name, m.group(2), bench, metric, float(np.mean(a)), float(np.mean(b)))
            + (d, lo, hi, pd_, plo, phi, len(a), npair)
        )
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def merge_eval_seeds(files: list[Path], out_json: Path) -> dict:
    """Merge one benchmark's per-eval-seed results (each <label>.json with its
    <label>.samples.jsonl beside it, from ``grpo eval --benchmark B --eval-seeds E``) into
    ``out_json`` and the samples file beside it: metrics averaged over eval seeds, their std over
    seeds, bootstrap CIs over problems of the per-problem values averaged over seeds."""
    from evals.metrics import summarize_runs
    from grpo_core.grader import answer_key

    files = [Path(f) for f in files]
    if not files:
        raise ValueError("merge_eval_seeds: no files")
    results = [json.loads(f.read_text()) for f in files]
    first = results[0]
    k, bench = first["k"], first["benchmark"]
    for f, r in zip(files, results):
        if r["benchmark"] != bench or r["k"] != k or r["n_prompts"] != first["n_prompts"]:
            raise ValueError(f"{f}: benchmark/k/n_prompts differ from {files[0]}")
    runs, samples_text, seeds, per_seed = [], [], [], {}
    stats: dict[str, int] = {}
    for f, r in zip(files, results):
        sf = f.with_name(f.name.removesuffix(".json") + ".samples.jsonl")
        rows = [json.loads(x) for x in sf.read_text().splitlines() if x.strip()]
        samples_text.append(sf.read_text())
        for es in r["eval_seeds"]:
            order: dict[str, int] = {}
            scores: list[list[float]] = []
            answers: list[list] = []
            for s in rows:
                if s["eval_seed"] != es:
                    continue
                if s["prompt_id"] not in order:
                    order[s["prompt_id"]] = len(order)
                    scores.append([])
                    answers.append([])
                i = order[s["prompt_id"]]
                scores[i].append(float(s["score"]))
                answers[i].append(answer_key(s["answer"]))
            runs.append((scores, answers))
            seeds.append(es)
        per_seed.update(r.get("per_seed", {}))
        for reason, n in r.get("grader", {}).get("stats", {}).items():
            stats[reason] = stats.get(reason, 0) + n
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"merge_eval_seeds: eval seed(s) repeated across files: {seeds}")
    summ = summarize_runs(runs, first["protocol"].get("pass_ks"))
    metrics = dict(summ["metrics"])
    for name in first["metrics"]:  # lengths, truncation: mean over the per-seed values
        if name not in metrics:
            vals = [per_seed[str(s)][name] for s in seeds if name in per_seed.get(str(s), {})]
            metrics[name] = float(sum(vals) / len(vals)) if vals else float("nan")
    merged = {
        **first,
        "eval_seeds": seeds,
        "metrics": metrics,
        "std_over_seeds": summ["std_over_seeds"],
        "ci": summ["ci"],
        "per_seed": per_seed,
        "grader": {"stats": stats, "timeouts": stats.get("timeout", 0)},
        "protocol": {**first["protocol"], "eval_seeds": seeds},
        "generation_s": sum(r.get("generation_s", 0.0) for r in results),
        "grading_s": sum(r.get("grading_s", 0.0) for r in results),
        "merged_from": [str(f) for f in files],
    }
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    samples_out = out_json.with_name(out_json.name.removesuffix(".json") + ".samples.jsonl")
    samples_out.write_text("".join(samples_text))
    out_json.write_text(json.dumps(merged, indent=2))
    return merged
