"""Verdicts on the papers' claims: each reproduction's ``meta.claims`` (read from its runs'
resolved config.yaml) checked against the measured delta vs grpo in summary.csv.

Rules (the :class:`grpo_core.config.Claim` docstring): the measured effect is the delta vs grpo
with its 95% CI, in the metric's own units (fractions for accuracies, so ``margin: 0.02`` is two
points). Which delta: paired by seed when at least 2 seeds ran on both sides (summary.csv
``paired_delta`` / ``paired_ci_low`` / ``paired_ci_high`` / ``paired_mde``: seed s of the variant
and of grpo share the SFT start s and the seed's data order, so the start's variance cancels),
else the Welch delta ``delta_vs_grpo`` with ``[delta_ci_low, delta_ci_high]`` and ``mde``. The
verdict's ``ci`` says which (``paired`` / ``welch``); a summary.csv written before the paired
columns existed is judged on Welch.

- ``higher``: supported when ``ci_low > 0``, not supported when ``ci_high < 0``, else inconclusive;
- ``lower``: the mirror image;
- ``equal``: supported when ``-margin <= ci_low`` and ``ci_high <= margin``, not supported when the
  CI lies entirely outside ``[-margin, margin]``, else inconclusive.

A claim whose row is missing, or whose delta has no CI (fewer than two seeds on either side),
is inconclusive, with the reason in ``note``. Every verdict carries the comparison's minimum
detectable effect (summary.csv ``mde``: 80% power, two-sided 5%, pooled seed std of the two
rows; evals.aggregate.min_detectable_effect), and an inconclusive one says it: "effects below X
cannot be seen here".
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from grpo_core.errors import UserError
from grpo_core.schema import Claim

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"

RATE = re.compile(r"(avg|pass|maj|format)@\d+|accuracy|reward_mean|frac_.*")


def is_rate(metric: str) -> bool:
    """Metrics that are fractions (reported in percentage points)."""
    return bool(RATE.fullmatch(metric))


def fmt_effect(metric: str, x: float) -> str:
    """An effect size in the metric's units: points for rates, 3 significant digits otherwise."""
    return f"{100 * x:.1f} points" if is_rate(metric) else f"{x:.3g}"


@dataclass
class ClaimVerdict:
    reproduction: str
    text: str
    benchmark: str
    metric: str
    direction: str
    margin: float
    delta: float
    ci_low: float
    ci_high: float
    mde: float  # minimum detectable effect at these seeds (80% power, two-sided 5%)
    n_seeds: int
    verdict: str
    note: str = ""
    ci: str = "welch"  # which delta and CI the verdict used: paired (by seed) or welch

    def as_dict(self) -> dict:
        return asdict(self)


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def verdict(
    claim: Claim, delta: float, ci_low: float, ci_high: float, mde: float = float("nan")
) -> tuple[str, str]:
    """(verdict, note) for one claim given the measured delta, its 95% CI and the minimum
    detectable effect of the comparison (an inconclusive verdict's note names it)."""
    v, note = _verdict(claim, delta, ci_low, ci_high)
    if v == INCONCLUSIVE and not _nan(mde):
        note += f"; effects below {fmt_effect(claim.metric, mde)} cannot be seen here (MDE)"
    return v, note


def _verdict(claim: Claim, delta: float, ci_low: float, ci_high: float) -> tuple[str, str]:
    if _nan(delta):
        return INCONCLUSIVE, "no delta vs grpo (grpo not run on this metric?)"
    if _nan(ci_low) or _nan(ci_high):
        return INCONCLUSIVE, "no CI: needs at least 2 seeds of this reproduction and of grpo"
    if claim.direction == "higher":
        if ci_low > 0:
            return SUPPORTED, "CI above 0"
        if ci_high < 0:
            return NOT_SUPPORTED, "CI below 0: the opposite effect"
        return INCONCLUSIVE, "CI contains 0"
    if claim.direction == "lower":
        if ci_high < 0:
            return SUPPORTED, "CI below 0"
        if ci_low > 0:
            return NOT_SUPPORTED, "CI above 0: the opposite effect"
        return INCONCLUSIVE, "CI contains 0"
    m = claim.margin
    if -m <= ci_low and ci_high <= m:
        return SUPPORTED, f"CI inside ±{m:g}"
    if ci_low > m or ci_high < -m:
        return NOT_SUPPORTED, f"CI outside ±{m:g}"
    return INCONCLUSIVE, f"CI overlaps the edge of ±{m:g}"


def load_claims(profile_dir: Path) -> dict[str, list[Claim]]:
    """meta.claims per reproduction, from its seeds' resolved config.yaml files: the first seed's
    claims, then any claim (benchmark, metric, direction) that only a later seed's config has.
    ``meta`` is outside a run's identity (grpo_core.rundir), so a claim added to a
    reproduction while some of its seeds had already run counts once any seed ran with it."""
    out: dict[str, list[Claim]] = {}
    for cfg_file in sorted(Path(profile_dir).glob("runs/*/seed*/config.yaml")):
        repro = cfg_file.parent.parent.name
        try:
            data = yaml.safe_load(cfg_file.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{cfg_file}: not valid YAML ({e})") from None
        raw = ((data.get("meta") or {}).get("claims")) or []
        claims = []
        for i, c in enumerate(raw):
            try:
                claims.append(Claim.model_validate(c))
            except ValidationError as e:
                what = "; ".join(
                    f"{'.'.join(map(str, x['loc'])) or 'claim'}: {x['msg']}" for x in e.errors()
                )
                raise UserError(
                    f"{cfg_file}: meta.claims[{i}] is not a valid claim ({what}); a claim has "
                    "text, benchmark, metric, direction (higher|lower|equal) and margin"
                ) from None
        have = {(c.benchmark, c.metric, c.direction) for c in out.get(repro, [])}
        new = [c for c in claims if (c.benchmark, c.metric, c.direction) not in have]
        if new:
            out.setdefault(repro, []).extend(new)
    return out


def delta_vs_grpo(r: pd.Series) -> tuple[float, float, float, float, str]:
    """(delta, ci_low, ci_high, mde, kind) of a summary row against grpo: paired by seed when
    at least 2 seeds ran on both sides (kind "paired"), else Welch ("welch"); NaN where the
    summary has no value."""
    paired = "paired_delta" in r and int(r.get("n_paired", 0) or 0) >= 2
    keys = (
        ("paired_delta", "paired_ci_low", "paired_ci_high", "paired_mde")
        if paired
        else ("delta_vs_grpo", "delta_ci_low", "delta_ci_high", "mde")
    )
    d, lo, hi, mde = (float(r[k]) if k in r else float("nan") for k in keys)
    return d, lo, hi, mde, "paired" if paired else "welch"


def judge(
    summary: pd.DataFrame, claims: dict[str, list[Claim]], baseline: str = "grpo"
) -> list[ClaimVerdict]:
    """One verdict per claim; the baseline's own claims are skipped (its delta is 0 by
    definition), and so are claims on a benchmark the summary has no row of at all (another
    profile's task: tiny's arith_mix claims in a tiny_video summary)."""
    out = []
    benches = set(summary.benchmark) if "benchmark" in summary else set()
    for repro in sorted(claims):
        if repro == baseline:
            continue
        for c in claims[repro]:
            if c.benchmark not in benches:
                continue
            row = summary[
                (summary.reproduction == repro)
                & (summary.benchmark == c.benchmark)
                & (summary.metric == c.metric)
            ]
            if row.empty:
                d = lo = hi = mde = float("nan")
                n = 0
                kind = "welch"
                v, note = INCONCLUSIVE, f"not measured: no summary row {c.benchmark}/{c.metric}"
            else:
                r = row.iloc[0]
                n = int(r["n_seeds"])
                d, lo, hi, mde, kind = delta_vs_grpo(r)
                v, note = verdict(c, d, lo, hi, mde)
                if kind == "paired":
                    note = f"{note} ({kind}: {int(r['n_paired'])} seed pairs)"
            out.append(
                ClaimVerdict(
                    reproduction=repro,
                    text=c.text,
                    benchmark=c.benchmark,
                    metric=c.metric,
                    direction=c.direction,
                    margin=c.margin,
                    delta=d,
                    ci_low=lo,
                    ci_high=hi,
                    mde=mde,
                    n_seeds=n,
                    verdict=v,
                    note=note,
                    ci=kind,
                )
            )
    return out


def judge_profile(profile_dir: Path, summary: pd.DataFrame | None = None) -> list[ClaimVerdict]:
    profile_dir = Path(profile_dir)
    if summary is None:
        summary = pd.read_csv(profile_dir / "summary.csv")
    return judge(summary, load_claims(profile_dir))


def write_claims_csv(verdicts: list[ClaimVerdict], path: Path) -> Path:
    cols = list(ClaimVerdict.__dataclass_fields__)
    pd.DataFrame([v.as_dict() for v in verdicts], columns=cols).to_csv(path, index=False)
    return Path(path)
