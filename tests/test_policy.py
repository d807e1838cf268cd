"""The policy interface (grpo_core.policy.CausalLMPolicy): logprobs(rollouts, need, grad, model)
is the one log-prob computation, micro-batched without gradient, whole with it."""

import pytest
import torch

from grpo_core.config import TinyModelCfg
from grpo_core.models import build_char_tokenizer, build_tiny_model
from grpo_core.policy import CausalLMPolicy, sequence_logprobs
from grpo_core.rollout import Rollouts, left_pad


def _setup():
    tok = build_char_tokenizer()
    cfg = TinyModelCfg(
        hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=2
    )
    model = build_tiny_model(cfg, tok).eval()
    prompts = [tok.encode(t, add_special_tokens=False) for t in ("1+2=", "13+4=", "7=")]
    comps = [tok.encode(t, add_special_tokens=False) for t in ("3", "17", "7")]
    p_ids, p_mask = left_pad(prompts, tok.pad_token_id)
    c_ids = torch.full((3, 2), tok.pad_token_id)
    c_mask = torch.zeros((3, 2), dtype=torch.long)
    for i, c in enumerate(comps):
        c_ids[i, : len(c)] = torch.tensor(c)
        c_mask[i, : len(c)] = 1
    ro = Rollouts(p_ids, p_mask, c_ids, c_mask, ["stop"] * 3, ["3", "17", "7"])
    return tok, model, ro


def test_logprobs_match_one_pass_and_micro_batching():
    tok, model, ro = _setup()
    pol = CausalLMPolicy(model, tok, temperature=0.7, micro_batch_size=2)  # 2 + 1 rows
    out = pol.logprobs(ro, {"logp", "entropy"})
    with torch.no_grad():
        lp, ent = sequence_logprobs(
            model,
            ro.prompt_ids,
            ro.prompt_mask,
            ro.completion_ids,
            ro.completion_mask,
            0.7,
            with_entropy=True,
        )
    m = ro.completion_mask.bool()
    assert torch.allclose(out["logp"][m], lp[m], atol=1e-6)
    assert torch.allclose(out["entropy"][m], ent[m], atol=1e-6)
    assert not out["logp"].requires_grad
    d = pol.logprobs(ro, {"dist"})["dist"]
    assert d.shape == (3, 2, model.config.vocab_size)
    # the log-distribution at the sampled token is the token's log-prob
    got = d.gather(-1, ro.completion_ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(got[m], lp[m], atol=1e-5)
    g = pol.logprobs(ro, {"logp"}, grad=True)["logp"]
    assert g.requires_grad
    # another model of the same kind (the reference) through the same computation
    other = build_tiny_model(
        TinyModelCfg(
            hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=2
        ),
        tok,
        seed=1,
    ).eval()
    assert not torch.allclose(pol.logprobs(ro, model=other)["logp"][m], lp[m])
    with pytest.raises(ValueError, match="unknown needs"):
        pol.logprobs(ro, {"logits"})
