"""The training loop: determinism, resume, micro-batch invariance, group layout, smoke runs."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from grpo_core.trainer import TIMING_FIELDS, Trainer

TIMING = set(TIMING_FIELDS)


def metrics(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def weights(run_dir):
    return load_file(next((run_dir / "checkpoint").glob("*.safetensors")))


def test_same_seed_identical_metrics(smoke_cfg, tmp_path):
    cfg = smoke_cfg("grpo", ["train.steps=3"])
    Trainer(cfg, tmp_path / "a").train(progress=False)
    Trainer(cfg, tmp_path / "b").train(progress=False)
    ma, mb = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert len(ma) == 3 and ma == mb
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # and a different seed samples differently
    Trainer(smoke_cfg("grpo", ["train.steps=3"], seed=1), tmp_path / "c").train(progress=False)
    assert metrics(tmp_path / "c") != ma


@pytest.mark.parametrize("repro", ["grpo", "dapo"])
def test_crash_and_resume_matches_uninterrupted(smoke_cfg, tmp_path, monkeypatch, repro):
    cfg = smoke_cfg(repro, ["train.steps=4", "train.checkpoint_every=2"])
    Trainer(cfg, tmp_path / "full").train(progress=False)

    # crash during step 3: steps 0-2 logged, checkpoint from step 2
    t = Trainer(cfg, tmp_path / "crash")
    orig = t.train_step

    def crashing(step):
        if step == 3:
            raise RuntimeError("simulated crash")
        return orig(step)

    monkeypatch.setattr(t, "train_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        t.train(progress=False)
    assert len(metrics(tmp_path / "crash")) == 3
    monkeypatch.undo()

    t2 = Trainer(cfg, tmp_path / "crash")
    assert t2.step == 2
    t2.train(progress=False)
    assert metrics(tmp_path / "crash") == metrics(tmp_path / "full")
    wf, wc = weights(tmp_path / "full"), weights(tmp_path / "crash")
    assert all(torch.equal(wf[k], wc[k]) for k in wf)


def test_interrupt_finishes_step_saves_and_resumes(smoke_cfg, tmp_path, monkeypatch):
    cfg = smoke_cfg("grpo", ["train.steps=3"])
    Trainer(cfg, tmp_path / "full").train(progress=False)
    t = Trainer(cfg, tmp_path / "int")
    orig = t.train_step

    def interrupted(step):
        out = orig(step)
        if step == 0:
            t._on_signal(2, None)  # Ctrl-C arrives during step 0
        return out

    monkeypatch.setattr(t, "train_step", interrupted)
    t.train(progress=False)
    assert t.step == 1 and len(metrics(tmp_path / "int")) == 1
    monkeypatch.undo()
    Trainer(cfg, tmp_path / "int").train(progress=False)
    assert metrics(tmp_path / "int") == metrics(tmp_path / "full")


@pytest.mark.parametrize(
    "repro,overrides",
    [
        ("grpo", ["loss.agg=seq_mean_token_mean"]),
        ("grpo", ["loss.agg=token_mean", "loss.entropy_coef=0.01"]),
        ("dr_grpo", []),
        ("gspo", ["train.minibatches=1"]),
        ("rloo", []),
    ],
)
def test_micro_batch_split_gives_same_update(smoke_cfg, tmp_path, repro, overrides):
    cfg = smoke_cfg(repro, overrides)
    t = Trainer(cfg, None)
    batch, _ = t.collect(0)
    assert batch is not None
    from grpo_core.advantages import compute_advantages

    t.model.eval()
    batch.ref_logp = t._logprobs_nograd(t.ref.model, batch.rollouts)
    t.model.train()
    batch.advantages = compute_advantages(batch.rewards, cfg.rollout.group_size, cfg.advantage)
    init = copy.deepcopy(t.model.state_dict())
    opt_init = copy.deepcopy(t.opt.state_dict())
    results = []
    for micro in (16, 3):
        t.model.load_state_dict(init)
        t.opt.load_state_dict(opt_init)
        t.cfg.train.micro_batch_size = micro
        logs = t.optimize(batch)
        results.append((logs, {k: v.clone() for k, v in t.model.state_dict().items()}))
    (l1, w1), (l2, w2) = results
    assert l1["loss"] == pytest.approx(l2["loss"], rel=1e-5, abs=1e-7)
    assert l1["grad_norm"] == pytest.approx(l2["grad_norm"], rel=1e-4)
    assert all(torch.allclose(w1[k], w2[k], atol=1e-6) for k in w1)


def test_shuffled_group_is_caught_in_the_loop(smoke_cfg, monkeypatch):
    t = Trainer(smoke_cfg("grpo"), None)
    orig = t.sampler.next_prompts
    # a broken sampler that hands out a prompt list the trainer then expands: the group
    # assertion must catch completions of different prompts in one group
    import grpo_core.trainer as tr

    real = tr.assert_groups

    def shuffled(ids, g):
        ids = list(ids)
        ids[0], ids[-1] = ids[-1], ids[0]
        return real(ids, g)

    monkeypatch.setattr(tr, "assert_groups", shuffled)
    monkeypatch.setattr(t.sampler, "next_prompts", orig)
    with pytest.raises(AssertionError, match="mixes prompts"):
        t.collect(0)


def test_dynamic_sampling_keeps_only_groups_with_variance(smoke_cfg):
    # the filter is on accuracy (DAPO's metric=acc); with correctness as the only reward term,
    # reward variance within a kept group is accuracy variance
    t = Trainer(smoke_cfg("dapo", ["sampler.max_rounds=3", "rewards=[{name: correctness}]"]), None)
    batch, stats = t.collect(0)
    assert stats["gen_rounds"] <= 3
    if batch is not None:
        r = batch.rewards.view(-1, t.cfg.rollout.group_size)
        assert ((r.max(1).values - r.min(1).values) > 0).all()
        assert stats["frac_zero_std_groups"] == 0.0


@pytest.mark.parametrize("repro", ["grpo", "dr_grpo", "dapo", "gspo", "rloo"])
def test_smoke_run_of_each_reproduction(smoke_cfg, tmp_path, repro):
    cfg = smoke_cfg(repro, ["train.steps=2"])
    Trainer(cfg, tmp_path).train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    required = (
        "step reward_mean reward_std accuracy completion_len_mean entropy kl loss grad_norm "
        "frac_zero_std_groups clip_frac lr rollout_s train_s tokens_per_s"
    ).split()
    for r in rows:
        missing = [k for k in required if k not in r]
        assert not missing, missing
    assert (tmp_path / "config.yaml").exists()
    assert list((tmp_path / "checkpoint").glob("*.safetensors"))


def test_sgd_optimizer_option_moves_weights_by_lr_times_gradient(smoke_cfg, tmp_path):
    cfg = smoke_cfg("grpo", ["train.steps=1", "train.optimizer=sgd", "train.lr=0.5"])
    tr = Trainer(cfg, tmp_path / "sgd")
    assert isinstance(tr.opt, torch.optim.SGD)
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    grads = {}

    def step_and_record():
        # the gradients after clipping are the ones SGD applies: p <- p - lr * g
        params = [p for p in tr.model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        for n, p in tr.model.named_parameters():
            if p.grad is not None:
                grads[n] = p.grad.detach().clone()
        tr.opt.step()
        return 0.0

    tr._clip_and_step = step_and_record
    tr.train_step(0)
    assert grads, "no gradient reached the optimizer"
    for n, g in grads.items():
        torch.testing.assert_close(
            dict(tr.model.named_parameters())[n].detach(), before[n] - 0.5 * g
        )
