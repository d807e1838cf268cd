"""Mechanisms checked against the papers' own code, each on hand-computed numbers: dynamic
sampling's filter metric (DAPO), the unlikeliness filter, AEPO's cooling cap and its extra rows
under a sampler with log-probs, GTPO's conflict count, DisCO's minibatch KL hinge, TW-GRPO's
weighted KL, the KL estimators' clamp (KDRL), data-parallel batch scaling and Knapsack RL's
value of no extra rollouts."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo_core.advantages import compute_advantages
from grpo_core.config import AdvantageCfg, KLCfg, LossCfg, SamplerCfg
from grpo_core.errors import UserError
from grpo_core.losses import (
    POLICY_LOSSES,
    LossContext,
    aggregate,
    disco_minibatch_stats,
    kl_estimate,
    row_groups,
)
from grpo_core.samplers import SAMPLERS, knapsack_allocate

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ 1. dynamic sampling metric


def test_dynamic_sampling_filters_on_accuracy_not_the_shaped_reward():
    # four correct answers, the last one overlong: correctness [1, 1, 1, 1], overlong penalty
    # [0, 0, 0, -1] -> total reward [1, 1, 1, 0]
    reward = [torch.tensor([1.0, 1.0, 1.0, 0.0])]
    acc = [torch.tensor([1.0, 1.0, 1.0, 1.0])]
    # on the total reward the group has variance: GRPO advantages (r - 0.75) / 0.5 =
    # [0.5, 0.5, 0.5, -1.5] (a correct answer pushed down)
    adv = compute_advantages(reward[0], 4, AdvantageCfg(name="grpo", eps=0.0))
    assert adv.tolist() == pytest.approx([0.5, 0.5, 0.5, -1.5])
    acc_sampler = SAMPLERS.get("dynamic")(10, SamplerCfg(name="dynamic"), 0)
    assert acc_sampler.keep(reward, acc=acc).tolist() == [False]  # 0 of 1 groups kept
    old = SAMPLERS.get("dynamic")(10, SamplerCfg(name="dynamic", params={"metric": "reward"}), 0)
    assert old.keep(reward, acc=acc).tolist() == [True]
    # mixed correctness is kept either way
    mixed = [torch.tensor([1.0, 0.0, 1.0, 0.0])]
    assert acc_sampler.keep(mixed, acc=mixed).tolist() == [True]
    with pytest.raises(UserError, match="metric"):
        SAMPLERS.get("dynamic")(10, SamplerCfg(name="dynamic", params={"metric": "rewrd"}), 0)


def test_collect_passes_each_groups_accuracy_to_the_sampler(smoke_cfg):
    from grpo_core.trainer import Trainer

    t = Trainer(smoke_cfg("dapo", ["sampler.max_rounds=1"]), None)
    seen = []
    orig = t.sampler.keep

    def spy(groups, acc=None):
        seen.append((groups, acc))
        return orig(groups, acc=acc)

    t.sampler.keep = spy
    batch, stats = t.collect(0)
    groups, acc = seen[0]
    assert [len(a) for a in acc] == [len(g) for g in groups]
    flat = torch.cat(acc)
    assert set(flat.tolist()) <= {0.0, 1.0}
    assert float(flat.mean()) == pytest.approx(stats["accuracy"])
    # the kept groups are exactly those with right and wrong answers
    n_mixed = sum(bool(a.max() != a.min()) for a in acc)
    assert (0 if batch is None else len(batch.group_sizes)) == n_mixed


def test_concise_r_keeps_and_unlikeliness_drops_all_correct_groups(smoke_cfg):
    from grpo_core.samplers import make_sampler

    # unlikeliness: an all-correct group of 4 gets r' = 1 - 0.25 * rank / 4 = [1, 0.9375,
    # 0.875, 0.8125]: rank-only advantages (+-1.16 here) under uniform; dropped on accuracy
    r = [torch.tensor([1.0, 0.9375, 0.875, 0.8125])]
    ones = [torch.ones(4)]
    unl = smoke_cfg("unlikeliness")
    assert unl.sampler.name == "dynamic" and unl.sampler.params["metric"] == "acc"
    assert make_sampler(unl.sampler, 10, 0).keep(r, acc=ones).tolist() == [False]
    # concise_r stage 2: all-correct groups carry the length reward and are kept (its README)
    con = smoke_cfg("concise_r")
    assert con.sampler.params["metric"] == "reward"
    assert make_sampler(con.sampler, 10, 0).keep(r, acc=ones).tolist() == [True]


# ------------------------------------------------------------------ 3. / 9. AEPO


def test_aepo_cooling_keeps_half_of_min_cap_and_candidates(smoke_cfg):
    from grpo_core.trainer import Trainer

    cfg = smoke_cfg("aepo", ["sampler.params={target: 0.1, min_adv: -100.0, frac: 0.5}"])
    t = Trainer(cfg, None)
    batch, _ = t.collect(1)
    t.sampler.entropy = 0.3  # above the target: cooling
    # 2 prompts x G = 4: 8 candidates, cap 60 -> min(60, 8) // 2 = 4 (before: min(8, 30) = 8)
    assert t._extra_round(batch, 1)["extra/n_kept"] == 4.0
    t.sampler.p["max_rows"] = 5  # min(5, 8) // 2 = 2 (before: min(8, 5 // 2) = 2)
    batch, _ = t.collect(1)
    assert t._extra_round(batch, 1)["extra/n_kept"] == 2.0


def test_aepo_extra_rows_keep_tis_on_the_main_rows(smoke_cfg):
    """A fake engine that reports sampler log-probs (as vLLM does): the extra round's rows,
    drawn at another temperature, get weight 1; the main rows keep their TIS weights."""
    from grpo_core.trainer import Trainer

    cfg = smoke_cfg(
        "aepo",
        [
            "sampler.params={target: 10.0, min_adv: -100.0, frac: 0.5}",
            "rollout.is_correction=token",
            "rollout.is_cap=2.0",
        ],
    )
    t = Trainer(cfg, None)
    inner = t.engine.generate

    def generate(prompts, params):
        ro = inner(prompts, params)
        # the sampler's log-probs 0.1 above the trainer's would-be values: rho = e^-0.1
        ro.sampler_logp = t._logprobs_nograd(t.model, ro) + 0.1
        return ro

    t.engine.generate = generate
    t.sampler.entropy = 0.3  # at or below the target 10: the extra round runs
    seen = {}
    t.optimize = lambda batch: seen.setdefault("batch", batch) and {"entropy": 0.3}
    stats = t.train_step(0)
    b = seen["batch"]
    n_extra = int(stats["extra/n_kept"])
    assert n_extra == 8 and b.is_weight is not None
    m = b.rollouts.completion_mask.bool()
    main, extra = m[:-n_extra], m[-n_extra:]
    # main rows: w = min(e^-0.1, 2) = 0.904837 on every token; extra rows: 1
    assert torch.allclose(b.is_weight[:-n_extra][main], torch.tensor(math.exp(-0.1)), atol=1e-4)
    assert torch.equal(b.is_weight[-n_extra:][extra], torch.ones(int(extra.sum())))
    assert stats["is_weight_mean"] == pytest.approx(math.exp(-0.1), abs=1e-4)
    # k3 of KL(sampler || train): e^-0.1 - 1 + 0.1 = 0.0048374, over the main rows only
    assert stats["mismatch_kl"] == pytest.approx(0.0048374, abs=1e-4)


# ------------------------------------------------------------------ 5. DisCO minibatch hinge


def _disco_grads(hinge_on, micro_groups, beta=1000.0):
    """Gradient of the minibatch loss (two groups of 2, one token each) accumulated over
    micro-batches of ``micro_groups`` groups."""
    logp = torch.tensor([[-1.0], [-2.0], [-1.0], [-2.0]], requires_grad=True)
    # log rho = logp - old: group A (rows 0, 1) -0.1, group B (rows 2, 3) 0
    old = logp.detach() + torch.tensor([[0.1], [0.1], [0.0], [0.0]])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    mask = torch.ones(4, 1)
    cfg = LossCfg(name="disco", params={"beta": beta, "hinge_on": hinge_on})
    fn = POLICY_LOSSES.get("disco")
    stats = disco_minibatch_stats(cfg)
    mb = stats(logp.detach(), old, mask) if stats else None
    gid, gsz = row_groups([2, 2])
    total = 0.0
    step = 2 * micro_groups
    for s in range(0, 4, step):
        ix = torch.arange(s, s + step)
        ctx = LossContext(group_ids=gid[ix], group_sizes=gsz[ix], minibatch=mb)
        loss_tok, _ = fn(logp[ix], old[ix], adv[ix], mask[ix], cfg, ctx=ctx)
        share = aggregate(loss_tok, mask[ix], "seq_mean_token_mean", 4, 4, 1.0)
        share.backward()
        total += float(share.detach())
    return logp.grad.flatten(), total


def test_disco_hinge_on_the_minibatch_kl_does_not_depend_on_micro_batching():
    # KL k3 per token: group A e^-0.1 + 0.1 - 1 = 0.00483742, group B 0;
    # minibatch KL = 2 * 0.00483742 / 4 = 0.00241871, h = 0.00241871 - 1e-4 = 0.00231871;
    # hinge gradient beta h * dKL_mb/dlogp = 2.31871 * (e^-0.1 - 1) / 4 = -0.0551634 on A's
    # tokens, 0 on B's; hinge value 500 h^2 = 0.00268821
    g0, l0 = _disco_grads("minibatch", 2, beta=0.0)
    want = torch.tensor([-0.0551634, -0.0551634, 0.0, 0.0])
    for micro in (2, 1):  # one micro-batch of both groups, or one group per micro-batch
        g, loss = _disco_grads("minibatch", micro)
        assert torch.allclose(g - g0, want, atol=1e-6)
        assert loss - l0 == pytest.approx(0.00268821, abs=1e-7)
    # the old behaviour (hinge_on: micro_batch) with one group per micro-batch: group A's own
    # KL 0.00483742, h_A = 0.00473742; its rows are half the minibatch:
    # 1/2 * beta h_A * (e^-0.1 - 1) / 2 = -0.112708 (2.04x the minibatch hinge)
    g, _ = _disco_grads("micro_batch", 1)
    assert torch.allclose(g - g0, torch.tensor([-0.112708, -0.112708, 0.0, 0.0]), atol=1e-5)
    g, _ = _disco_grads("micro_batch", 2)  # one micro-batch = the minibatch: the same as above
    assert torch.allclose(g - g0, want, atol=1e-6)
    for bad in ({"hinge_on": "group"}, {"kl": "k2"}):
        with pytest.raises(UserError, match=rf"key 'loss\.params\.{next(iter(bad))}': Input"):
            disco_minibatch_stats(LossCfg(name="disco", params=bad))


def test_disco_trainer_gradient_same_for_any_micro_batch_size(smoke_cfg):
    """Second minibatch of a step (the weights moved, the hinge is active): the same gradient
    with micro_batch_size = the minibatch (8 rows) and = one group (4 rows)."""
    from grpo_core.trainer import Trainer

    grads = {}
    for micro in (8, 4):
        t = Trainer(
            smoke_cfg(
                "disco",
                [
                    "train.minibatches=2",
                    f"train.micro_batch_size={micro}",
                    "train.lr=0.05",
                    "train.optimizer=sgd",
                    "loss.params.delta=1.0e-12",
                ],
            ),
            None,
        )
        rec = []
        orig = t._clip_and_step

        def record(orig=orig, rec=rec, t=t):
            rec.append(
                torch.cat([p.grad.flatten() for p in t.model.parameters() if p.grad is not None])
            )
            return orig()

        t._clip_and_step = record
        batch, _ = t.collect(0)
        n = len(batch.rollouts)
        batch.old_logp = t._logprobs_nograd(t.model, batch.rollouts)
        batch.advantages = torch.tensor([1.0, -1.0] * (n // 2))  # every group has both signs
        stats = t.optimize(batch)
        assert len(rec) == 2 and stats["clip_frac"] > 0  # the hinge was active
        assert float(rec[1].norm()) > 0
        grads[micro] = rec
    torch.testing.assert_close(grads[8][0], grads[4][0], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grads[8][1], grads[4][1], rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ 6. TW-GRPO weights the KL


def test_tw_grpo_weights_multiply_policy_and_kl(smoke_cfg, monkeypatch):
    from grpo_core.rollout import Rollouts
    from grpo_core.trainer import Batch, Trainer

    t = Trainer(smoke_cfg("tw_grpo"), None)
    assert t.token_weight_on == "policy_kl"
    logp = torch.full((2, 2), -1.0)
    monkeypatch.setattr(t.policy, "forward_logprobs", lambda *a, **k: (logp, torch.zeros(2, 2)))
    ids = torch.ones(2, 2, dtype=torch.long)
    ro = Rollouts(
        ids,
        torch.ones(2, 2, dtype=torch.long),
        ids,
        torch.ones(2, 2, dtype=torch.long),
        ["stop"] * 2,
        ["a", "b"],
    )
    b = Batch(
        ro,
        [None, None],
        torch.tensor([1.0, 0.0]),
        torch.tensor([1.0, -1.0]),
        None,
        torch.tensor([[-1.5, -1.5], [-1.0, -1.0]]),
    )
    b.group_sizes, b.token_weight = [2], torch.tensor([[2.0, 2.0], [1.0, 1.0]])
    ix = torch.arange(2)
    # ratio 1: policy term -A = [-1, -1] / [1, 1]; k3 KL row 0: d = -0.5,
    # e^-0.5 + 0.5 - 1 = 0.1065307, row 1: 0; beta 0.04; token_mean over 4 tokens
    # policy_kl: (2 (-1 + 0.04 * 0.1065307) * 2 + 1 * 2) / 4 = -0.4957388
    loss, _ = t.micro_loss(b, ix, 2, 4, 1.0)
    assert float(loss) == pytest.approx(-0.4957388, abs=1e-6)
    # the old behaviour (on: policy): ((2 (-1) + 0.04 * 0.1065307) * 2 + 2) / 4 = -0.4978694
    t.token_weight_on = "policy"
    loss, _ = t.micro_loss(b, ix, 2, 4, 1.0)
    assert float(loss) == pytest.approx(-0.4978694, abs=1e-6)


# ------------------------------------------------------------------ 7. KL clamp (verl)


def test_kl_estimators_keep_their_gradient_past_a_log_ratio_of_10():
    # token 0: d = ref - logp = -15 (teacher far below the student); token 1: d = -5
    logp = torch.tensor([-0.1, -0.1], requires_grad=True)
    ref = torch.tensor([-15.1, -5.1])
    k1 = kl_estimate(logp, ref, KLCfg(estimator="k1"))
    assert k1.tolist() == pytest.approx([15.0, 5.0])
    (g1,) = torch.autograd.grad(k1.sum(), logp)
    assert g1.tolist() == pytest.approx([1.0, 1.0])  # before: 0 on token 0 (clamped d)
    k2 = kl_estimate(logp, ref, KLCfg(estimator="k2"))
    assert k2.tolist() == pytest.approx([112.5, 12.5])
    (g2,) = torch.autograd.grad(k2.sum(), logp)
    assert g2.tolist() == pytest.approx([15.0, 5.0])  # d k2 / d logp = -d; before: 0, 5
    # k3: value clamped at 10 after it is computed (verl's low_var_kl): token 0
    # e^-15 + 15 - 1 = 14 -> 10, no gradient; token 1 e^-5 + 4 = 4.006738, gradient
    # 1 - e^-5 = 0.993262
    k3 = kl_estimate(logp, ref, KLCfg(estimator="k3"))
    assert k3.tolist() == pytest.approx([10.0, 4.006738], abs=1e-5)
    (g3,) = torch.autograd.grad(k3.sum(), logp)
    assert g3.tolist() == pytest.approx([0.0, 0.993262], abs=1e-5)


# ------------------------------------------------------------------ 8. batch scale over ranks


def test_batch_scaled_advantages_gather_all_ranks(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(30500 + os.getpid() % 1000),
        str(ROOT / "tests" / "scripts" / "dp_advantages.py"),
        str(tmp_path),
    ]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == 2
    # all rewards [1, 0 | 1, 1]: unbiased std 0.5; rank 0's centred [0.5, -0.5] / 0.5 = [1, -1]
    # (this rank's rows alone: std 0.707107 -> +-0.707107)
    assert r0["grpo_batch"] == pytest.approx([1.0, -1.0])
    assert r1["grpo_batch"] == pytest.approx([0.0, 0.0])
    # REINFORCE++-baseline: a = [0.5, -0.5 | 0, 0], mean 0, unbiased std sqrt(0.5 / 3) =
    # 0.408248 -> [1.224745, -1.224745] (this rank alone: +-0.707107)
    assert r0["rpp"] == pytest.approx([1.224745, -1.224745], abs=1e-5)
    assert r1["rpp"] == pytest.approx([0.0, 0.0])


# ------------------------------------------------------------------ 10. Knapsack RL


def test_knapsack_value_of_no_extra_rollouts_paper_vs_authors_code():
    # p = [0.5, 0.7], G = 3, min_n = 2: budget 6, 2 extra rollouts to place
    # value(n, p) = (1 - p^n - (1-p)^n) p (1-p)^2:
    #   p 0.5: n 2 0.0625, 3 0.09375, 4 0.109375;  p 0.7: n 2 0.02646, 3 0.03969, 4 0.047363
    # paper (k = 0 worth value(min_n)): (2, 0) 0.135835 > (1, 1) 0.13344 > (0, 2) 0.109863
    assert knapsack_allocate([0.5, 0.7], 3, 2) == [4, 2]
    # authors' solve_by_dp (k = 0 worth 0): (1, 1) 0.13344 > (2, 0) 0.109375 > (0, 2) 0.047363
    assert knapsack_allocate([0.5, 0.7], 3, 2, base_value="zero") == [3, 3]
    s = SAMPLERS.get("knapsack")(10, SamplerCfg(name="knapsack", params={"base_value": "zero"}), 0)
    s.rate = {0: 0.5, 1: 0.7}
    assert s.group_sizes([0, 1], 3) == [3, 3]
    with pytest.raises(UserError, match="base_value"):
        SAMPLERS.get("knapsack")(10, SamplerCfg(name="knapsack", params={"base_value": "x"}), 0)
