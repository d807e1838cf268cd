"""The hf_static engine (grpo_core.decode): its decode loop against the hf engine's generate on
tiny models built from a config (greedy and sampled completions token-identical under the same
seed, stop strings, several chunks), compaction and the shared prefill (same tokens, fewer rows
per step), the returned sampler log-probs against the model's own forward, and the sampling
math on hand-computed logits."""

import math
from types import SimpleNamespace

import pytest
import torch

from grpo_core.decode import check_supported, sample_next, top_p_filter
from grpo_core.errors import UserError
from grpo_core.rollout import ENGINES, HFEngine, HFStaticEngine, SamplingParams

PROMPTS = ["1+2=", "hello world, 33", "x", "12345678+9=", "ab", "7*8=?"]


def _tiny(arch="llama", attn=None):
    from grpo_core.models import build_char_tokenizer, build_tiny_model
    from grpo_core.schema import TinyModelCfg

    tok = build_char_tokenizer()
    cfg = TinyModelCfg(
        arch=arch, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2
    )
    model = build_tiny_model(cfg, tok, seed=0).eval()
    if attn is not None:
        model.set_attn_implementation(attn)
    return model, tok


@torch.no_grad()
def _rig_eos(model, tok, prompts, max_new=10):
    """Raise the EOS row of the LM head along the mean final hidden state until greedy decoding
    stops some rows early and not others (a random model rarely emits EOS)."""
    from grpo_core.rollout import left_pad

    ids, mask = left_pad(prompts, tok.pad_token_id)
    h = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
    d = h.mean(0) / h.mean(0).norm()
    w, eos = model.lm_head.weight, tok.eos_token_id
    base = w[eos].clone()
    eng = HFEngine(model, tok, cfg=None, model_path=None)
    for beta in [0.05 * 1.15**i for i in range(80)]:
        w[eos] = base + beta * d
        ro = eng.generate(prompts, SamplingParams(temperature=0, max_new_tokens=max_new))
        lens = set(ro.completion_mask.sum(-1).tolist())
        if ro.finish_reasons.count("stop") >= len(ro) // 3 and len(lens) >= 3:
            return
    raise AssertionError("could not make greedy decoding stop early")


@pytest.fixture(scope="module")
def setup():
    model, tok = _tiny()
    # groups of the same prompt next to each other, as the trainer passes them
    prompts = [tok.encode(s) for s in PROMPTS for _ in range(3)]
    _rig_eos(model, tok, prompts)
    return model, tok, prompts


def _engines(model, tok, batch_size=512, cfg=None):
    return (
        HFEngine(model, tok, cfg=cfg, model_path=None, batch_size=batch_size),
        HFStaticEngine(model, tok, cfg=cfg, model_path=None, batch_size=batch_size),
    )


def _same(a, b):
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert torch.equal(a.prompt_ids, b.prompt_ids) and torch.equal(a.prompt_mask, b.prompt_mask)
    assert a.finish_reasons == b.finish_reasons and a.texts == b.texts


def test_registered_and_logprobs_off_by_default():
    from grpo_core.schema import RolloutCfg

    assert "hf_static" in ENGINES.names() and ENGINES.get("hf_static") is HFStaticEngine
    assert RolloutCfg().sampler_logprobs is False
    assert RolloutCfg().engine == "hf_static"  # the default engine


def test_greedy_is_token_identical_to_generate(setup):
    model, tok, prompts = setup
    hf, new = _engines(model, tok)
    p = SamplingParams(temperature=0, max_new_tokens=10)
    a, b = hf.generate(prompts, p), new.generate(prompts, p)
    _same(a, b)
    # the batch has different prompt lengths, EOS hits at different steps and rows that run out
    assert len({len(x) for x in prompts}) >= 4
    assert "stop" in a.finish_reasons and "length" in a.finish_reasons
    assert len(set(a.completion_mask.sum(-1).tolist())) >= 3
    assert b.sampler_logp is None  # not asked for


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (1.3, 0.6)])
def test_sampled_is_identical_to_generate_under_the_same_seed(setup, temperature, top_p):
    """The loop draws generate's random numbers (Exp(1) [B, V] per step while a row runs) in
    generate's order, so the sampled completions are the same tokens, also across chunks."""
    model, tok, prompts = setup
    for bs in (512, 7):  # one chunk; several chunks (the generator carries on between them)
        hf, new = _engines(model, tok, batch_size=bs)
        for seed in (0, 5):
            p = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=10, seed=seed)
            _same(hf.generate(prompts, p), new.generate(prompts, p))


def test_stop_strings_as_generate(setup):
    model, tok, prompts = setup
    hf, new = _engines(model, tok)
    # the characters this model samples most often, as stop strings
    p0 = SamplingParams(temperature=1.0, max_new_tokens=10, seed=2)
    ro = hf.generate(prompts, p0)
    counts = torch.bincount(ro.completion_ids[ro.completion_mask.bool()], minlength=len(tok))
    counts[tok.eos_token_id] = 0
    stops = [tok.decode([int(i)]) for i in counts.topk(2).indices]
    p = SamplingParams(temperature=1.0, max_new_tokens=10, seed=2, stop=stops)
    a, b = hf.generate(prompts, p), new.generate(prompts, p)
    _same(a, b)
    assert any(any(s in t for s in stops) for t in ro.texts)  # the stop strings occur
    assert sum(r == "stop" for r in a.finish_reasons) > ro.finish_reasons.count("stop")


def _count_rows(model):
    """Rows per forward of the model: a list [prefill rows, step 1 rows, ...]."""
    seen = []

    def hook(mod, args, kwargs):
        seen.append(kwargs["input_ids"].shape)

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_compaction_gives_the_same_tokens_and_drops_finished_rows(setup, temperature):
    model, tok, prompts = setup
    _, new = _engines(model, tok)
    p = SamplingParams(temperature=temperature, max_new_tokens=10, seed=1)
    seen, h = _count_rows(model)
    try:
        a = new.generate(prompts, p)
        steps_on = [s[0] for s in seen[1:]]
        seen.clear()
        new.compact = False
        b = new.generate(prompts, p)
        steps_off = [s[0] for s in seen[1:]]
    finally:
        h.remove()
        new.compact = True
    _same(a, b)
    lens = a.completion_mask.sum(-1)
    assert (lens < 10).any()
    # with compaction each row runs one step per token it still has to sample: len - 1 forwards
    # (the last token needs none); without it every row runs every step
    assert sum(steps_on) == int((lens - 1).sum())
    assert steps_on == sorted(steps_on, reverse=True) and steps_on[-1] < len(prompts)
    assert steps_off == [len(prompts)] * len(steps_off)


def test_shared_prefill_runs_each_distinct_prompt_once(setup):
    model, tok, prompts = setup
    _, new = _engines(model, tok)
    p = SamplingParams(temperature=1.0, max_new_tokens=6, seed=4)
    seen, h = _count_rows(model)
    try:
        a = new.generate(prompts, p)
        prefill_on = seen[0]
        seen.clear()
        new.dedupe = False
        b = new.generate(prompts, p)
        prefill_off = seen[0]
    finally:
        h.remove()
        new.dedupe = True
    _same(a, b)
    assert prefill_on[0] == len(PROMPTS) and prefill_off[0] == len(prompts)
    # the G rows of a prompt still sample different completions (their own draws)
    assert len({tuple(r) for r in a.completion_ids[:3].tolist()}) > 1


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.8, 0.9), (0.0, 1.0)])
def test_sampler_logp_equals_the_models_forward_logprobs(setup, temperature, top_p):
    from grpo_core.policy import sequence_logprobs

    model, tok, prompts = setup
    cfg = SimpleNamespace(rollout=SimpleNamespace(sampler_logprobs=True))
    _, new = _engines(model, tok, cfg=cfg)
    ro = new.generate(prompts, SamplingParams(temperature, top_p, max_new_tokens=10, seed=3))
    assert ro.sampler_logp is not None and ro.sampler_logp.shape == ro.completion_ids.shape
    with torch.no_grad():
        lp, _ = sequence_logprobs(
            model,
            ro.prompt_ids,
            ro.prompt_mask,
            ro.completion_ids,
            ro.completion_mask,
            temperature=temperature or 1.0,
        )
    m = ro.completion_mask.bool()
    assert torch.allclose(ro.sampler_logp[m], lp[m], atol=1e-5, rtol=0)
    assert (ro.sampler_logp[~m] == 0).all()
    assert (ro.sampler_logp[m] < 0).all()


def test_top_p_filter_hand_computed():
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    # ascending cumulative probs 0.05, 0.20, 0.50, 1.0: drop those <= 1 - top_p
    kept = lambda tp: torch.isfinite(top_p_filter(logits, tp))[0].tolist()  # noqa: E731
    assert kept(0.8) == [True, True, False, False]  # 1 - 0.8 = 0.2 >= 0.20: 0.15 goes too
    assert kept(0.85) == [True, True, True, False]
    assert kept(0.3) == [True, False, False, False]
    assert kept(0.01) == [True, False, False, False]  # the top token always stays
    assert kept(1.0) == [True] * 4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 50, generator=g) * 3
    for tp in (0.3, 0.75, 0.95):
        assert torch.equal(top_p_filter(x, tp), TopPLogitsWarper(tp)(None, x))


def test_sample_next_logprobs_and_greedy_hand_computed():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    # temperature 0.5: scores [4, 2, 0] and [0, 6, 2]; noise that picks token 2 and token 1
    noise = torch.tensor([[1e3, 1e3, 1e-3], [1.0, 1.0, 1.0]])
    tok, lp = sample_next(logits, 0.5, 1.0, noise)
    assert tok.tolist() == [2, 1]
    want = [0 - math.log(math.e**4 + math.e**2 + 1), 6 - math.log(1 + math.e**6 + math.e**2)]
    assert torch.allclose(lp, torch.tensor(want), atol=1e-6)
    # greedy: argmax, log-probs at temperature 1, no noise needed
    tok, lp = sample_next(logits, 0.0, 1.0, None)
    assert tok.tolist() == [0, 1]
    assert torch.allclose(lp, torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1))
    # the log-prob is the full distribution's (before top-p), what the trainer's pass computes
    tok, lp = sample_next(logits, 1.0, 0.5, torch.ones(2, 3))
    assert tok.tolist() == [0, 1]
    assert torch.allclose(lp, torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1))


def test_exponential_argmax_is_torch_multinomial():
    """argmax(probs / q), q ~ Exp(1) drawn as an [N, V] tensor, is what torch.multinomial(probs,
    1) returns under the same seed (and leaves the generator in the same state)."""
    probs = torch.softmax(torch.randn(64, 37, generator=torch.Generator().manual_seed(1)), -1)
    for seed in range(3):
        torch.manual_seed(seed)
        a = torch.multinomial(probs, 1).squeeze(1)
        after_a = torch.rand(1)
        torch.manual_seed(seed)
        b = torch.argmax(probs / torch.empty_like(probs).exponential_(1), -1)
        assert torch.equal(a, b) and torch.equal(after_a, torch.rand(1))


def test_sampling_frequencies_follow_temperature_and_top_p():
    torch.manual_seed(0)
    n = 20000
    logits = torch.tensor([0.5, 0.3, 0.2]).log().expand(n, 3)
    tok, _ = sample_next(logits, 1.0, 1.0, torch.empty(n, 3).exponential_(1))
    freq = torch.bincount(tok, minlength=3).float() / n
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.015)
    # top_p 0.7: ascending cum 0.2, 0.5, 1.0; 0.2 <= 0.3 is dropped -> [0.625, 0.375, 0]
    tok, _ = sample_next(logits, 1.0, 0.7, torch.empty(n, 3).exponential_(1))
    freq = torch.bincount(tok, minlength=3).float() / n
    assert freq[2] == 0 and torch.allclose(freq[:2], torch.tensor([0.625, 0.375]), atol=0.015)
    # temperature 2: probs proportional to sqrt([0.5, 0.3, 0.2])
    tok, _ = sample_next(logits, 2.0, 1.0, torch.empty(n, 3).exponential_(1))
    freq = torch.bincount(tok, minlength=3).float() / n
    want = torch.tensor([0.5, 0.3, 0.2]).sqrt()
    assert torch.allclose(freq, want / want.sum(), atol=0.015)


def test_fixed_seed_is_reproducible_and_seeds_differ(setup):
    model, tok, prompts = setup
    _, new = _engines(model, tok)
    p = SamplingParams(temperature=1.0, max_new_tokens=8, seed=9)
    a, b = new.generate(prompts, p), new.generate(prompts, p)
    _same(a, b)
    c = new.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8, seed=10))
    assert not torch.equal(a.completion_ids, c.completion_ids)


@pytest.mark.parametrize("arch,attn", [("qwen2", "sdpa"), ("llama", "eager")])
def test_other_arch_and_eager_attention_match_generate(arch, attn):
    model, tok = _tiny(arch, attn)
    assert model.config._attn_implementation == attn
    prompts = [tok.encode(s) for s in PROMPTS for _ in range(2)]
    _rig_eos(model, tok, prompts)
    hf, new = _engines(model, tok)
    for t in (0.0, 0.9):
        p = SamplingParams(temperature=t, top_p=0.95, max_new_tokens=10, seed=6)
        _same(hf.generate(prompts, p), new.generate(prompts, p))


def test_media_rows_go_through_generate(setup, monkeypatch):
    model, tok, prompts = setup
    _, new = _engines(model, tok)
    calls = []
    monkeypatch.setattr(HFEngine, "generate", lambda self, pr, pa, media=None: calls.append(media))
    new.generate(prompts[:2], SamplingParams(), media=[{"pixel_values_videos": 0}, None])
    assert len(calls) == 1
    ro = new.generate(prompts[:2], SamplingParams(max_new_tokens=3), media=[None, None])
    assert len(calls) == 1 and ro.media == [None, None]  # a text batch: the loop


def test_sliding_window_models_fall_back_to_generate(monkeypatch):
    """A model with sliding-window layers samples through generate (the default engine runs
    every model); asked for sampler log-probs it is refused with the fix."""
    model, tok = _tiny("qwen2")
    model.config.layer_types = ["sliding_attention"] * model.config.num_hidden_layers
    with pytest.raises(UserError, match="hf_static.*full-attention"):
        check_supported(model)
    calls = []
    monkeypatch.setattr(HFEngine, "generate", lambda self, pr, pa, media=None: calls.append(1))
    new = HFStaticEngine(model, tok, cfg=None, model_path=None)
    new.generate([[1, 2, 3]], SamplingParams(max_new_tokens=2))
    assert calls == [1]
    new.return_logprobs = True
    with pytest.raises(UserError, match="sliding_attention"):
        new.generate([[1, 2, 3]], SamplingParams(max_new_tokens=2))


@pytest.mark.slow
def test_training_with_hf_static_logs_the_hf_engines_numbers(smoke_cfg, tmp_path):
    """A drop-in: 3 grpo steps of the smoke profile log the same metrics (rewards, losses, KL,
    grad norms; all but the timings) with rollout.engine=hf_static as with hf (sampler log-probs
    off: the same trainer path)."""
    import json

    from grpo_core.trainer import Trainer

    rows = {}
    for eng in ("hf", "hf_static"):
        cfg = smoke_cfg("grpo", ["train.steps=3", f"rollout.engine={eng}"])
        Trainer(cfg, tmp_path / eng).train(progress=False)
        text = (tmp_path / eng / "metrics.jsonl").read_text().splitlines()
        rows[eng] = [json.loads(x) for x in text]
    assert len(rows["hf"]) == len(rows["hf_static"]) == 3
    timing = {"rollout_s", "logprob_s", "train_s", "tokens_per_s", "step_s", "wall_cum_s"}
    for a, b in zip(rows["hf"], rows["hf_static"]):
        assert {"reward_mean", "loss", "kl", "grad_norm", "completion_len_mean"} <= set(a)
        assert set(a) == set(b)
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }
        assert "mismatch_kl" not in b  # no sampler log-probs: the on-policy path
    # opted in: the trainer's separate-engine path, whose mismatch to the sampler is ~0
    cfg = smoke_cfg(
        "grpo", ["train.steps=2", "rollout.engine=hf_static", "rollout.sampler_logprobs=true"]
    )
    Trainer(cfg, tmp_path / "slp").train(progress=False)
    slp = [json.loads(x) for x in (tmp_path / "slp" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["mismatch_kl"] < 1e-6 for r in slp)
    assert all(abs(r["mismatch_ratio_max"] - 1) < 1e-4 for r in slp)
    assert slp[0]["reward_mean"] == rows["hf"][0]["reward_mean"]  # the same samples


def test_a_lora_wrapped_policy_matches_generate():
    pytest.importorskip("peft")
    from grpo_core.models import apply_lora
    from grpo_core.schema import LoraCfg

    model, tok = _tiny()
    prompts = [tok.encode(s) for s in PROMPTS for _ in range(2)]
    _rig_eos(model, tok, prompts)
    model = apply_lora(model, LoraCfg(r=4))
    with torch.no_grad():  # a non-zero adapter (B starts at zero)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    hf, new = _engines(model, tok)
    for t in (0.0, 1.0):
        p = SamplingParams(temperature=t, max_new_tokens=8, seed=2)
        _same(hf.generate(prompts, p), new.generate(prompts, p))


def test_asynchronous_rollouts_accept_hf_static():
    from grpo_core.config import load_config

    ov = ["rollout.max_staleness=1", "rollout.is_correction=token"]
    cfg = load_config("grpo", "smoke", [*ov, "rollout.engine=hf_static"])
    assert cfg.rollout.engine == "hf_static" and cfg.rollout.sampler_logprobs is False
    with pytest.raises(UserError, match="hf_static"):
        load_config("grpo", "smoke", [*ov, "rollout.engine=vllm"])


def test_a_vlm_samples_through_generate(setup, monkeypatch):
    model, tok, prompts = setup
    _, new = _engines(model, tok)
    calls = []
    monkeypatch.setattr(HFEngine, "generate", lambda self, pr, pa, media=None: calls.append(1))
    monkeypatch.setattr(model.config, "vision_config", {"depth": 1}, raising=False)
    new.generate(prompts[:2], SamplingParams(max_new_tokens=3))
    assert calls == [1]


@pytest.mark.parametrize("case", ["one_token", "no_padding", "single_row"])
def test_edge_shapes_match_generate(setup, case):
    model, tok, prompts = setup
    hf, new = _engines(model, tok)
    n_new = 1 if case == "one_token" else 8
    if case == "no_padding":
        prompts = [p for p in prompts if len(p) == len(prompts[0])]
    if case == "single_row":
        prompts = prompts[-1:]
    for t in (0.0, 1.0):
        p = SamplingParams(temperature=t, max_new_tokens=n_new, seed=8)
        a, b = hf.generate(prompts, p), new.generate(prompts, p)
        _same(a, b)
        assert a.completion_ids.shape[1] <= n_new


def test_sampler_logprobs_is_an_hf_static_option():
    from grpo_core.config import load_config

    cfg = load_config(
        "grpo", "smoke", ["rollout.engine=hf_static", "rollout.sampler_logprobs=true"]
    )
    assert cfg.rollout.sampler_logprobs is True
    with pytest.raises(UserError, match="rollout.sampler_logprobs.*hf_static, not 'hf'"):
        load_config("grpo", "smoke", ["rollout.engine=hf", "rollout.sampler_logprobs=true"])
