"""train.prefix_grouper: each group's shared prompt is encoded once and its completions attend
to its KV cache (grpo_core.policy.grouped_sequence_logprobs). Per-token log-probs, entropies
and the gradients w.r.t. every parameter equal the ungrouped pass's (sequence_logprobs)."""

from __future__ import annotations

import pytest
import torch

from grpo_core.policy import (
    CausalLMPolicy,
    grouped_sequence_logprobs,
    prefix_groups,
    sequence_logprobs,
)


def tiny_llama(arch="llama"):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cls = LlamaConfig if arch == "llama" else Qwen2Config
    cfg = cls(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg)


def left_padded_groups(prompts, comp_lens, width_p, width_c, seed=1):
    """Rows of groups: prompt k repeated len(comp_lens[k]) times, left padded to width_p;
    completions of the given lengths, right padded to width_c (pad id 0)."""
    g = torch.Generator().manual_seed(seed)
    pi, pm, ci, cm = [], [], [], []
    for p, lens in zip(prompts, comp_lens):
        for n in lens:
            pad = width_p - len(p)
            pi.append([0] * pad + p)
            pm.append([0] * pad + [1] * len(p))
            ci.append(torch.randint(1, 40, (n,), generator=g).tolist() + [0] * (width_c - n))
            cm.append([1] * n + [0] * (width_c - n))
    return [torch.tensor(x) for x in (pi, pm, ci, cm)]


def test_prefix_groups_are_runs_of_one_prompt():
    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [7, 8, 9], [0, 5, 6]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1]])
    first, gid = prefix_groups(ids, mask)
    # rows 0-1 one prompt, row 2 another, row 3 the first prompt again (a new run)
    assert first == [0, 2, 3]
    assert gid.tolist() == [0, 0, 1, 2]
    # the same ids with another mask are another prompt
    mask2 = mask.clone()
    mask2[1, 0] = 1
    assert prefix_groups(ids, mask2)[0] == [0, 1, 2, 3]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("temperature,extra", [(1.0, True), (0.7, True), (0.7, "dist")])
def test_grouped_logprobs_and_gradients_equal_the_ungrouped_pass(arch, temperature, extra):
    model = tiny_llama(arch)
    # three groups: prompt lengths 5, 3, 6 (width 6: left padding 1, 3, 0), G = 3, 2, 1,
    # completion lengths unequal within the groups (width 5)
    batch = left_padded_groups(
        [[5, 6, 7, 8, 9], [11, 12, 13], [3, 4, 5, 6, 7, 8]], [[5, 2, 1], [3, 5], [4]], 6, 5
    )
    cm = batch[3].float()
    w = torch.randn(cm.shape, generator=torch.Generator().manual_seed(2))

    def run(fn):
        model.zero_grad(set_to_none=True)
        lp, ex = fn(model, *batch, temperature, extra)
        second = ex.exp().mul(ex).sum(-1) if extra == "dist" else ex  # (a function of ex)
        ((lp * w * cm).sum() + (second * cm).sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return lp.detach(), ex.detach(), grads

    lp0, ex0, g0 = run(sequence_logprobs)
    lp1, ex1, g1 = run(grouped_sequence_logprobs)
    m = batch[3].bool()
    torch.testing.assert_close(lp1[m], lp0[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(ex1[m], ex0[m], atol=1e-5, rtol=0)
    assert g0.keys() == g1.keys() and len(g0) == len(list(model.parameters()))
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=0, msg=n)


def test_one_completion_token_and_the_policy_switch():
    """C = 1: only the prompt pass runs. The policy's no-grad micro-batches (3 rows, splitting
    a group) give the same log-probs grouped and ungrouped."""
    model = tiny_llama()
    b1 = left_padded_groups([[5, 6, 7], [9, 8]], [[1, 1], [1]], 3, 1)
    lp0, _ = sequence_logprobs(model, *b1)
    lp1, _ = grouped_sequence_logprobs(model, *b1)
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=0)

    from grpo_core.rollout import Rollouts

    pi, pm, ci, cm = left_padded_groups([[5, 6, 7, 8], [9, 8]], [[3, 1, 2, 4], [2, 4]], 4, 4)
    ro = Rollouts(pi, pm, ci, cm, ["stop"] * 6, [""] * 6)
    out = {}
    for on in (False, True):
        pol = CausalLMPolicy(model, None, 0.8, micro_batch_size=3, prefix_grouper=on)
        assert pol.seq_logprobs is (grouped_sequence_logprobs if on else sequence_logprobs)
        out[on] = pol.logprobs(ro, {"logp", "entropy"})
    for k in ("logp", "entropy"):
        torch.testing.assert_close(out[True][k] * cm, out[False][k] * cm, atol=1e-5, rtol=0)


# rewards that vary within the smoke model's groups (its correctness is 0 everywhere at the
# start, which gives zero advantages and no update)
VARYING = "rewards=[{name: format}, {name: concise_length}]"


def test_smoke_run_with_the_grouper_has_grpos_numbers(smoke_cfg):
    """Two smoke steps of the prefix_grouper reproduction: the same rewards, loss, KL and weights
    as without (the policy's gradient pass and the reference's no-grad pass both grouped)."""
    from grpo_core.trainer import TIMING_FIELDS, Trainer

    rows, weights = {}, {}
    for on, repro in (("false", "grpo"), ("true", "prefix_grouper")):
        t = Trainer(smoke_cfg(repro, ["train.steps=2", VARYING]))
        assert t.cfg.train.prefix_grouper is (on == "true")
        t.train_step(0)
        t.step = 1
        rows[on] = t.train_step(1)  # (step 0's KL is 0: the policy is the reference)
        weights[on] = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
    a, b = rows["false"], rows["true"]
    assert a.keys() == b.keys() and b["kl"] > 0 and b["grad_norm"] > 0
    for k in a:
        if k not in TIMING_FIELDS:
            assert b[k] == pytest.approx(a[k], abs=1e-5, rel=1e-5, nan_ok=True), k
    for k in weights["false"]:
        torch.testing.assert_close(weights["true"][k], weights["false"][k], atol=1e-5, rtol=0)
