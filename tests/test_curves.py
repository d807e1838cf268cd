"""Compute-performance curves (issue 18): held-out curve points during training, the per-step
compute accounting in metrics.jsonl, and the ScaleRL sigmoid fits (evals.curves)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from grpo_core.trainer import CURVE_FILE, TIMING_FIELDS, Trainer

TIMING = set(TIMING_FIELDS)
CURVE = "eval.curve={every: 2, n_problems: 6, k: 2}"


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _metrics(run):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in _rows(run / "metrics.jsonl")]


def _weights(run):
    return load_file(next((run / "checkpoint").glob("*.safetensors")))


# ------------------------------------------------------------------ the trainer's side


def test_curve_on_leaves_training_identical(smoke_cfg, tmp_path):
    """The curve's evaluation draws from its own seed and restores every RNG state: metrics
    (timing aside) and final weights are those of the run without it."""
    off = smoke_cfg("grpo", ["train.steps=3"])
    on = smoke_cfg("grpo", ["train.steps=3", CURVE])
    Trainer(off, tmp_path / "off").train(progress=False)
    Trainer(on, tmp_path / "on").train(progress=False)
    assert _metrics(tmp_path / "on") == _metrics(tmp_path / "off")
    wa, wb = _weights(tmp_path / "off"), _weights(tmp_path / "on")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (tmp_path / "off" / CURVE_FILE).exists()
    rows = _rows(tmp_path / "on" / CURVE_FILE)
    # step 0, every 2 steps, and the last step (3)
    assert [r["step"] for r in rows] == [0, 2, 3]
    assert all(r["n"] == 6 and r["k"] == 2 and 0 <= r["accuracy"] <= 1 for r in rows)
    # accuracy is a mean over 6 x 2 samples
    assert all(abs(r["accuracy"] * 12 - round(r["accuracy"] * 12)) < 1e-9 for r in rows)
    m = _rows(tmp_path / "on" / "metrics.jsonl")
    assert rows[0]["flops_cum"] == 0.0 and rows[0]["tokens_generated_cum"] == 0
    assert rows[1]["flops_cum"] == m[1]["flops_cum"]  # the compute after steps 0 and 1
    assert rows[2]["flops_cum"] == m[2]["flops_cum"]


def test_curve_rng_streams_restored(smoke_cfg, tmp_path):
    """curve_point leaves torch's and python's global generators where they were."""
    import random

    t = Trainer(smoke_cfg("grpo", ["train.steps=1", CURVE]), tmp_path / "r")
    try:
        torch.manual_seed(5)
        random.seed(5)
        np.random.seed(5)
        row = t.curve_point(0)
        a = (torch.rand(3), random.random(), np.random.rand())
        torch.manual_seed(5)
        random.seed(5)
        np.random.seed(5)
        b = (torch.rand(3), random.random(), np.random.rand())
        assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
        # the same step gives the same point (its own seed), another step another draw
        assert t.curve_point(0)["accuracy"] == row["accuracy"]
    finally:
        t.release()


def test_curve_resume_continues_without_duplicates(smoke_cfg, tmp_path, monkeypatch):
    cfg = smoke_cfg("grpo", ["train.steps=4", "train.checkpoint_every=2", CURVE])
    Trainer(cfg, tmp_path / "full").train(progress=False)
    t = Trainer(cfg, tmp_path / "crash")
    orig = t.train_step

    def crashing(step):
        if step == 3:
            raise RuntimeError("simulated crash")
        return orig(step)

    monkeypatch.setattr(t, "train_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        t.train(progress=False)
    monkeypatch.undo()
    # a row after the checkpoint's step (as if written before a crash): dropped on resume
    with open(tmp_path / "crash" / CURVE_FILE, "a") as f:
        f.write(json.dumps({"step": 3, "accuracy": 0.5}) + "\n")
    t2 = Trainer(cfg, tmp_path / "crash")
    assert t2.step == 2
    t2.train(progress=False)
    full = _rows(tmp_path / "full" / CURVE_FILE)
    got = _rows(tmp_path / "crash" / CURVE_FILE)
    assert [r["step"] for r in got] == [0, 2, 4]
    drop = ("eval_s", "wall_cum_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in got] == [
        {k: v for k, v in r.items() if k not in drop} for r in full
    ]
    # the compute counters resume from the checkpoint
    assert _metrics(tmp_path / "crash") == _metrics(tmp_path / "full")


def test_compute_accounting(smoke_cfg, tmp_path):
    """Per-step tokens and FLOPs: hand-checkable from the step's own fields. grpo on smoke:
    on-policy (no old-logp pass), a reference for the KL (one no-grad pass over the batch),
    one epoch: tokens_trained = the batch's loss tokens, flops = 2N gen + 2N ref + 6N train
    over the same prompt + completion tokens."""
    cfg = smoke_cfg("grpo", ["train.steps=2"])
    t = Trainer(cfg, tmp_path / "c")
    t.train(progress=False)
    rows = _rows(tmp_path / "c" / "metrics.jsonl")
    n = t.n_flop_params
    model = t.model
    total = sum(p.numel() for p in model.parameters())
    assert n == total - model.get_input_embeddings().weight.numel()  # untied: lookup not counted
    for r in rows:
        assert r["tokens_trained"] == round(r["completion_len_mean"] * r["n_train_seqs"])
        assert r["tokens_generated"] == round(r["completion_len_mean"] * r["n_sampled"])
        proc = r["flops_generation"] / (2 * n)  # prompt + completion tokens of the batch
        assert proc == int(proc) and proc > r["tokens_generated"]
        assert r["flops_nograd"] == pytest.approx(2 * n * proc)  # the reference's one pass
        assert r["flops_train"] == pytest.approx(6 * n * proc)
        assert r["flops"] == pytest.approx(
            r["flops_generation"] + r["flops_nograd"] + r["flops_train"]
        )
    assert rows[1]["flops_cum"] == pytest.approx(rows[0]["flops"] + rows[1]["flops"])
    assert (
        rows[1]["tokens_generated_cum"] == rows[0]["tokens_generated"] + rows[1]["tokens_generated"]
    )
    assert rows[1]["wall_cum_s"] == pytest.approx(rows[0]["step_s"] + rows[1]["step_s"])
    assert {"step_s", "wall_cum_s"} <= TIMING


def test_curve_config_ranges():
    from grpo_core.config import load_config
    from grpo_core.errors import UserError

    cfg = load_config("grpo", "smoke", ["eval.curve={every: 5, n_problems: 8, k: 2}"])
    assert (cfg.eval.curve.every, cfg.eval.curve.n_problems, cfg.eval.curve.k) == (5, 8, 2)
    assert load_config("grpo", "smoke").eval.curve is None  # off by default
    with pytest.raises(UserError, match="eval.curve.every"):
        load_config("grpo", "smoke", ["eval.curve={every: 0}"])
    with pytest.raises(UserError, match="eval.curve.k"):
        load_config("grpo", "smoke", ["eval.curve={k: 0}"])


# ------------------------------------------------------------------ the fits (evals.curves)


def test_sigmoid_hand_values():
    from evals.curves import sigmoid

    # R0 0.2, A 0.8, B 2, C_mid 100:
    #   C = 100: 0.2 + 0.6 / (1 + 1)            = 0.5
    #   C = 200: 0.2 + 0.6 / (1 + 0.5^2 = 1.25) = 0.68
    #   C = 50:  0.2 + 0.6 / (1 + 2^2 = 5)      = 0.32
    #   C = 0:   R0
    got = sigmoid([100, 200, 50, 0], 0.2, 0.8, 2.0, 100.0)
    assert np.allclose(got, [0.5, 0.68, 0.32, 0.2])


@pytest.mark.parametrize(
    "a,b,c_mid", [(0.8, 2.0, 1e12), (0.55, 0.7, 3e9), (0.95, 1.3, 5e14), (0.3, 4.0, 40.0)]
)
def test_fit_recovers_known_parameters(a, b, c_mid):
    from evals.curves import fit_curve, sigmoid

    c = np.concatenate([[0.0], np.geomspace(c_mid / 30, c_mid * 30, 25)])
    r = sigmoid(c, 0.2, a, b, c_mid)
    f = fit_curve(c, r, warmup_frac=0.0)
    assert f.R0 == pytest.approx(0.2)
    assert f.A == pytest.approx(a, abs=1e-4)
    assert f.B == pytest.approx(b, rel=1e-3)
    assert f.C_mid == pytest.approx(c_mid, rel=1e-3)
    assert f.rmse < 1e-6 and f.n_points == 25


def test_fit_with_noise_and_warmup_cut():
    from evals.curves import fit_curve, sigmoid

    rng = np.random.default_rng(0)
    c = np.concatenate([[0.0], np.linspace(1e9, 1.2e11, 24)])
    r = sigmoid(c, 0.3, 0.7, 1.5, 3e10) + rng.normal(0, 0.005, len(c))
    r[1] = 0.0  # a wild early point: below the 10% warm-up cut (1.2e10), not fitted
    f = fit_curve(c, r, warmup_frac=0.1)
    assert f.n_points == int((c >= 1.2e10).sum())
    assert f.R0 == pytest.approx(r[0])
    assert abs(f.A - 0.7) < 0.03 and abs(f.C_mid / 3e10 - 1) < 0.15 and abs(f.B - 1.5) < 0.3


def test_fit_bounds_and_too_few_points():
    from evals.curves import fit_curve, sigmoid

    # a curve heading above 1 is fitted with A at its bound 1
    c = np.concatenate([[0.0], np.geomspace(1, 1e4, 12)])
    f = fit_curve(c, np.clip(sigmoid(c, 0.1, 1.4, 1.0, 100.0), 0, 1.2), warmup_frac=0.0)
    assert 0.0 <= f.A <= 1.0 and f.A == pytest.approx(1.0)
    f = fit_curve([0.0, 1.0, 2.0], [0.1, 0.2, 0.3], warmup_frac=0.0)
    assert math.isnan(f.A) and "< 3" in f.note


def test_extrapolation_check():
    from evals.curves import extrapolation_error, sigmoid

    c = np.concatenate([[0.0], np.linspace(5, 100, 20)])
    ex = extrapolation_error(c, sigmoid(c, 0.2, 0.8, 2.0, 30.0), warmup_frac=0.0)
    # the first half (c <= 50: 10 points) determines the curve: the second half is predicted
    assert ex["n_fit"] == 10 and ex["n_test"] == 10 and ex["extrap_max"] < 1e-4
    # a curve that turns down in the second half: the first half's fit misses it by ~0.2
    r = sigmoid(c, 0.2, 0.8, 2.0, 30.0)
    r[c > 50] -= 0.2
    ex = extrapolation_error(c, r, warmup_frac=0.0)
    assert ex["extrap_mae"] == pytest.approx(0.2, abs=1e-3)


def _write_curve(run, c, r, steps=None):
    run.mkdir(parents=True, exist_ok=True)
    steps = steps if steps is not None else range(len(c))
    (run / CURVE_FILE).write_text(
        "".join(
            json.dumps({"step": int(s), "flops_cum": float(x), "accuracy": float(y), "n": 8}) + "\n"
            for s, x, y in zip(steps, c, r)
        )
    )


def test_reproduction_fit_bootstrap_over_seeds(tmp_path):
    from evals.curves import fit_profile, seed_records, sigmoid, write_curves_csv

    c = np.concatenate([[0.0], np.geomspace(1e8, 1e11, 14)])
    for seed, a in enumerate([0.7, 0.75, 0.8]):
        _write_curve(tmp_path / "runs" / "x" / f"seed{seed}", c, sigmoid(c, 0.2, a, 1.0, 1e9))
    (rf,) = fit_profile(tmp_path, n_boot=100, warmup_frac=0.0)
    assert rf.n_seeds == 3 and rf.reproduction == "x"
    # the seed-mean curve of three sigmoids of one B and C_mid is the sigmoid of their mean A
    assert rf.fit.A == pytest.approx(0.75, abs=1e-4)
    lo, hi = rf.ci["A"]
    assert 0.7 - 1e-4 <= lo < 0.75 < hi <= 0.8 + 1e-4
    assert rf.ci["B"][0] == pytest.approx(1.0, rel=1e-3)  # every resample has B 1
    assert [f.A for f in rf.per_seed.values()] == pytest.approx([0.7, 0.75, 0.8], abs=1e-4)
    recs = seed_records(tmp_path, warmup_frac=0.0)
    got = {(s, m): v for _, s, b, m, v in recs if b == "curve"}
    assert got[(2, "A")] == pytest.approx(0.8, abs=1e-4)
    assert got[(0, "C_mid")] == pytest.approx(1e9, rel=1e-3)
    p = write_curves_csv([rf], tmp_path / "curves.csv")
    import pandas as pd

    row = pd.read_csv(p).iloc[0]
    assert row["A"] == pytest.approx(0.75, abs=1e-4) and row["n_seeds"] == 3


def _golden_module():
    """scripts/golden.py, imported from its file."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("golden", root / "scripts" / "golden.py")
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    return golden


def test_golden_compare_ignores_added_compute_fields(tmp_path, capsys):
    """scripts/golden.py: a record made before the compute fields existed compares equal to one
    with them (named once); a changed or dropped existing field is still a difference."""
    golden = _golden_module()

    def record(d, rows):
        d.mkdir()
        (d / "machine.json").write_text(json.dumps({"cpu": "x"}))
        (d / "r.json").write_text(json.dumps({"rows": rows, "weights_sha256": "ab"}))
        return d

    a = record(tmp_path / "a", [{"loss": 0.5}])
    b = record(tmp_path / "b", [{"loss": 0.5, "tokens_generated": 7, "flops": 1e6}])
    assert golden.compare(a, b) == 0
    out = capsys.readouterr().out
    assert "added, not compared): flops, tokens_generated" in out
    assert golden.compare(b, a) == 1  # dropped fields are differences
    assert {"step_s": 1.0, "wall_cum_s": 2.0, "flops_cum": 3.0}.keys() - golden._strip(
        {"step_s": 1.0, "wall_cum_s": 2.0, "flops_cum": 3.0}
    ).keys() == {"step_s", "wall_cum_s"}


def test_golden_compare_counts_a_skipped_reproduction(tmp_path, capsys):
    """scripts/golden.py: a reproduction written as skipped (it needs its home profile's env)
    is reported as not recorded and makes compare fail, on either side."""
    golden = _golden_module()

    def record(d, body):
        d.mkdir()
        (d / "machine.json").write_text(json.dumps({"cpu": "x"}))
        (d / "r.json").write_text(json.dumps(body))
        return d

    a = record(tmp_path / "a", {"rows": [{"loss": 0.5}], "weights_sha256": "ab"})
    b = record(tmp_path / "b", {"skipped": "env gui needed"})
    assert golden.compare(a, b) == 1
    out = capsys.readouterr().out
    assert "r: not recorded (env gui needed)" in out and "0 of 1 reproductions identical" in out
    assert golden.compare(b, a) == 1
