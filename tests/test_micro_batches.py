"""train.micro_batches: by_length. The trimmed log-prob pass (grpo_core.policy.trimmed) against the
untrimmed one on rows with left-padded prompts and right-padded completions (eager attention:
bitwise; sdpa and the prefix grouper: within 1e-5), the fill of the dropped columns, the
longest-first order on hand-written masks, one SGD step of the trainer in both orders (same loss
and weights within 1e-6, narrower passes), and whole groups kept together for the losses that need them."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from grpo_core import losses, policy
from grpo_core.rollout import Rollouts
from tests.test_episodes import guess_number
from tests.test_prefix_grouper import tiny_llama

PLAIN = policy.sequence_logprobs


def _model(attn: str):
    m = tiny_llama()
    m.set_attn_implementation(attn)
    return m.eval()


def _rows():
    """4 rows: prompts of 3-5 tokens left-padded to 7, completions of 2-6 tokens right-padded
    to 9 (so 2 leading and 3 trailing columns are padding in every row)."""
    g = torch.Generator().manual_seed(1)
    p_len, c_len = [3, 5, 4, 5], [2, 6, 4, 5]
    pm = torch.stack([torch.arange(7) >= 7 - n for n in p_len]).long()
    cm = torch.stack([torch.arange(9) < n for n in c_len]).long()
    pi = torch.randint(1, 40, (4, 7), generator=g) * pm
    ci = torch.randint(1, 40, (4, 9), generator=g) * cm
    return pi, pm, ci, cm


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("extra", [True, "dist"])
def test_the_trimmed_pass_matches_the_whole_width(attn, extra):
    m = _model(attn)
    pi, pm, ci, cm = _rows()
    with torch.no_grad():
        lp, ex = policy.sequence_logprobs(m, pi, pm, ci, cm, 1.3, with_entropy=extra)
        lp2, ex2 = policy.trimmed(policy.sequence_logprobs)(m, pi, pm, ci, cm, 1.3, extra)
    assert lp2.shape == lp.shape and ex2.shape == ex.shape
    keep = cm.bool()
    if attn == "eager":
        # the same keys and the same sums; bitwise on AVX2, but on AVX512 the matmuls of
        # another width round differently (2.4e-7 measured 2026-12-04): float32 rounding
        assert torch.allclose(lp[keep], lp2[keep], atol=1e-6, rtol=0)
        assert torch.allclose(ex[keep], ex2[keep], atol=1e-6, rtol=0)
    else:
        assert torch.allclose(lp[keep], lp2[keep], atol=1e-5, rtol=0)
        assert torch.allclose(ex[keep], ex2[keep], atol=1e-5, rtol=0)
    # the 3 trailing columns are padding in every row: log-prob 0, entropy 0 / uniform
    assert torch.equal(lp2[:, 6:], torch.zeros(4, 3))
    if extra == "dist":
        assert torch.allclose(ex2[:, 6:], torch.full((4, 3, 40), -math.log(40)))
        assert torch.allclose(ex2[:, 6:].exp().sum(-1), torch.ones(4, 3))
    else:
        assert torch.equal(ex2[:, 6:], torch.zeros(4, 3))


def test_the_trimmed_pass_carries_the_same_gradient():
    m = _model("sdpa")
    pi, pm, ci, cm = _rows()
    grads = []
    for fn in (policy.sequence_logprobs, policy.trimmed(policy.sequence_logprobs)):
        m.zero_grad()
        lp, _ = fn(m, pi, pm, ci, cm, 1.0, False)
        (lp * cm).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-5)


def test_the_trimmed_prefix_grouper_matches_the_whole_width():
    m = _model("sdpa")
    pi, pm, ci, cm = _rows()
    pi[1], pm[1] = pi[0], pm[0]  # rows 0 and 1 share a prompt
    with torch.no_grad():
        lp, _ = policy.grouped_sequence_logprobs(m, pi, pm, ci, cm)
        lp2, _ = policy.trimmed(policy.grouped_sequence_logprobs)(m, pi, pm, ci, cm)
    keep = cm.bool()
    assert torch.allclose(lp[keep], lp2[keep], atol=1e-5, rtol=0)
    assert torch.equal(lp2[:, 6:], torch.zeros(4, 3))


def test_nothing_to_trim_is_the_plain_pass():
    m = _model("sdpa")
    pi, pm, ci, cm = _rows()
    pm[:, 0], cm[:, -1] = 1, 1  # a token in the first and the last column
    with torch.no_grad():
        lp, _ = policy.sequence_logprobs(m, pi, pm, ci, cm)
        lp2, _ = policy.trimmed(policy.sequence_logprobs)(m, pi, pm, ci, cm)
    assert torch.equal(lp, lp2)


def test_longest_first_orders_rows_by_token_count():
    pm = torch.tensor([[0, 1], [1, 1], [0, 1], [1, 1]])
    cm = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 0]])  # totals 2, 4, 4, 4
    ids = torch.zeros(4, 3, dtype=torch.long)
    ro = Rollouts(
        prompt_ids=torch.zeros(4, 2, dtype=torch.long),
        prompt_mask=pm,
        completion_ids=ids,
        completion_mask=cm,
        finish_reasons=["stop"] * 4,
        texts=[""] * 4,
    )
    assert policy.longest_first(ro, torch.tensor([0, 1, 2, 3])).tolist() == [1, 2, 3, 0]
    assert policy.longest_first(ro, torch.tensor([3, 0, 2])).tolist() == [3, 2, 0]


def _train_one_step(smoke_cfg, tmp_path, monkeypatch, order):
    """One SGD step of grpo on a multi-turn env (episodes of 1-4 turns), micro-batches of 3;
    the widths of the gradient passes as the model sees them."""
    from grpo_core.trainer import Trainer

    widths = []

    def spy(model, pi, pm, ci, cm, *a, **k):
        if torch.is_grad_enabled():
            widths.append(pi.shape[1] + ci.shape[1])
        return PLAIN(model, pi, pm, ci, cm, *a, **k)

    monkeypatch.setattr(policy, "sequence_logprobs", spy)
    cfg = smoke_cfg(
        "grpo",
        [
            *guess_number(hi=6, max_turns=4),
            "train.steps=1",
            "train.optimizer=sgd",
            "train.lr=0.05",
            "train.micro_batch_size=3",
            f"train.micro_batches={order}",
        ],
    )
    tr = Trainer(cfg, tmp_path / order)
    stats = tr.train_step(0)
    return stats, torch.cat([p.detach().flatten() for p in tr.model.parameters()]), widths


def test_by_length_trains_the_same_step(smoke_cfg, tmp_path, monkeypatch):
    s_in, p_in, w_in = _train_one_step(smoke_cfg, tmp_path, monkeypatch, "in_order")
    s_len, p_len, w_len = _train_one_step(smoke_cfg, tmp_path, monkeypatch, "by_length")
    assert s_in["reward_mean"] == s_len["reward_mean"]  # the same episodes
    assert math.isclose(s_in["loss"], s_len["loss"], rel_tol=0, abs_tol=1e-6)
    assert torch.allclose(p_in, p_len, atol=1e-6, rtol=0)
    # in order every micro-batch runs at the batch's width; by length, narrower ones
    assert len(w_in) == len(w_len) > 1 and len(set(w_in)) == 1
    assert max(w_len) <= w_in[0] and sum(w_len) < sum(w_in)
    assert w_len == sorted(w_len, reverse=True)  # longest first


def test_whole_group_losses_keep_their_groups_together():
    # 3 groups of 2 rows: token counts [2, 5 | 3, 3 | 6, 1]; group maxima 5, 3, 6
    cm = torch.tensor([[1] * n + [0] * (6 - n) for n in (2, 5, 3, 3, 6, 1)])
    ro = Rollouts(
        prompt_ids=torch.zeros(6, 0, dtype=torch.long),
        prompt_mask=torch.zeros(6, 0, dtype=torch.long),
        completion_ids=torch.zeros(6, 6, dtype=torch.long),
        completion_mask=cm,
        finish_reasons=["stop"] * 6,
        texts=[""] * 6,
    )
    gid = torch.tensor([0, 0, 1, 1, 2, 2])
    rows = torch.arange(6)
    assert policy.longest_first(ro, rows).tolist() == [4, 1, 2, 3, 0, 5]
    assert policy.longest_first(ro, rows, gid).tolist() == [4, 5, 0, 1, 2, 3]
    # a minibatch's rows in another order: its groups still come out whole
    assert policy.longest_first(ro, torch.tensor([3, 2, 5, 4]), gid).tolist() == [5, 4, 3, 2]


def test_whole_group_losses_load_with_by_length_and_the_set_is_complete():
    from grpo_core.config import load_config

    cfg = load_config("grpo", "smoke", ["train.micro_batches=by_length", "loss.name=disco"])
    assert cfg.train.micro_batches == "by_length"
    # the set names exactly the registered losses whose code asks for whole groups
    calls = {
        name
        for name in losses.POLICY_LOSSES.names()
        if "_whole_groups(" in inspect.getsource(losses.POLICY_LOSSES.get(name))
    }
    assert calls == losses.WHOLE_GROUP_LOSSES


def test_a_whole_group_loss_trains_with_by_length(smoke_cfg, tmp_path):
    from grpo_core.trainer import Trainer

    g = smoke_cfg("grpo").rollout.group_size
    cfg = smoke_cfg(
        "grpo",
        [
            "loss.name=disco",
            "train.steps=1",
            "train.micro_batches=by_length",
            f"train.micro_batch_size={g}",
        ],
    )
    # more than one micro-batch (a group each): the order is used
    assert cfg.rollout.prompts_per_step * g > g and cfg.train.minibatches == 1
    stats = Trainer(cfg, tmp_path / "run").train_step(0)
    assert math.isfinite(stats["loss"])


@pytest.mark.parametrize("need", [("logp",), ("logp", "entropy")])
def test_the_no_grad_passes_by_length_come_back_in_batch_order(need):
    m = _model("sdpa")
    pi, pm, ci, cm = _rows()
    ro = Rollouts(
        prompt_ids=pi,
        prompt_mask=pm,
        completion_ids=ci,
        completion_mask=cm,
        finish_reasons=["stop"] * 4,
        texts=[""] * 4,
    )
    plain = policy.CausalLMPolicy(m, None, 1.0, micro_batch_size=2)
    by_len = policy.CausalLMPolicy(m, None, 1.0, micro_batch_size=2, trim=True)
    seen = []
    inner = by_len.seq_logprobs
    by_len.seq_logprobs = lambda m_, a, b, c, d, *r, **k: (
        seen.append(int(d.sum(1).max())) or inner(m_, a, b, c, d, *r, **k)
    )
    a, b = plain.logprobs(ro, need), by_len.logprobs(ro, need)
    keep = cm.bool()
    for k in a:
        assert torch.allclose(a[k][keep], b[k][keep], atol=1e-5, rtol=0)
    assert seen == [6, 4]  # rows 1 and 3 (6 and 5 completion tokens) first, then 2 and 0
