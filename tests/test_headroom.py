"""The tiny_headroom testbed (issue 18): its profile loads, a smoke-sized version of it SFTs and
trains grpo with a held-out curve, and the headroom check (evals/headroom.py) computes the
last-quarter slope with its CI by hand-checked numbers."""

import json
import math

import pytest

from evals.headroom import check, fixed_effects_slope, last_quarter
from grpo_core.config import load_config


def test_fixed_effects_slope_by_hand():
    # group 1: x 0,1,2 y 0,1,3: dx -1,0,1, dy -4/3,-1/3,5/3 -> Sxy 3, Sxx 2
    # group 2: x 0,1,2 y 1,1,2: dy -1/3,-1/3,2/3 -> Sxy 1, Sxx 2
    # pooled slope (3 + 1) / (2 + 2) = 1; residuals dy - dx: g1 -1/3,-1/3,2/3, g2 2/3,-1/3,-1/3
    # SSE 2/3 + 2/3 = 4/3, df 6 - 2 - 1 = 3, se sqrt(4/3 / 3 / 4) = 1/3, t(.975, 3) = 3.182446
    g = [([0, 1, 2], [0, 1, 3]), ([0, 1, 2], [1, 1, 2])]
    s = fixed_effects_slope(g)
    assert (s.slope, s.n, s.df) == (pytest.approx(1.0), 6, 3)
    assert (s.lo, s.hi) == (
        pytest.approx(1 - 3.182446 / 3, abs=1e-5),
        pytest.approx(1 + 3.182446 / 3, abs=1e-5),
    )
    # one group is plain OLS: slope 3/2, residuals 1/6,-1/3,1/6, SSE 1/6, df 1,
    # se sqrt(1/6 / 2) = 0.288675, t(.975, 1) = 12.706205 -> half-width 3.668
    s1 = fixed_effects_slope(g[:1])
    assert s1.slope == pytest.approx(1.5)
    assert s1.hi - s1.slope == pytest.approx(12.706205 * math.sqrt(1 / 12), abs=1e-4)
    # two points of one group: no degrees of freedom left, NaN CI
    s2 = fixed_effects_slope([([0, 1], [0, 1])])
    assert s2.slope == pytest.approx(1.0) and math.isnan(s2.lo)


def test_last_quarter_and_check_read_curves(tmp_path):
    import numpy as np

    x, y = last_quarter(np.array([0, 10, 20, 30, 40]), np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert x.tolist() == [30, 40] and y.tolist() == [0.4, 0.5]  # steps >= 0.75 * 40
    for seed, acc in [(0, [0.2, 0.3, 0.4, 0.5, 0.6]), (1, [0.3, 0.3, 0.4, 0.5, 0.7])]:
        d = tmp_path / "runs" / "grpo" / f"seed{seed}"
        d.mkdir(parents=True)
        rows = [dict(step=s * 4, flops_cum=float(s + 1), accuracy=a) for s, a in enumerate(acc)]
        (d / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = check(tmp_path, "grpo")
    assert res["seeds"][0]["gain"] == pytest.approx(0.4)
    assert res["seeds"][1]["gain"] == pytest.approx(0.4)
    # last quarter: steps 12, 16; seed 0 +0.1, seed 1 +0.2 over 4 steps -> pooled 0.15 / 4
    assert res["pooled"].slope == pytest.approx(0.0375)


def test_tiny_headroom_profile_loads():
    cfg = load_config("grpo", "tiny_headroom", [])
    assert cfg.task.name == "arith_mix" and cfg.eval.curve is not None
    assert cfg.workflow.seeds == [0, 1, 2] and cfg.workflow.seeded_start
    assert "grpo" in cfg.workflow.reproductions
    # the settings measured in the profile's comment (docs/headroom_testbed.md, e7)
    assert (cfg.sft.steps, cfg.sft.batch_size, cfg.sft.label_smoothing) == (600, 128, 0.15)
    assert (cfg.train.steps, cfg.train.lr) == (300, 5e-5)
    assert (cfg.eval.curve.every, cfg.eval.curve.n_problems, cfg.eval.curve.k) == (10, 200, 4)


def test_tiny_headroom_smoke_sft_then_grpo_with_curve(tmp_path):
    """The profile at smoke size: SFT, then three grpo steps that write a held-out curve."""
    from grpo_core.prepare import prepare
    from grpo_core.trainer import Trainer

    small = [
        f"run.results_dir={tmp_path}",
        "run.threads=1",
        "workflow.seeded_start=false",
        'model.tiny={"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, '
        '"num_heads": 2, "num_kv_heads": 2}',
        "task.n_train=64",
        "task.n_test=8",
        "sft.steps=10",
        "sft.batch_size=16",
        "rollout.group_size=4",
        "rollout.prompts_per_step=4",
        "train.steps=3",
        "eval.curve.every=2",
        "eval.curve.n_problems=4",
    ]
    prepare(load_config(None, "tiny_headroom", small), threads=1, log=lambda *a: None)
    t = Trainer(load_config("grpo", "tiny_headroom", small), tmp_path / "run")
    t.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(math.isfinite(r["loss"]) for r in rows)
    curve = [json.loads(x) for x in (tmp_path / "run" / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [0, 2, 3]
    assert all(0 <= c["accuracy"] <= 1 for c in curve)
