"""Asynchronous (off-policy) rollouts, rollout.max_staleness (issue 17; grpo_core.async_rollout):
the IS statistics by hand, depth 0 of the pipeline equals the synchronous loop, staleness 1 and
2 train with the staleness the schedule says, determinism, resume with batches in flight, and
the worker thread's shutdown on errors."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from grpo_core import trainer as trainer_mod
from grpo_core.rundir import config_hash
from grpo_core.trainer import TIMING_FIELDS, Trainer, sampler_mismatch

TIMING = set(TIMING_FIELDS)
# rewards that vary within the smoke model's groups (its correctness is 0 at the start)
VARYING = "rewards=[{name: format}, {name: concise_length}]"
ASYNC = ["rollout.is_correction=token", VARYING]
ASYNC_KEYS = {
    "staleness",
    "policy_version",
    "mismatch_kl",
    "mismatch_ratio_max",
    "is_weight_mean",
    "is_weight_max",
    "is_clip_frac",
}


def metrics(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def weights(run_dir):
    return load_file(next((run_dir / "checkpoint").glob("*.safetensors")))


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "grpo-rollout-worker"]


# ------------------------------------------------------------------ the IS statistics by hand


def test_is_weight_stats_by_hand():
    """Two rows, cap 2. log rho row 0: [ln 3, 0, -ln 2] (rho 3, 1, 0.5); row 1: [ln 1.5, ln 4]
    and a masked token. Token mode: w = [2, 1, 0.5 | 1.5, 2], mean 7 / 5 = 1.4, max 2; rho > 2
    on 2 of 5 tokens: clip 0.4. Sequence mode: row 0 prod 1.5 (3 tokens), row 1 prod 6 -> 2 (2
    tokens): mean (4.5 + 4) / 5 = 1.7, max 2, clip 2 / 5 = 0.4."""
    sampler = torch.zeros(2, 3)
    train = torch.tensor([[math.log(3), 0.0, -math.log(2)], [math.log(1.5), math.log(4), 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    w, st = sampler_mismatch(train, sampler, mask, "token", 2.0, more=True)
    assert torch.allclose(w, torch.tensor([[2.0, 1.0, 0.5], [1.5, 2.0, 0.0]]), atol=1e-6)
    assert st["is_weight_mean"] == pytest.approx(1.4, abs=1e-6)
    assert st["is_weight_max"] == pytest.approx(2.0, abs=1e-6)
    assert st["is_clip_frac"] == pytest.approx(0.4, abs=1e-6)
    w, st = sampler_mismatch(train, sampler, mask, "sequence", 2.0, more=True)
    assert torch.allclose(w, torch.tensor([[1.5, 1.5, 1.5], [2.0, 2.0, 0.0]]), atol=1e-6)
    assert st["is_weight_mean"] == pytest.approx(1.7, abs=1e-6)
    assert st["is_weight_max"] == pytest.approx(2.0, abs=1e-6)
    assert st["is_clip_frac"] == pytest.approx(0.4, abs=1e-6)
    # without ``more`` (the vLLM path, unchanged): no new keys
    _, st = sampler_mismatch(train, sampler, mask, "token", 2.0)
    assert "is_weight_max" not in st and "is_clip_frac" not in st


# ------------------------------------------------------------------ staleness 0 = today's loop


def test_max_staleness_0_is_the_default_run():
    """max_staleness 0 is the default: the same config (and run hash), no worker."""
    from grpo_core.config import load_config

    a = load_config("grpo", "smoke")
    b = load_config("grpo", "smoke", ["rollout.max_staleness=0"])
    assert a == b and config_hash(a) == config_hash(b)
    assert load_config("grpo", "smoke", ["rollout.max_staleness=1", *ASYNC]).rollout.max_staleness


def test_pipeline_at_depth_0_equals_the_synchronous_loop(smoke_cfg, tmp_path):
    """The worker thread with depth 0 (each batch sampled by its copy of the current weights,
    queued after the update) computes exactly today's metrics and weights: the staleness-0
    batches take the synchronous path. The default run never starts a worker."""
    cfg = smoke_cfg("grpo", ["train.steps=3", VARYING])
    Trainer(cfg, tmp_path / "sync").train(progress=False)
    assert not workers()
    t = Trainer(cfg, tmp_path / "pipe")
    t._async_k = 0  # the pipeline machinery without staleness
    started = []
    orig = t._async_start
    t._async_start = lambda: (orig(), started.append(t._async is not None))
    t.train(progress=False)
    assert started == [True] and not workers()
    ms, mp = metrics(tmp_path / "sync"), metrics(tmp_path / "pipe")
    assert len(ms) == 3 and any(r["loss"] != 0 for r in ms)  # (it trains)
    for rs, rp in zip(ms, mp):
        assert set(rp) - set(rs) == ASYNC_KEYS
        assert {k: rp[k] for k in rs} == rs  # bitwise, compute counters included
        assert rp["staleness"] == 0 and rp["is_weight_mean"] == 1.0
    assert same_weights(tmp_path / "sync", tmp_path / "pipe")


# ------------------------------------------------------------------ staleness 1 and 2 train


@pytest.mark.parametrize("k", [1, 2])
def test_stale_runs_train_with_the_scheduled_staleness(smoke_cfg, tmp_path, k):
    """Batch s comes from version max(0, s - k): staleness [0, 1, .., k, k]; stale batches get
    behaviour log-probs, so mismatch and IS weights show; step 0 is the synchronous step 0."""
    steps = 4
    sync = smoke_cfg("grpo", [f"train.steps={steps}", VARYING])
    Trainer(sync, tmp_path / "sync").train(progress=False)
    cfg = smoke_cfg("grpo", [f"train.steps={steps}", f"rollout.max_staleness={k}", *ASYNC])
    Trainer(cfg, tmp_path / "a").train(progress=False)
    m, ms = metrics(tmp_path / "a"), metrics(tmp_path / "sync")
    assert [r["staleness"] for r in m] == [min(s, k) for s in range(steps)]
    assert [r["policy_version"] for r in m] == [max(0, s - k) for s in range(steps)]
    assert {x: m[0][x] for x in ms[0]} == ms[0]  # on-policy step 0: the synchronous one
    for r in m[1:]:
        assert r["mismatch_kl"] > 0 and r["is_weight_max"] > 1.0  # the weights moved
        assert 0.9 < r["is_weight_mean"] < 1.1 and r["is_clip_frac"] == 0.0
        assert math.isfinite(r["loss"])
    assert any(r["loss"] != 0 for r in m) and not same_weights(tmp_path / "a", tmp_path / "sync")
    from grpo_core.config import resolve_model_path

    w0 = load_file(next(Path(resolve_model_path(cfg)).glob("*.safetensors")))
    wa = weights(tmp_path / "a")
    assert any(not torch.equal(wa[n], w0[n]) for n in wa if n in w0)  # it trained
    assert not workers()


def test_staleness_1_same_seed_same_run(smoke_cfg, tmp_path):
    """Jobs run on exactly the weights queued before them and every generation holds the
    lock (the held-out curve's too): two runs of one seed give identical metrics, curves and
    weights; another seed differs."""
    curve = "eval.curve={every: 1, n_problems: 4, k: 2}"
    cfg = smoke_cfg("grpo", ["train.steps=3", "rollout.max_staleness=1", curve, *ASYNC])
    Trainer(cfg, tmp_path / "a").train(progress=False)
    Trainer(cfg, tmp_path / "b").train(progress=False)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert same_weights(tmp_path / "a", tmp_path / "b")

    def points(d):
        rows = [json.loads(x) for x in (d / "curve.jsonl").read_text().splitlines()]
        return [(r["step"], r["accuracy"], r["tokens_generated_cum"]) for r in rows]

    assert len(points(tmp_path / "a")) == 4 and points(tmp_path / "a") == points(tmp_path / "b")
    other = smoke_cfg("grpo", ["train.steps=3", "rollout.max_staleness=1", *ASYNC], seed=1)
    Trainer(other, tmp_path / "c").train(progress=False)
    assert metrics(tmp_path / "c") != metrics(tmp_path / "a")


# ------------------------------------------------------------------ resume with batches in flight


def test_staleness_1_crash_and_resume_matches_uninterrupted(smoke_cfg, tmp_path, monkeypatch):
    """The checkpoint after step 2 holds the batches of steps 2 and 3 (sampled by versions 1
    and 2, not yet trained); a run resumed from it equals the uninterrupted one."""
    from grpo_core import rundir

    cfg = smoke_cfg(
        "grpo", ["train.steps=5", "train.checkpoint_every=2", "rollout.max_staleness=1", *ASYNC]
    )
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
    assert len(metrics(tmp_path / "crash")) == 3 and not workers()
    monkeypatch.undo()
    state = rundir.load_state(tmp_path / "crash" / "checkpoint" / rundir.STATE_DIR / "state")
    jobs = state["async_rollouts"]["jobs"]
    assert [(j["step"], j["version"], j["behaviour"]) for j in jobs] == [
        (2, 1, True),
        (3, 2, True),
    ]
    t2 = Trainer(cfg, tmp_path / "crash")
    assert t2.step == 2 and sorted(t2._inflight) == [(2, 0), (3, 0)]
    t2.train(progress=False)
    assert metrics(tmp_path / "crash") == metrics(tmp_path / "full")
    assert same_weights(tmp_path / "crash", tmp_path / "full")


def test_staleness_1_interrupt_saves_in_flight_and_resumes(smoke_cfg, tmp_path, monkeypatch):
    """Ctrl-C during step 0: the step finishes, the worker finishes the batches in flight
    (step 1's, sampled at the start, and step 2's, queued after step 0's update) and they go
    into the checkpoint; the resumed run equals the uninterrupted one. ``stop_at`` and a second
    ``train`` on the same trainer: the same."""
    cfg = smoke_cfg("grpo", ["train.steps=4", "rollout.max_staleness=1", *ASYNC])
    Trainer(cfg, tmp_path / "full").train(progress=False)
    t = Trainer(cfg, tmp_path / "int")
    orig = t.train_step

    def interrupted(step):
        out = orig(step)
        if step == 0:
            t._on_signal(2, None)
        return out

    monkeypatch.setattr(t, "train_step", interrupted)
    t.train(progress=False)
    monkeypatch.undo()
    assert t.step == 1 and len(metrics(tmp_path / "int")) == 1 and not workers()
    t2 = Trainer(cfg, tmp_path / "int")
    # step 1: sampled at the start (version 0); step 2: after step 0's update (version 1)
    assert [(s, j.version) for (s, _), j in sorted(t2._inflight.items())] == [(1, 0), (2, 1)]
    t2.train(progress=False)
    assert metrics(tmp_path / "int") == metrics(tmp_path / "full")
    assert same_weights(tmp_path / "int", tmp_path / "full")
    t3 = Trainer(cfg, tmp_path / "stop")
    t3.train(progress=False, stop_at=2)
    t3.train(progress=False)  # the same trainer again: its in-flight jobs were kept
    assert metrics(tmp_path / "stop") == metrics(tmp_path / "full")


# ------------------------------------------------------------------ shutdown on errors


def test_error_in_the_trainer_stops_the_worker(smoke_cfg, tmp_path, monkeypatch):
    """An exception in the training step (here: the update of step 1) propagates; the worker's
    queued jobs are cancelled and its thread joined."""
    cfg = smoke_cfg("grpo", ["train.steps=4", "rollout.max_staleness=2", *ASYNC])
    t = Trainer(cfg, tmp_path / "a")
    orig = t.optimize
    seen = {}

    def failing(batch):
        if t.step == 1:
            seen["alive"] = bool(workers())
            raise ValueError("update failed")
        return orig(batch)

    monkeypatch.setattr(t, "optimize", failing)
    with pytest.raises(ValueError, match="update failed"):
        t.train(progress=False)
    assert seen["alive"] and not workers() and t._async is None


def test_error_in_the_worker_reaches_the_trainer(smoke_cfg, tmp_path, monkeypatch):
    """An exception in a job of the worker (here: the episodes of step 2) is raised in the
    trainer when it takes that batch; the thread ends; steps 0 and 1 are logged."""
    cfg = smoke_cfg("grpo", ["train.steps=4", "rollout.max_staleness=1", *ASYNC])
    t = Trainer(cfg, tmp_path / "a")
    real_play = trainer_mod.play
    calls = {"n": 0}

    def play(*a, **kw):
        if threading.current_thread().name == "grpo-rollout-worker":
            calls["n"] += 1
            if calls["n"] == 3:  # the worker's third job: step 2's batch
                raise OSError("env died")
        return real_play(*a, **kw)

    monkeypatch.setattr(trainer_mod, "play", play)
    with pytest.raises(OSError, match="env died"):
        t.train(progress=False)
    assert len(metrics(tmp_path / "a")) == 2 and not workers()


def test_stale_batch_takes_old_logprobs_from_the_gradient_pass(smoke_cfg, tmp_path):
    """train.reuse_old_logprobs=auto (an on-policy-shaped update: mu 1, one minibatch of one
    micro-batch): a stale batch's old (proximal) log-probs are the current weights', which the
    gradient pass computes, so no no-grad policy pass runs; the numbers are those of the
    separate pass up to float rounding."""
    runs = {}
    for reuse in ("off", "auto"):
        cfg = smoke_cfg(
            "grpo",
            ["train.steps=3", "rollout.max_staleness=1", f"train.reuse_old_logprobs={reuse}"]
            + ASYNC,
        )
        t = Trainer(cfg, tmp_path / reuse)
        passes = []

        def step(s, orig=t.train_step, t=t, passes=passes):
            out = orig(s)
            passes.append(dict(t.passes))  # the no-grad passes of this step
            return out

        t.train_step = step
        t.train(progress=False)
        runs[reuse] = (metrics(tmp_path / reuse), passes)
    (m_off, p_off), (m_on, p_on) = runs["off"], runs["auto"]
    assert p_off[1:] == [{"policy": 1, "ref": 1}] * 2 and p_on[1:] == [{"ref": 1}] * 2
    for a, b in zip(m_off, m_on):
        for k in ("loss", "grad_norm", "is_weight_mean", "is_weight_max", "mismatch_kl", "kl"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-7), k
        assert a["reward_mean"] == b["reward_mean"]


@pytest.mark.parametrize(
    "repro,extra",
    [
        # refill rounds queued during collect; steps whose groups are all filtered: no update
        ("dapo", [VARYING]),
        ("aepo", [VARYING, "sampler.params={target: 10.0, min_adv: -100.0, frac: 0.5}"]),
    ],
)
def test_stale_runs_with_refill_and_extra_rounds(smoke_cfg, tmp_path, repro, extra):
    """A filter's refill rounds (sampled by the worker on the current weights, with behaviour
    log-probs when the step's first round is stale), steps without a batch (the schedule goes
    on), and a sampler's extra round (the trainer's own engine, under the worker's lock)."""
    cfg = smoke_cfg(
        repro, ["train.steps=3", "rollout.max_staleness=1", "rollout.is_correction=token", *extra]
    )
    Trainer(cfg, tmp_path / "a").train(progress=False)
    m = metrics(tmp_path / "a")
    assert len(m) == 3 and not workers()
    for s, r in enumerate(m):
        if "staleness" in r:  # (a step whose groups were all filtered out has no batch)
            assert r["staleness"] == min(s, 1) and math.isfinite(r["loss"])
    if repro == "dapo":  # (measured: steps 0 and 1 filter every group, step 2 keeps some)
        assert all(r["gen_rounds"] == 3 for r in m)
        assert any("staleness" not in r for r in m) and "staleness" in m[-1]
    if repro == "aepo":
        assert any(r.get("extra/n_kept", 0) > 0 for r in m)


def test_lora_policy_under_staleness_1(smoke_cfg, tmp_path, monkeypatch):
    """A LoRA policy: the worker's copy gets the adapter's weights (the trainable ones) after
    every update, so a stale batch's behaviour log-probs are those of the older adapter."""
    pytest.importorskip("peft")
    lora = "model.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}"
    cfg = smoke_cfg("grpo", ["train.steps=3", "rollout.max_staleness=1", lora, *ASYNC])
    from grpo_core.async_rollout import RolloutWorker

    seen = []
    orig = RolloutWorker.sync

    def sync(self, model, version):
        seen.append([n for n, p in model.named_parameters() if p.requires_grad])
        orig(self, model, version)

    monkeypatch.setattr(RolloutWorker, "sync", sync)
    Trainer(cfg, tmp_path / "a").train(progress=False)
    m = metrics(tmp_path / "a")
    assert [r["staleness"] for r in m] == [0, 1, 1] and m[2]["mismatch_kl"] > 0
    assert seen and all(names and all("lora_" in n for n in names) for names in seen)
    assert not workers()
