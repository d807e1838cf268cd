"""Evaluate a checkpoint on a task's test split: k samples per prompt through the core's rollout
engine, graded by the task's own grader (the same call the training reward makes).

Writes eval/<benchmark>.json (metrics, n, protocol) and eval/<benchmark>.samples.jsonl (one line
per sample) per the output contract.
"""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path

from evals.metrics import bootstrap_ci, per_problem_scores, score_groups
from evals.tasks import extract_answer, is_well_formed, make_task, render_prompt
from grpo_core.config import Config
from grpo_core.models import load_model_and_tokenizer
from grpo_core.rollout import SamplingParams, make_engine
from grpo_core.trainer import chat_prompt_ids, derive_seed, setup_torch


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "reasoning-gym", "math-verify", "vllm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def evaluate(
    cfg: Config,
    model_dir: str | Path,
    out_dir: str | Path,
    reproduction: str | None = None,
    seed: int | None = None,
    threads: int | None = None,
) -> dict:
    """avg@k, unbiased pass@k, maj@k (+ format rate, mean length, bootstrap CI of avg@k)."""
    setup_torch(cfg, threads)
    ev = cfg.eval
    task = make_task(cfg.task)
    test = task.test()
    if ev.n_prompts:
        test = test[: ev.n_prompts]
    model, tok = load_model_and_tokenizer(str(model_dir), cfg.run.dtype, cfg.run.device)
    model.eval()
    engine = make_engine(cfg.rollout.engine, model, tok, batch_size=ev.batch_size)
    k = ev.k
    max_new = ev.max_new_tokens or cfg.rollout.max_new_tokens
    prompts = []
    for p in test:
        ids = chat_prompt_ids(tok, render_prompt(cfg.task.template, p))
        prompts += [ids] * k
    params = SamplingParams(
        temperature=ev.temperature,
        top_p=ev.top_p,
        max_new_tokens=max_new,
        stop=list(cfg.rollout.stop),
        seed=derive_seed(ev.seed, 424242),
    )
    t0 = time.perf_counter()
    ro = engine.generate(prompts, params)
    gen_s = time.perf_counter() - t0
    lengths = ro.completion_mask.sum(-1).tolist()

    scores, answers, samples = [], [], []
    for i, p in enumerate(test):
        s_row, a_row = [], []
        for j in range(k):
            n = i * k + j
            text = ro.texts[n]
            ans = extract_answer(text)
            raw = task.grade(ans, p)
            s_row.append(float(raw >= 1.0))
            a_row.append(ans)
            samples.append(
                {
                    "prompt_id": p.id,
                    "sample": j,
                    "completion": text,
                    "answer": ans,
                    "gold": p.answer,
                    "score": raw,
                    "correct": raw >= 1.0,
                    "finish_reason": ro.finish_reasons[n],
                    "length": lengths[n],
                }
            )
        scores.append(s_row)
        answers.append(a_row)
    metrics = score_groups(scores, answers)
    metrics[f"format@{k}"] = sum(
        is_well_formed(s["completion"]) and s["finish_reason"] == "stop" for s in samples
    ) / len(samples)
    metrics[f"length@{k}"] = sum(lengths) / len(lengths)
    per = per_problem_scores(scores, answers, [1])
    ci = {f"avg@{k}": list(bootstrap_ci(per[f"avg@{k}"]))}

    bench = cfg.task.name
    result = {
        "benchmark": bench,
        "reproduction": reproduction or cfg.reproduction,
        "seed": cfg.run.seed if seed is None else seed,
        "model": str(model_dir),
        "n_prompts": len(test),
        "k": k,
        "metrics": metrics,
        "ci": ci,
        "protocol": {
            "temperature": ev.temperature,
            "top_p": ev.top_p,
            "max_new_tokens": max_new,
            "k": k,
            "template": cfg.task.template,
            "task": cfg.task.model_dump(mode="json"),
            "engine": cfg.rollout.engine,
            "eval_seed": ev.seed,
            "grader": f"{type(task).__name__}.grade",
            "versions": package_versions(),
        },
        "generation_s": gen_s,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{bench}.samples.jsonl.tmp"
    tmp.write_text("".join(json.dumps(s) + "\n" for s in samples))
    tmp.replace(out / f"{bench}.samples.jsonl")
    tmp = out / f"{bench}.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / f"{bench}.json")
    return result
