"""Run under the vLLM venv (spawned by tests/test_vllm.py): build the tiny model, then compare
greedy completions of the hf and vllm engines, and check that a weight update shows up in vLLM's
next generation. Prints one JSON line with the results."""

import json
import sys
from pathlib import Path

import torch

from grpo_core.config import load_config
from grpo_core.episodes import chat_ids
from grpo_core.models import build_char_tokenizer, build_tiny_model
from grpo_core.rollout import HFEngine, SamplingParams, VLLMEngine

# vLLM's CPU attention needs head_dim in {32, 64, ...}: one head of the smoke model's 32 dims
VLLM_TINY = ["model.tiny.num_heads=1", "model.tiny.num_kv_heads=1"]


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    out = Path(out_dir)
    cfg = load_config(None, "smoke", ["rollout.engine=vllm", *VLLM_TINY])
    tok = build_char_tokenizer()
    model = build_tiny_model(cfg.model.tiny, tok, seed=0)
    # random init gives near-uniform logits: sharpen them so greedy decoding has clear winners
    # (and EOS is reachable), making the float32 comparison of two implementations meaningful
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    prompts = [
        chat_ids(tok, [{"role": "user", "content": t}])
        for t in ["1+2=", "7*3-4=", "hello", "(9+9)*2=", "x"]
    ]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12, seed=0)
    hf = HFEngine(model, tok, cfg=cfg, model_path=None).generate(prompts, greedy)
    engine = VLLMEngine(model, tok, cfg=cfg, model_path=str(out / "model"))
    vl = engine.generate(prompts, greedy)
    sampled = engine.generate(
        prompts * 2, SamplingParams(temperature=1.0, max_new_tokens=12, seed=5)
    )
    # sampler log-probs vs the training model's at temperature 1
    from grpo_core.trainer import sequence_logprobs

    with torch.no_grad():
        lp, _ = sequence_logprobs(
            model,
            sampled.prompt_ids,
            sampled.prompt_mask,
            sampled.completion_ids,
            sampled.completion_mask,
            1.0,
        )
    m = sampled.completion_mask.bool()
    max_lp_diff = float((lp[m] - sampled.sampler_logp[m]).abs().max())
    # weight update: perturb the policy, push it, generate again
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    engine.sync_weights(model)
    vl2 = engine.generate(prompts, greedy)
    hf2 = HFEngine(model, tok, cfg=cfg, model_path=None).generate(prompts, greedy)
    engine.close()
    print(
        "RESULT "
        + json.dumps(
            {
                "hf": hf.texts,
                "vllm": vl.texts,
                "hf_ids": hf.completion_ids.tolist(),
                "vllm_ids": vl.completion_ids.tolist(),
                "hf_mask": hf.completion_mask.tolist(),
                "vllm_mask": vl.completion_mask.tolist(),
                "hf_reasons": hf.finish_reasons,
                "vllm_reasons": vl.finish_reasons,
                "sampled_texts": sampled.texts,
                "max_logp_diff": max_lp_diff,
                "vllm_after_update": vl2.texts,
                "hf_after_update": hf2.texts,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
