"""Components declare what they read from the no-grad passes (registry ``needs=``); the trainer
computes the union once: one no-grad log-prob pass per model per step."""

from __future__ import annotations

import pytest

from grpo_core.advantages import ADVANTAGES
from grpo_core.errors import UserError
from grpo_core.losses import TOKEN_WEIGHTS
from grpo_core.registry import Registry
from grpo_core.rewards import REWARDS


def test_declared_needs():
    assert ADVANTAGES.needs_of("grpo") == set()
    assert ADVANTAGES.needs_of("gtpo") == {"entropy"}
    assert ADVANTAGES.needs_of("xrpo_novelty") == {"policy"}
    # a need that depends on the params: SEED-GRPO's likelihood-weighted semantic entropy
    assert ADVANTAGES.needs_of("seed_grpo", {"mass": "likelihood"}) == {"policy"}
    assert ADVANTAGES.needs_of("seed_grpo", {"mass": "count"}) == set()
    assert REWARDS.needs_of("unlikeliness") == {"policy"}
    assert REWARDS.needs_of("care_consistency") == {"ref"}
    assert REWARDS.needs_of("correctness") == set()
    assert TOKEN_WEIGHTS.needs_of("tw_grpo") == {"policy", "dist"}
    with pytest.raises(ValueError, match="unknown needs"):
        Registry("x").register("y", needs={"logits"})


@pytest.mark.parametrize(
    "repro,extra,want",
    [
        # GTPO: entropies for the advantage filter and log-probs for the conflict weights come
        # from one pass (they were two); on-policy, no old pass; no reference (beta 0, KL not
        # logged)
        ("gtpo", ["train.log_kl=false"], {"policy": 1}),
        # the same off-policy (mu 2: old log-probs needed too) and with a KL reference
        ("gtpo", ["train.mu=2", "loss.kl.beta=0.04"], {"policy": 1, "ref": 1}),
        # GRPO on-policy with KL: only the reference runs a no-grad pass
        ("grpo", [], {"ref": 1}),
        # unlikeliness reads the policy's log-probs in its reward (one generation round here);
        # its mu 2 needs the old log-probs of the same rollouts: the reward's pass serves both
        ("unlikeliness", ["sampler.name=uniform", "sampler.params={}"], {"policy": 1, "ref": 1}),
    ],
)
def test_one_no_grad_pass_per_model_per_step(smoke_cfg, repro, extra, want):
    from grpo_core.trainer import Trainer

    t = Trainer(smoke_cfg(repro, ["train.steps=1", *extra]), None)
    t.train_step(0)
    assert t.passes == want


def test_reward_needs_cost_one_pass_per_generation_round(smoke_cfg):
    """With dynamic sampling the rewards of every round read the policy: one pass per round
    (the rounds' rollouts differ), no more."""
    from grpo_core.trainer import Trainer

    t = Trainer(smoke_cfg("unlikeliness", ["train.steps=1", "sampler.max_rounds=3"]), None)
    stats = t.train_step(0)
    # + 1: mu 2 needs the old log-probs of the kept batch, which is not one whole round here
    # (a batch that is one round with every group kept reuses that round's pass)
    one_round = stats["gen_rounds"] == 1 and stats["frac_zero_std_sampled"] == 0
    kept = "loss" in stats and stats.get("n_train_seqs", 0) > 0
    want = stats["gen_rounds"] + (0 if one_round or not kept else 1)
    assert t.passes.get("policy") == want


def test_an_undeclared_read_is_a_clear_error(smoke_cfg):
    from grpo_core.trainer import Trainer

    t = Trainer(smoke_cfg("grpo", ["train.steps=1"]), None)
    batch, _ = t.collect(0)
    ctx = t._group_context(
        batch.rollouts, batch.problems, batch.group_sizes, batch.indices, 0, passes={}
    )
    with pytest.raises(UserError, match=r"declare needs=\{'policy'\}"):
        ctx.logprobs("policy")
    with pytest.raises(UserError, match="without declaring it"):
        ctx.logprobs_rows("entropy", [0, 1])
