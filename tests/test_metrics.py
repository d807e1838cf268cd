"""Evaluation statistics on hand-computed values; aggregation and report on a fake results tree."""

import json
import math

import pandas as pd
import pytest

from evals.aggregate import aggregate, min_detectable_effect
from evals.metrics import (
    bootstrap_ci,
    diff_ci,
    majority_answer,
    mean_ci,
    pass_at_k,
    score_groups,
    t_quantile,
)
from evals.report import write_report


def test_pass_at_k_hand_values():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 2) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_score_groups_hand_example():
    # problem 1: samples 1,0,0,1 answers 3,4,4,3 -> majority tie, first seen '3' is correct
    # problem 2: samples 0,0,0,1 answers 1,2,2,5 -> majority '2' is wrong
    m = score_groups([[1, 0, 0, 1], [0, 0, 0, 1]], [["3", "4", "4", "3"], ["1", "2", "2", "5"]])
    assert m["avg@4"] == pytest.approx((0.5 + 0.25) / 2)
    assert m["pass@1"] == pytest.approx(0.375)
    assert m["pass@2"] == pytest.approx((5 / 6 + 0.5) / 2)
    assert m["pass@4"] == pytest.approx(1.0)
    assert m["maj@4"] == pytest.approx(0.5)
    # no answers at all (an agent's episodes, code): no maj@n, the rest as before
    m = score_groups([[1, 0, 0, 1], [0, 0, 0, 1]], [[None] * 4, [None] * 4])
    assert "maj@4" not in m and m["avg@4"] == pytest.approx(0.375)
    # one answer somewhere: maj@n is defined (0 where a problem has no majority answer)
    m = score_groups([[1, 0, 0, 1], [0, 0, 0, 1]], [["3", None, None, None], [None] * 4])
    assert m["maj@4"] == pytest.approx(0.5)
    assert majority_answer([None, "a", "b", "b", "a"]) == "a"
    assert majority_answer([None, None]) is None
    with pytest.raises(ValueError, match="problem 1"):
        score_groups([[1, 0], [1]], [["1", "2"], ["1"]])


def test_t_quantiles_and_intervals():
    for df, t in [(1, 12.706), (2, 4.303), (4, 2.776), (30, 2.042)]:
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-3)
    m, s, lo, hi = mean_ci([1, 2, 3])
    assert (m, s) == (2.0, 1.0)
    assert hi - m == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)
    assert math.isnan(mean_ci([0.5])[2])
    d, dlo, dhi = diff_ci([1, 2, 3], [0, 1, 2])
    assert d == 1.0 and dlo < 1.0 < dhi
    lo, hi = bootstrap_ci([0, 1, 1, 0, 1], seed=3)
    assert (lo, hi) == bootstrap_ci([0, 1, 1, 0, 1], seed=3) and lo <= 0.6 <= hi


def test_min_detectable_effect_hand_values():
    # n = 3 per arm, sd 2.0 in both ([0, 2, 4] and [1, 3, 5]): pooled sd 2.0, df 4,
    # t_{.975,4} = 2.776445, t_{.80,4} = 0.940965 -> 3.717410 * 2.0 * sqrt(1/3 + 1/3) = 6.0705
    assert min_detectable_effect([0, 2, 4], [1, 3, 5]) == pytest.approx(6.0705, abs=1e-3)
    # unequal arms: [1, 2, 3, 4] (n 4, var 5/3) and [0, 2] (n 2, var 2): pooled var
    # (3 * 5/3 + 1 * 2) / 4 = 1.75, sd 1.322876, df 4, sqrt(1/4 + 1/2) = 0.866025
    # -> 3.717410 * 1.322876 * 0.866025 = 4.2588
    assert min_detectable_effect([1, 2, 3, 4], [0, 2]) == pytest.approx(4.2588, abs=1e-3)
    # pooled, not Welch: swapping the arms changes nothing; a larger alpha or lower power shrinks it
    assert min_detectable_effect([0, 2], [1, 2, 3, 4]) == pytest.approx(4.2588, abs=1e-3)
    assert min_detectable_effect([0, 2, 4], [1, 3, 5], power=0.5) == pytest.approx(
        2.776445 * 2.0 * math.sqrt(2 / 3), abs=1e-3
    )  # t_{.5} = 0
    assert math.isnan(min_detectable_effect([0.5], [0.1, 0.2]))  # one seed: no std
    assert min_detectable_effect([0.3, 0.3], [0.3, 0.3]) == 0.0


def _fake_tree(root, acc):
    for repro, seeds in acc.items():
        for seed, a in seeds.items():
            d = root / "runs" / repro / f"seed{seed}"
            (d / "eval").mkdir(parents=True)
            (d / "eval" / "arith_mix.json").write_text(
                json.dumps(
                    {
                        "benchmark": "arith_mix",
                        "reproduction": repro,
                        "seed": seed,
                        "n_prompts": 10,
                        "k": 4,
                        "metrics": {"avg@4": a, "pass@4": min(1, a + 0.2), "maj@4": a},
                    }
                )
            )
            if repro != "sft_start":
                rows = [
                    {
                        "step": i,
                        "reward_mean": a * i / 19,
                        "accuracy": a * i / 19,
                        "completion_len_mean": 3.0,
                        "entropy": 0.5,
                        "kl": 0.01 * i,
                        "frac_zero_std_groups": 0.2,
                    }
                    for i in range(20)
                ]
                (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_aggregate_and_report(tmp_path):
    _fake_tree(
        tmp_path,
        {"grpo": {0: 0.4, 1: 0.5, 2: 0.6}, "dapo": {0: 0.5, 1: 0.6, 2: 0.7}, "sft_start": {0: 0.3}},
    )
    df = aggregate(tmp_path)
    s = pd.read_csv(tmp_path / "summary.csv")
    row = s[(s.reproduction == "dapo") & (s.metric == "avg@4")].iloc[0]
    assert row["mean"] == pytest.approx(0.6) and row["n_seeds"] == 3
    assert row["delta_vs_grpo"] == pytest.approx(0.1)
    # both arms sd 0.1, n 3: 3.717410 * 0.1 * sqrt(2/3) = 0.30353
    assert row["mde"] == pytest.approx(0.30353, abs=1e-4)
    assert row["ci_high"] - row["mean"] == pytest.approx(4.303 * 0.1 / math.sqrt(3), abs=1e-3)
    start = s[(s.reproduction == "sft_start") & (s.metric == "avg@4")].iloc[0]
    assert start["n_seeds"] == 1 and math.isnan(start["ci_low"])
    tr = s[(s.benchmark == "train") & (s.reproduction == "grpo") & (s.metric == "accuracy")].iloc[0]
    assert tr["mean"] == pytest.approx(0.5, abs=0.03)  # final window = last 2 steps of 20
    assert list(df["reproduction"].unique()[:2]) == ["grpo", "sft_start"]
    report = write_report(tmp_path).read_text()
    assert "| reproduction | avg@4 | pass@4 | maj@4 |" in report
    assert "| dapo | 60.0 [" in report and "+10.0 [" in report
    assert "| sft_start | 30.0 (1 seed)" in report
    # dapo: Welch half width 2.7764 * sqrt(2 * 0.01 / 3) = 0.2267; MDE 30.4 pp; 3 seeds
    assert "+10.0 [-12.7, +32.7] | 30.4 | 3 |" in report
    for f in ("reward_mean", "accuracy", "completion_len_mean", "entropy", "kl"):
        p = tmp_path / "plots" / f"{f}.png"
        assert p.exists() and p.stat().st_size > 1000
        assert f"(plots/{f}.png)" in report


def test_seeded_sft_start_is_a_row_with_a_ci(tmp_path):
    """With seeded starts sft_start has one evaluation per seed: a normal row with a CI over
    its seeds, a delta vs grpo and an MDE, in summary.csv and in the report."""
    _fake_tree(
        tmp_path,
        {"grpo": {0: 0.4, 1: 0.5, 2: 0.6}, "sft_start": {0: 0.30, 1: 0.32, 2: 0.34}},
    )
    aggregate(tmp_path)
    s = pd.read_csv(tmp_path / "summary.csv")
    start = s[(s.reproduction == "sft_start") & (s.metric == "avg@4")].iloc[0]
    # mean 0.32, sd 0.02, half width 4.303 * 0.02 / sqrt(3) = 0.04969
    assert start["n_seeds"] == 3 and start["mean"] == pytest.approx(0.32)
    assert start["ci_high"] - start["mean"] == pytest.approx(0.04969, abs=1e-4)
    assert start["delta_vs_grpo"] == pytest.approx(-0.18)
    # pooled sd sqrt((0.01 + 0.0004) / 2) = 0.072111 -> 3.717410 * 0.072111 * 0.816497 = 0.21888
    assert start["mde"] == pytest.approx(0.21888, abs=1e-4)
    report = write_report(tmp_path).read_text()
    assert "| sft_start | 32.0 [27.0, 37.0] |" in report
    assert "`sft_start` 0, 1, 2" in report


def test_paired_diff_ci_by_hand():
    from evals.metrics import paired_diff_ci

    # d = .1, .05, .15 (seed 3 of a has no partner and is left out): mean .1, sd .05,
    # se = .05 / sqrt(3) = .028868; t_{.975,2} = 4.3027 -> half width .12421;
    # MDE = (4.3027 + t_{.8,2} = 1.0607) * .028868 = .15483
    m, lo, hi, mde, n = paired_diff_ci({0: 0.5, 1: 0.3, 2: 0.2, 3: 0.9}, {0: 0.4, 1: 0.25, 2: 0.05})
    assert n == 3 and m == pytest.approx(0.1)
    assert (lo, hi) == (pytest.approx(-0.02421, abs=1e-4), pytest.approx(0.22421, abs=1e-4))
    assert mde == pytest.approx(0.15483, abs=1e-4)
    # a shared start offset cancels: Welch sees the start's spread, pairing does not
    a = {0: 0.60, 1: 0.20, 2: 0.40}
    b = {0: 0.58, 1: 0.179, 2: 0.381}  # a - b = .020, .021, .019: CI .02 +- .0025
    m, lo, hi, _, _ = paired_diff_ci(a, b)
    assert lo > 0 and m == pytest.approx(0.02)
    assert math.isnan(paired_diff_ci({0: 1.0}, {0: 0.5})[1])  # one pair: no CI
