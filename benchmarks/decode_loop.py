"""The hf_static engine's decode loop (grpo_core.decode) vs the hf engine's generate: rollout time.

Two shapes, each on a randomly initialised tiny Llama with the character tokenizer (float32):

- ``tiny``: the tiny profile's model (hidden 128, 4 layers, 4 heads, ~0.9M parameters), 128
  rows x 6 new tokens (one training step's rollout: 16 prompts x 8 samples);
- ``long``: hidden 512, 8 layers, 8 heads, 16 rows (4 prompts x 4 samples) x 48 new tokens.

Prompts are two-term sums ("37+5=", the tiny profile's expr template) in the tiny chat
template, each prompt ``group`` times in a row as the trainer passes them.
A random model rarely emits EOS, so by default the EOS row of the LM head is raised along the
mean final hidden state until about ``--finish`` of the rows stop before max_new_tokens (like
a trained policy, whose answers end early); ``--finish 0`` leaves the model as built.

Per shape: one warm-up call per engine, then the identity check (greedy, and sampled at T=1 and
at T=0.7 / top_p 0.9 with the same seed: are the completion ids identical?), then ``--repeat``
timed calls per engine, alternating (hf, new, hf, new, ...: the shared machine's load drifts;
``--ablate`` adds the loop without shared prefill and without compaction to the rotation,
``--compiled`` generate with transformers' StaticCache and a compiled forward, its first call
(the compilation) timed apart),
sampling at temperature 1, top_p 1 with seed = the repetition. Prints per engine the median and
range of the seconds per call and ``RATIO new/hf = X`` (median / median). Not a test; asserts
nothing.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/decode_loop.py [--shapes tiny long --repeat 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

SHAPES = {
    "tiny": dict(hidden=128, inter=384, layers=4, heads=4, prompts=16, group=8, new=6),
    "long": dict(hidden=512, inter=1536, layers=8, heads=8, prompts=4, group=4, new=48),
}


def build(shape: dict):
    from grpo_core.models import build_char_tokenizer, build_tiny_model
    from grpo_core.schema import TinyModelCfg

    tok = build_char_tokenizer()
    mcfg = TinyModelCfg(
        hidden_size=shape["hidden"],
        intermediate_size=shape["inter"],
        num_layers=shape["layers"],
        num_heads=shape["heads"],
        num_kv_heads=shape["heads"],
    )
    return build_tiny_model(mcfg, tok, seed=0).eval(), tok


def prompts_for(tok, n: int, group: int, seed: int = 0) -> list[list[int]]:
    """n chat prompts, each ``group`` times in a row (a GRPO batch)."""
    from grpo_core.episodes import chat_ids

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 99)
        out += [chat_ids(tok, [{"role": "user", "content": f"{a}+{b}="}])] * group
    return out


@torch.no_grad()
def rig_eos(model, tok, prompts, max_new: int, finish: float) -> float:
    """Raise the EOS logit along the mean final hidden state until about ``finish`` of the
    rows stop early (greedy and sampled alike); returns the share measured."""
    from grpo_core.rollout import HFEngine, SamplingParams

    if finish <= 0:
        return 0.0
    from grpo_core.rollout import left_pad

    ids, mask = left_pad(prompts, tok.pad_token_id)
    h = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
    d = h.mean(0)
    d = d / d.norm()
    w = model.lm_head.weight
    eos = tok.eos_token_id
    base = w[eos].clone()
    eng = HFEngine(model, tok, cfg=None, model_path=None)
    share = 0.0
    for beta in [0.01 * 1.1**i for i in range(100)]:
        w[eos] = base + beta * d
        ro = eng.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=max_new, seed=0))
        share = sum(r == "stop" for r in ro.finish_reasons) / len(ro)
        if share >= finish:
            break
    return share


class CompiledGenerate:
    """transformers' generate with its StaticCache and the forward compiled (torch.compile via
    GenerationConfig.compile_config, forced on CPU), sampling as the hf engine does: a timing
    contender only (``--compiled``). It compiles for each new batch size and prompt width."""

    def __init__(self, model, tok):
        self.model, self.tok = model, tok

    @torch.no_grad()
    def generate(self, prompts, params):
        from transformers import CompileConfig, GenerationConfig

        from grpo_core.rollout import Rollouts, eos_token_ids, finish_completions, left_pad

        tok, pad = self.tok, self.tok.pad_token_id
        eos = eos_token_ids(tok)
        greedy = params.temperature == 0
        g = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=0,
            max_new_tokens=params.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=sorted(eos),
            cache_implementation="static",
            compile_config=CompileConfig(fullgraph=False, dynamic=False),
        )
        g.compile_config._compile_all_devices = True
        ids, mask = left_pad(prompts, pad)
        torch.manual_seed(params.seed)
        out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=g)
        raw = out[:, ids.shape[1] :]
        c_ids, c_mask, reasons, texts = finish_completions(raw, tok, eos, [], pad)
        return Rollouts(ids, mask, c_ids, c_mask, reasons, texts)


def timed(eng, prompts, params) -> float:
    t0 = time.perf_counter()
    eng.generate(prompts, params)
    return time.perf_counter() - t0


def run_shape(
    name: str, shape: dict, repeat: int, finish: float, ablate: bool, compiled: bool
) -> float:
    from grpo_core.rollout import HFEngine, HFStaticEngine, SamplingParams

    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
    model, tok = build(shape)
    prompts = prompts_for(tok, shape["prompts"], shape["group"])
    share = rig_eos(model, tok, prompts, shape["new"], finish)
    n_par = sum(p.numel() for p in model.parameters())
    hf = HFEngine(model, tok, cfg=None, model_path=None, batch_size=512)
    new = HFStaticEngine(model, tok, cfg=None, model_path=None, batch_size=512)
    p1 = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=shape["new"], seed=0)
    for e in (hf, new):  # warm-up
        e.generate(prompts, p1)
    same = {}
    for label, t, tp in [("greedy", 0.0, 1.0), ("T=1", 1.0, 1.0), ("T=0.7,top_p=0.9", 0.7, 0.9)]:
        p = SamplingParams(temperature=t, top_p=tp, max_new_tokens=shape["new"], seed=11)
        a, b = hf.generate(prompts, p), new.generate(prompts, p)
        same[label] = a.completion_ids.shape == b.completion_ids.shape and bool(
            torch.equal(a.completion_ids, b.completion_ids)
        )
    ro = new.generate(prompts, p1)
    lens = ro.completion_mask.sum(-1).float()
    print(
        f"== {name}: {n_par / 1e6:.2f}M params, {len(prompts)} rows ({shape['prompts']} prompts x "
        f"{shape['group']}) x {shape['new']} new "
        f"tokens; rows stopping early {share:.2f}, mean completion {lens.mean():.1f} tokens"
    )
    print(
        "   identical completion ids (hf vs new): " + ", ".join(f"{k} {v}" for k, v in same.items())
    )
    engines = {"hf": hf, "new": new}
    if ablate:  # the loop without shared prefill / without compaction
        for label, attr in [("new-nodedupe", "dedupe"), ("new-nocompact", "compact")]:
            e = HFStaticEngine(model, tok, cfg=None, model_path=None, batch_size=512)
            setattr(e, attr, False)
            e.generate(prompts, p1)
            engines[label] = e
    if compiled:
        e = CompiledGenerate(model, tok)
        t0 = time.perf_counter()
        e.generate(prompts, p1)
        print(f"   compiled generate: first call (compilation) {time.perf_counter() - t0:.1f} s")
        for label, t, tp in [("greedy", 0.0, 1.0), ("T=1", 1.0, 1.0)]:
            p = SamplingParams(temperature=t, top_p=tp, max_new_tokens=shape["new"], seed=11)
            a, b = hf.generate(prompts, p), e.generate(prompts, p)
            same[f"compiled {label}"] = a.completion_ids.shape == b.completion_ids.shape and bool(
                torch.equal(a.completion_ids, b.completion_ids)
            )
        print(
            "   identical to hf: " + ", ".join(f"{k} {v}" for k, v in same.items() if "comp" in k)
        )
        engines["hf-compiled"] = e
    times = {k: [] for k in engines}
    for r in range(repeat):
        p = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=shape["new"], seed=r)
        for k, e in engines.items():
            times[k].append(timed(e, prompts, p))
    for k, v in times.items():
        print(
            f"   {k:>13}: median {statistics.median(v) * 1e3:8.1f} ms per call "
            f"(range {min(v) * 1e3:.1f}-{max(v) * 1e3:.1f}, {repeat} calls)"
        )
    ratio = statistics.median(times["new"]) / statistics.median(times["hf"])
    print(f"   RATIO new/hf = {ratio:.3f}  [{name}]")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--finish", type=float, default=0.5)
    ap.add_argument(
        "--ablate",
        action="store_true",
        help="also time the loop without shared prefill and without compaction",
    )
    ap.add_argument(
        "--compiled",
        action="store_true",
        help="also time generate with a static "
        "cache and torch.compile (first call, the compilation, reported apart)",
    )
    a = ap.parse_args()
    print(
        f"torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}, "
        f"threads {torch.get_num_threads()}"
    )
    ratios = [run_shape(s, SHAPES[s], a.repeat, a.finish, a.ablate, a.compiled) for s in a.shapes]
    print("RATIO new/hf = " + ", ".join(f"{s} {r:.3f}" for s, r in zip(a.shapes, ratios)))


if __name__ == "__main__":
    main()
