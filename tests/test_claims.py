"""Claim verdicts (evals.claims) on hand-made summary rows, and end to end on a synthetic
results tree (config.yaml claims + summary.csv from the real aggregation)."""

import math
from pathlib import Path

import pandas as pd
import pytest
from synthetic_results import EXPECTED, make_results

from evals.claims import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    judge,
    judge_profile,
    load_claims,
    verdict,
)
from grpo_core.config import Claim
from grpo_core.errors import UserError

NAN = float("nan")


def _row(repro, delta, lo, hi, bench="arith_mix", metric="avg@4", n=3):
    return {
        "reproduction": repro,
        "benchmark": bench,
        "metric": metric,
        "mean": 0.5,
        "std": 0.01,
        "ci_low": 0.4,
        "ci_high": 0.6,
        "n_seeds": n,
        "delta_vs_grpo": delta,
        "delta_ci_low": lo,
        "delta_ci_high": hi,
    }


@pytest.mark.parametrize(
    "direction,margin,lo,hi,expected",
    [
        # higher: the CI must lie strictly above 0
        ("higher", 0.0, 0.01, 0.05, SUPPORTED),
        ("higher", 0.0, -0.05, -0.01, NOT_SUPPORTED),
        ("higher", 0.0, -0.01, 0.05, INCONCLUSIVE),
        ("higher", 0.0, 0.0, 0.05, INCONCLUSIVE),  # touching 0 is not "above 0"
        # lower: the mirror image
        ("lower", 0.0, -0.05, -0.01, SUPPORTED),
        ("lower", 0.0, 0.01, 0.05, NOT_SUPPORTED),
        ("lower", 0.0, -0.05, 0.01, INCONCLUSIVE),
        # equal with margin 0.02: inside [-0.02, 0.02] / entirely outside / straddling an edge
        ("equal", 0.02, -0.01, 0.015, SUPPORTED),
        ("equal", 0.02, -0.02, 0.02, SUPPORTED),  # the edges belong to the margin
        ("equal", 0.02, 0.03, 0.08, NOT_SUPPORTED),
        ("equal", 0.02, -0.09, -0.021, NOT_SUPPORTED),
        ("equal", 0.02, 0.01, 0.05, INCONCLUSIVE),
        ("equal", 0.0, 0.0, 0.0, SUPPORTED),  # identical seeds: CI [0, 0]
    ],
)
def test_verdict_rules(direction, margin, lo, hi, expected):
    c = Claim(text="x", direction=direction, margin=margin)
    v, note = verdict(c, (lo + hi) / 2, lo, hi)
    assert v == expected and note


def test_no_ci_or_no_delta_is_inconclusive():
    c = Claim(text="x")
    v, note = verdict(c, 0.3, NAN, NAN)
    assert v == INCONCLUSIVE and "2 seeds" in note
    v, note = verdict(c, NAN, NAN, NAN)
    assert v == INCONCLUSIVE and "no delta" in note


def test_inconclusive_verdicts_name_the_mde():
    c = Claim(text="x", metric="avg@4")
    v, note = verdict(c, 0.01, -0.02, 0.04, mde=0.0607)
    assert v == INCONCLUSIVE
    assert note == "CI contains 0; effects below 6.1 points cannot be seen here (MDE)"
    # not a rate: in the metric's own units
    c = Claim(text="x", benchmark="train", metric="completion_len_mean", direction="lower")
    assert verdict(c, -1.0, -3.0, 1.0, mde=4.25)[1].endswith(
        "effects below 4.25 cannot be seen here (MDE)"
    )
    # a conclusive verdict keeps its note; an unknown MDE adds nothing
    assert verdict(Claim(text="x"), 0.1, 0.05, 0.15, mde=0.03)[1] == "CI above 0"
    assert verdict(Claim(text="x"), 0.01, -0.02, 0.04)[1] == "CI contains 0"


def test_judge_hand_made_rows():
    summary = pd.DataFrame(
        [
            _row("grpo", 0.0, 0.0, 0.0),
            _row("a", 0.10, 0.04, 0.16),
            _row("a", -3.0, -5.0, -1.0, bench="train", metric="completion_len_mean"),
            {**_row("b", 0.01, -0.03, 0.05), "mde": 0.07},
            _row("c", 0.2, NAN, NAN, n=1),
        ]
    )
    claims = {
        "grpo": [Claim(text="baseline")],
        "a": [
            Claim(text="more accurate"),
            Claim(
                text="shorter", benchmark="train", metric="completion_len_mean", direction="lower"
            ),
            Claim(text="no change", direction="equal", margin=0.05),
            Claim(text="not measured", metric="pass@8"),
        ],
        "b": [Claim(text="no change", direction="equal", margin=0.05)],
        "c": [Claim(text="more accurate")],
    }
    got = {(v.reproduction, v.text): v for v in judge(summary, claims)}
    assert ("grpo", "baseline") not in got  # the baseline's own claims are skipped
    assert got[("a", "more accurate")].verdict == SUPPORTED
    assert got[("a", "more accurate")].delta == pytest.approx(0.10)
    assert got[("a", "shorter")].verdict == SUPPORTED
    # CI [0.04, 0.16] straddles the margin edge 0.05
    assert got[("a", "no change")].verdict == INCONCLUSIVE
    nm = got[("a", "not measured")]
    assert nm.verdict == INCONCLUSIVE and "not measured" in nm.note and math.isnan(nm.delta)
    assert got[("b", "no change")].verdict == SUPPORTED  # [-0.03, 0.05] inside ±0.05
    assert got[("b", "no change")].mde == pytest.approx(0.07)
    assert math.isnan(got[("a", "more accurate")].mde)  # a summary without the column
    c = got[("c", "more accurate")]
    assert c.verdict == INCONCLUSIVE and c.n_seeds == 1
    assert len(got) == 6


def test_claims_from_run_configs(tmp_path):
    prof = make_results(tmp_path)
    claims = load_claims(prof)
    assert set(claims) == {"grpo", "better", "worse", "noisy", "single"}
    assert claims["better"][1].metric == "completion_len_mean"
    verdicts = judge_profile(prof)
    got = {(v.reproduction, v.text): v.verdict for v in verdicts}
    assert got == EXPECTED
    better = next(
        v for v in verdicts if v.text == "better accuracy than GRPO" and v.reproduction == "better"
    )
    # both ran seeds 0-2, so the verdict is judged paired by seed: the per-seed differences
    # are .20 .20 .20, so the paired CI is [0.20, 0.20] and its MDE 0
    assert better.ci == "paired" and "(paired: 3 seed pairs)" in better.note
    assert better.delta == pytest.approx(0.20)
    assert better.ci_low == pytest.approx(0.20) and better.ci_high == pytest.approx(0.20)
    assert better.mde == pytest.approx(0.0, abs=1e-12)
    # the Welch columns beside it, by hand: both groups have sample variance
    # ((-.02)^2 + 0 + .02^2) / 2 = 4e-4, se = sqrt(2 * 4e-4 / 3) = 0.016330;
    # df = (2v)^2 / (2 v^2 / 2) = 4 with v = 4e-4/3; t_{.975, 4} = 2.7764 -> half width
    # 0.045340 around the delta 0.62 - 0.42 = 0.20.
    s = pd.read_csv(prof / "summary.csv")
    r = s[(s.reproduction == "better") & (s.metric == "avg@4")].iloc[0]
    assert r.delta_vs_grpo == pytest.approx(0.20) and r.paired_delta == pytest.approx(0.20)
    assert r.delta_ci_low == pytest.approx(0.20 - 0.045340, abs=1e-4)
    assert r.delta_ci_high == pytest.approx(0.20 + 0.045340, abs=1e-4)
    # MDE: pooled sd 0.02, df 4: (2.776445 + 0.940965) * 0.02 * sqrt(2/3) = 0.060705
    assert r.mde == pytest.approx(0.060705, abs=1e-5)
    # noisy: differences -.10 +.13 +.06, mean .03, sd .117 -> paired CI
    # .03 +- 4.3027 * .11790 / sqrt(3) = [-0.2629, 0.3229]: inconclusive
    noisy = next(v for v in verdicts if v.reproduction == "noisy" and v.metric == "avg@4")
    assert noisy.ci == "paired"
    assert noisy.ci_low == pytest.approx(-0.2629, abs=1e-3)
    assert noisy.ci_high == pytest.approx(0.3229, abs=1e-3)


def test_claims_fall_back_to_welch_without_pairs():
    """Fewer than 2 seed pairs (or an old summary.csv): the Welch delta and its MDE decide."""
    row = {
        **_row("a", 0.10, 0.04, 0.16),
        "mde": 0.05,
        "paired_delta": 0.10,
        "paired_ci_low": NAN,
        "paired_ci_high": NAN,
        "paired_mde": NAN,
        "n_paired": 1,
    }
    (v,) = judge(pd.DataFrame([row]), {"a": [Claim(text="more accurate")]})
    assert v.ci == "welch" and v.verdict == SUPPORTED and v.mde == pytest.approx(0.05)
    # 2 pairs whose paired CI contains 0 overrule a Welch CI above 0
    row.update(paired_delta=0.1, paired_ci_low=-0.3, paired_ci_high=0.5, paired_mde=0.6, n_paired=2)
    (v,) = judge(pd.DataFrame([row]), {"a": [Claim(text="more accurate")]})
    assert v.ci == "paired" and v.verdict == INCONCLUSIVE and v.mde == pytest.approx(0.6)


def test_bad_claim_in_config_is_a_user_error(tmp_path):
    d = tmp_path / "p" / "runs" / "x" / "seed0"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("meta:\n  claims:\n    - {text: t, direction: sideways}\n")
    with pytest.raises(UserError, match=r"meta.claims\[0\].*higher\|lower\|equal"):
        load_claims(tmp_path / "p")


def test_readme_tables_come_from_the_csv_files(tmp_path):
    """scripts/results_tables.py: the README's rows are summary.csv / claims.csv as they are."""
    import importlib.util

    from evals.claims import write_claims_csv

    prof = make_results(tmp_path)
    write_claims_csv(judge_profile(prof), prof / "claims.csv")
    spec = importlib.util.spec_from_file_location(
        "results_tables", Path(__file__).resolve().parents[1] / "scripts" / "results_tables.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in mod.table(prof, None, None).splitlines()}
    # better: mean of .60 .62 .64 = 62.0, Student-t CI +-t_{.975,2} * .02 / sqrt(3) =
    # +-4.303 * .011547 = +-5.0 points;
    # delta +20.0 with the Welch CI of test_claims_from_run_configs, MDE 6.1 points
    assert rows["better"].startswith("| better | 3 | 62.0 [57.0, 67.0] |")
    assert "| +20.0 [+15.5, +24.5] | 6.1 | [+20.0, +20.0] (0.0, 3 pairs) |" in rows["better"]
    assert rows["single"].startswith("| single | 1 | 70.0 |")  # one seed: no CI
    assert rows["grpo"].split(" | ")[4:6] == ["", ""]  # no delta against itself
    lines = mod.claims_lines(prof, ["better"]).splitlines()
    assert lines[0].startswith("- better (arith_mix avg@4): **supported**: better accuracy")


def test_a_claim_added_after_some_seeds_ran_counts(tmp_path):
    """meta is outside a run's identity: seed 0 ran with one claim, seed 1 with that one edited
    (same benchmark, metric, direction: seed 0's text is kept) and a second one (added)."""
    one = "{text: higher success, benchmark: twx_coin, metric: success_rate, direction: higher}"
    edited = "{text: edited, benchmark: twx_coin, metric: success_rate, direction: higher}"
    two = "{text: long horizons, benchmark: twx_coin, metric: success_long, direction: higher}"
    for seed, claims in ((0, [one]), (1, [edited, two]), (2, [])):
        d = tmp_path / "p" / "runs" / "gigpo" / f"seed{seed}"
        d.mkdir(parents=True)
        body = "".join(f"    - {c}\n" for c in claims)
        (d / "config.yaml").write_text("meta:\n  claims:\n" + body if body else "meta: {}\n")
    got = load_claims(tmp_path / "p")["gigpo"]
    assert [(c.text, c.metric) for c in got] == [
        ("higher success", "success_rate"),
        ("long horizons", "success_long"),
    ]
