"""rollout.carry_kv against the whole-trajectory prefill, in tiny_agent's multi-turn rollouts
(grpo_core.episodes.play on the hf_static engine). Not a test.

Plays one training batch of the tiny_agent profile (``--prompts`` x group_size episodes of the
TextWorldExpress coin collector, up to 12 turns, 6 new tokens a turn) from an SFT start, with the
carry off and on in turn, ``--repeat`` times each, same seeds. Prints each run's wall time, the
tokens prefilled, the median ``RATIO carried/whole`` with its range, and how many of the
episodes played the same actions both ways (the carry is not bitwise equal: a sampled token
differs where a draw falls within ~1e-6 of a cumulative-probability boundary).

    OMP_NUM_THREADS=1 python benchmarks/carry_kv.py --model-dir results/tiny_agent/base/seed0/model
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from grpo_core.config import load_config
    from grpo_core.episodes import episode_seed, play
    from grpo_core.models import load_model_and_tokenizer
    from grpo_core.rollout import SamplingParams, make_engine
    from grpo_core.tasks import make_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--prompts", type=int, default=8, help="prompts (x group_size episodes)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config("grpo", "tiny_agent", [f"model.name_or_path={a.model_dir}"])
    task = make_task(cfg.task)
    train = task.train()
    model, tok = load_model_and_tokenizer(a.model_dir)
    engine = make_engine("hf_static", model, tok, cfg=cfg, model_path=a.model_dir)
    G = cfg.rollout.group_size
    rows = [i for i in range(a.prompts) for _ in range(G)]
    params = SamplingParams(
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        max_new_tokens=cfg.rollout.max_new_tokens,
        stop=list(cfg.rollout.stop),
        seed=0,
    )
    carries = []
    orig = engine.new_carry
    engine.new_carry = lambda: carries.append(orig()) or carries[-1]
    times: dict[bool, list[float]] = {False: [], True: []}
    played: dict[bool, list] = {}
    turns = 0.0
    print(
        f"tiny_agent: {len(rows)} episodes ({a.prompts} prompts x {G}), up to "
        f"{cfg.env.max_turns} turns, threads={a.threads}, CPU "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    for r in range(a.repeat):
        for carry in (False, True):
            engine.carry_kv = carry
            t0 = time.perf_counter()
            _, ep = play(
                cfg.env,
                task,
                cfg.task.template,
                [train[i] for i in rows],
                [episode_seed(0, i) for i in rows],
                engine,
                tok,
                params,
            )
            wall = time.perf_counter() - t0
            times[carry].append(wall)
            played[carry] = ep.turn_texts
            turns = sum(ep.n_turns) / len(rows)
            extra = ""
            if carry:
                c = carries[-1]
                extra = f"  prefilled {c.prefilled} tokens, reused {c.reused} ({c.hits} row-turns)"
            print(f"run {r} carry_kv={str(carry):5s} {wall:7.2f} s  mean turns {turns:.1f}{extra}")
    ratios = [c / w for c, w in zip(times[True], times[False])]
    same = sum(x == y for x, y in zip(played[True], played[False]))
    print(
        f"whole prefill: median {statistics.median(times[False]):.2f} s; carried: median "
        f"{statistics.median(times[True]):.2f} s"
    )
    print(
        f"RATIO carried/whole = {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} pairs)"
    )
    print(f"episodes with the same actions both ways (last pair): {same} of {len(rows)}")


if __name__ == "__main__":
    main()
