"""Train-step throughput and MFU of this core on a GPU, bf16, with a model built from
Qwen2.5-0.5B's config (random weights: the speed does not depend on them, and nothing is
downloaded).

One timed step = ``Trainer.optimize`` on a fixed batch (the real core: log-probs of the
completions, PPO-clip loss with minibatch-global aggregation, backward over micro-batches,
gradient clipping, AdamW step). Tokens/s counts prompt + completion tokens of the batch;
MFU = achieved FLOP/s / peak bf16 FLOP/s with FLOPs per token = 6 * non-embedding params
+ 12 * layers * hidden * sequence length (forward + backward, attention included; the LM head
counts through the output embedding's parameters).

    python benchmarks/gpu_step.py                        # GPU, Qwen2.5-0.5B shape
    python benchmarks/gpu_step.py --tiny --device cpu    # a seconds-long CPU check of the script
    python benchmarks/gpu_step.py --gradient-checkpointing --micro-batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

# Qwen/Qwen2.5-0.5B config.json (architecture numbers only)
QWEN25_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
TINY = dict(QWEN25_05B, vocab_size=512, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)  # fmt: skip

# dense bf16 peak FLOP/s (no sparsity) by device name
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def build(model_dir: str, shape: dict) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from grpo_core.models import build_char_tokenizer

    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**shape, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id))  # fmt: skip
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)


def make_batch(trainer, n_prompts: int, group: int, prompt_len: int, comp_len: int):
    from grpo_core.rollout import Rollouts
    from grpo_core.trainer import Batch

    g = torch.Generator().manual_seed(0)
    n = n_prompts * group
    vocab = trainer.model.config.vocab_size
    p_ids = torch.randint(10, vocab, (n, prompt_len), generator=g)
    c_ids = torch.randint(10, vocab, (n, comp_len), generator=g)
    ro = Rollouts(p_ids, torch.ones_like(p_ids), c_ids, torch.ones_like(c_ids),
                  ["length"] * n, [""] * n)  # fmt: skip
    adv = torch.randn(n, generator=g)  # batches stay on the CPU, as in training
    return Batch(ro, [None] * n, torch.zeros(n), adv, None, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny model shape (CPU check)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--completion-len", type=int, default=768)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    args = ap.parse_args()

    from grpo_core.config import load_config
    from grpo_core.models import memory_estimate
    from grpo_core.trainer import Trainer

    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    shape = TINY if args.tiny else QWEN25_05B
    with tempfile.TemporaryDirectory() as d:
        build(d, shape)
        cfg = load_config("grpo", "smoke", [
            f"model.name_or_path={d}", f"run.device={args.device}", f"run.dtype={dtype}",
            "loss.kl.beta=0", "train.log_kl=false", "run.deterministic=false",
            f"train.micro_batch_size={args.micro_batch}", "train.minibatches=1", "train.mu=1",
            f"train.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
            f"rollout.max_new_tokens={args.completion_len}", "train.lr=1e-6",
        ])  # fmt: skip
        t = Trainer(cfg, None)
        print(memory_estimate(t.model, cfg))
        batch = make_batch(t, args.prompts, args.group, args.prompt_len, args.completion_len)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        t.optimize(batch)  # warm-up
        sync()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            t.optimize(batch)
            sync()
            times.append(time.perf_counter() - t0)
        mc = t.model.config
        n_params = sum(p.numel() for p in t.model.parameters())
        n_embed = mc.vocab_size * mc.hidden_size
        seq = args.prompt_len + args.completion_len
        n_tok = args.prompts * args.group * seq
        # tied embeddings: the input embedding is a lookup, its matmul use is the LM head
        dense = n_params - (0 if mc.tie_word_embeddings else n_embed)
        flops_tok = 6 * dense + 12 * mc.num_hidden_layers * mc.hidden_size * seq
        step_s = statistics.median(times)
        tps = n_tok / step_s
        peak = peak_flops(args.device)
        out = {
            "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "dtype": dtype,
            "model": "tiny" if args.tiny else "Qwen2.5-0.5B shape (random weights)",
            "params_M": round(n_params / 1e6, 1),
            "batch": f"{args.prompts}x{args.group} sequences of {args.prompt_len}+{args.completion_len}",
            "micro_batch": args.micro_batch,
            "gradient_checkpointing": args.gradient_checkpointing,
            "step_s_median": round(step_s, 4),
            "tokens_per_s": round(tps, 1),
            "tflops_per_s": round(tps * flops_tok / 1e12, 2),
            "mfu": round(tps * flops_tok / peak, 4) if peak else None,
            "peak_memory_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if args.device.startswith("cuda")
            else None,
        }
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
