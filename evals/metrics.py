"""Evaluation statistics: avg@k, unbiased pass@k, maj@k, bootstrap CIs over problems and
Student-t CIs over seeds."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), in product form
    1 - prod_{i=n-c+1}^{n} (1 - k/i)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_answer(answers: list[str | None]) -> str | None:
    """Most frequent non-None answer; ties go to the one seen first."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def _default_ks(n: int) -> list[int]:
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return sorted(set(ks + [n]))


def per_problem_scores(
    scores: list[list[float]], answers: list[list[str | None]], ks: list[int] | None = None
) -> dict[str, list[float]]:
    """Per-problem avg@n, pass@k (each k) and maj@n; their means are the benchmark scores.
    No maj@n when no sample has an answer (an agent env's episodes, code graded by its tests):
    there is nothing to vote on, and a 0 there would read as a measured score."""
    if len(scores) != len(answers):
        raise ValueError(f"{len(scores)} score rows but {len(answers)} answer rows")
    n = len(scores[0]) if scores else 0
    for i, (s, a) in enumerate(zip(scores, answers)):
        if len(s) != n or len(a) != n:
            raise ValueError(f"problem {i} has {len(s)} scores / {len(a)} answers, expected {n}")
    ks = ks or _default_ks(n)
    vote = not answers or any(x is not None for a in answers for x in a)  # else nothing to vote on
    out: dict[str, list[float]] = {f"avg@{n}": [], **({f"maj@{n}": []} if vote else {})}
    for k in ks:
        out[f"pass@{k}"] = []
    for s, a in zip(scores, answers):
        correct = [x > 0.5 for x in s]
        out[f"avg@{n}"].append(sum(correct) / n)
        for k in ks:
            out[f"pass@{k}"].append(pass_at_k(n, sum(correct), k))
        if vote:
            maj = majority_answer(a)
            out[f"maj@{n}"].append(
                float(maj is not None and any(c for c, x in zip(correct, a) if x == maj))
            )
    return out


def score_groups(
    scores: list[list[float]], answers: list[list[str | None]], ks: list[int] | None = None
) -> dict[str, float]:
    """Benchmark scores from n samples per problem (scores > 0.5 count as correct)."""
    per = per_problem_scores(scores, answers, ks)
    return {k: float(np.mean(v)) if v else float("nan") for k, v in per.items()}


def bootstrap_ci(
    values: list[float], level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over problems."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t by bisection on its CDF (regularised incomplete beta via
    a continued fraction); exact enough for confidence intervals."""
    if df <= 0:
        return float("nan")

    def cdf(t: float) -> float:
        x = df / (df + t * t)
        ib = _betainc(df / 2.0, 0.5, x)
        return 1 - 0.5 * ib if t > 0 else 0.5 * ib

    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if cdf(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (Numerical Recipes' continued fraction)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log(1 - x))
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1 - x)
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > 1e-30 else 1e-30)
        c = 1.0 + num / (c if abs(c) > 1e-30 else 1e-30)
        f *= c * d
        if abs(1.0 - c * d) < 1e-12:
            break
    return front * (f - 1.0) / a


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sample std, ci_low, ci_high): Student-t interval over seeds,
    mean +- t_{(1+level)/2, n-1} * std / sqrt(n). One value: std and CI are NaN."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return (float("nan"),) * 4
    m = float(x.mean())
    if n == 1:
        return (m, float("nan"), float("nan"), float("nan"))
    s = float(x.std(ddof=1))
    h = t_quantile((1 + level) / 2, n - 1) * s / math.sqrt(n)
    return (m, s, m - h, m + h)


def diff_ci(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Difference of means a - b with a Welch t interval (Welch-Satterthwaite df)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if len(a) < 2 or len(b) < 2:
        return (d, float("nan"), float("nan"))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return (d, d, d)
    df = (va + vb) ** 2 / ((va**2) / (len(a) - 1) + (vb**2) / (len(b) - 1))
    h = t_quantile((1 + level) / 2, max(1, int(round(df)))) * se
    return (d, d - h, d + h)


def paired_diff_ci(
    a: dict[int, float], b: dict[int, float], level: float = 0.95, power: float = 0.8
) -> tuple[float, float, float, float, int]:
    """Paired difference over the seeds both sides ran: d_s = a[s] - b[s], its mean, the
    Student-t interval mean(d) +- t_{(1+level)/2, n-1} * sd(d) / sqrt(n), the paired minimum
    detectable effect (t_{(1+level)/2, n-1} + t_{power, n-1}) * sd(d) / sqrt(n), and n.
    Seed s of a variant and seed s of grpo start from the same SFT start s (seeded starts), so
    pairing removes the start's variance from the comparison; NaN with fewer than 2 pairs."""
    seeds = sorted(set(a) & set(b))
    d = np.asarray(
        [a[s] - b[s] for s in seeds if not (math.isnan(a[s]) or math.isnan(b[s]))], float
    )
    n = len(d)
    if n == 0:
        return (float("nan"),) * 4 + (0,)
    m = float(d.mean())
    if n == 1:
        return (m, float("nan"), float("nan"), float("nan"), 1)
    se = float(d.std(ddof=1)) / math.sqrt(n)
    h = t_quantile((1 + level) / 2, n - 1) * se
    mde = (t_quantile((1 + level) / 2, n - 1) + t_quantile(power, n - 1)) * se
    return (m, m - h, m + h, mde, n)


def summarize_runs(
    runs: list[tuple[list[list[float]], list[list[str | None]]]], ks: list[int] | None = None
) -> dict:
    """Several eval seeds of one benchmark: ``runs`` holds (scores, answers) per seed, problems in
    the same order. Returns metrics (mean over seeds), std_over_seeds (sample std; NaN for one
    seed), ci (percentile bootstrap over problems of the per-problem values averaged over seeds)
    and per_seed metrics."""
    if not runs:
        raise ValueError("no eval seeds to summarize")
    pers = [per_problem_scores(s, a, ks) for s, a in runs]
    names = list(pers[0])
    per_seed = [{n: float(np.mean(p[n])) for n in names} for p in pers]
    metrics = {n: float(np.mean([m[n] for m in per_seed])) for n in names}
    std = {
        n: float(np.std([m[n] for m in per_seed], ddof=1)) if len(runs) > 1 else float("nan")
        for n in names
    }
    ci = {n: list(bootstrap_ci(list(np.mean([p[n] for p in pers], axis=0)))) for n in names}
    return {"metrics": metrics, "std_over_seeds": std, "ci": ci, "per_seed": per_seed}
