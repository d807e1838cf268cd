"""Evaluate a checkpoint on a task's test split: k samples per prompt through the core's rollout
engine, graded by the task's own grader (the same call the training reward makes).

``evaluate_benchmark`` does the same on a real math benchmark (evals.benchmarks): the paper's or
the standard protocol, several eval seeds, math-verify grading with a per-sample timeout
(grpo_core.grader), bootstrap CIs over problems and the std over eval seeds.

Writes eval/<benchmark>.json (metrics, n, protocol) and eval/<benchmark>.samples.jsonl (one line
per sample) per the output contract.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path

from evals.metrics import bootstrap_ci, per_problem_scores, score_groups, summarize_runs
from grpo_core.config import Config
from grpo_core.environment import environment_info, package_versions
from grpo_core.episodes import SingleTurnEnv, episode_seed, play, run_episodes, single_turn_prompts
from grpo_core.errors import UserError
from grpo_core.models import load_model_and_tokenizer
from grpo_core.rollout import SamplingParams, make_engine
from grpo_core.rundir import RunLock
from grpo_core.runtime import derive_seed, setup_torch
from grpo_core.samplers import read_experience_prefix
from grpo_core.tasks import TEMPLATES, grade_texts, is_well_formed, make_task
from grpo_core.vision import VideoProcessor


def _load_engine(cfg, model_dir):
    """The checkpoint's tokenizer and a rollout engine on it (``rollout.engine``)."""
    model, tok = load_model_and_tokenizer(str(model_dir), cfg.run.dtype, cfg.run.device)
    model.eval()
    engine = make_engine(
        cfg.rollout.engine,
        model,
        tok,
        cfg=cfg,
        model_path=str(model_dir),
        batch_size=cfg.eval.batch_size,
    )
    return tok, engine


def locked_output(fn):
    """One writer per eval output directory (grpo_core.rundir.RunLock on ``out_dir``): a second
    evaluation into it is a one-line error instead of interleaved files."""

    @functools.wraps(fn)
    def run(cfg, model_dir, out_dir, *args, **kwargs):
        with RunLock(Path(out_dir), what="eval output directory"):
            return fn(cfg, model_dir, out_dir, *args, **kwargs)

    return run


def reward_model_metrics(cfg: Config, task, texts, finish_reasons, problems) -> dict:
    """For a run trained on a learned reward (rewards ``reward_model``): that term's logs over
    the eval samples as ``rm_<key>`` (each head's mean, the combined proxy, the members' std,
    the rule-based truth of each head and the gold reward); {} for every other run."""
    from grpo_core.rewards import GroupContext, reward_model_reward

    out: dict = {}
    for term in cfg.rewards:
        if term.name != "reward_model":
            continue
        ctx = GroupContext(
            texts=list(texts),
            problems=list(problems),
            finish_reasons=list(finish_reasons),
            lengths=[0] * len(texts),
            group_sizes=[len(texts)],
            max_new_tokens=cfg.rollout.max_new_tokens,
            task=task,
            seed=cfg.run.seed,
            rm_root=str(Path(cfg.run.results_dir) / cfg.profile / "rm"),
        )
        r, logs = reward_model_reward(ctx, **term.params)
        out["rm_reward_mean"] = float(r.mean())
        out.update({f"rm_{k}": v for k, v in logs.items()})
    return out


@locked_output
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
    if ev.vm_mcts is not None:  # VM-MCTS (evals.vm_mcts): its value model must be there
        from evals.vm_mcts import check_params, require_value_model, search_temperature

        max_new = ev.max_new_tokens or cfg.rollout.max_new_tokens
        check_params(ev.vm_mcts, max_new, search_temperature(cfg))
        require_value_model(cfg, model_dir)
    prefix = read_experience_prefix(model_dir)  # a learned prompt prior (training_free_grpo)
    if prefix:
        test = [dataclasses.replace(p, prefix=prefix) for p in test]
    tok, engine = _load_engine(cfg, model_dir)
    k = ev.k
    max_new = ev.max_new_tokens or cfg.rollout.max_new_tokens
    problems = [p for p in test for _ in range(k)]
    params = SamplingParams(
        temperature=ev.temperature,
        top_p=ev.top_p,
        max_new_tokens=max_new,
        stop=list(cfg.rollout.stop),
        seed=derive_seed(ev.seed, 424242),
    )
    t0 = time.perf_counter()
    # the episode of training (grpo_core.episodes.play), in the run's env
    prompt_cache: dict[str, list[int]] = {}

    def prompt_fn(r: int) -> list[int]:
        p = problems[r]
        if p.id not in prompt_cache:
            (prompt_cache[p.id],) = single_turn_prompts(tok, cfg.task.template, [p])
        return prompt_cache[p.id]

    single = cfg.env.name == "single_turn"
    # a VLM's video preprocessing (grpo_core.vision), None for a text model
    processor = VideoProcessor.from_model(getattr(engine, "model", None))
    ro, ep = play(
        cfg.env,
        task,
        cfg.task.template,
        problems,
        [episode_seed(ev.seed, r) for r in range(len(problems))],
        engine,
        tok,
        params,
        prompt_fn=prompt_fn if single else None,
        **({} if processor is None else {"processor": processor}),
    )
    gen_s = time.perf_counter() - t0
    getattr(engine, "close", lambda: None)()  # engines without resources have none
    lengths = ro.policy_mask.sum(-1).tolist()

    # the task's one grading function, the one the training reward calls; an env that says
    # which episodes succeeded (multi-turn) is scored by that instead
    grades = grade_texts(task, ro.texts, problems)
    succ = ep.success()
    if all(x is not None for x in succ):
        from grpo_core.grader import Grade

        grades = [
            Grade(float(x), g.pred, "success" if x else "failure") for x, g in zip(succ, grades)
        ]
    rm_metrics = reward_model_metrics(cfg, task, ro.texts, ro.finish_reasons, problems)
    task.close()  # grader workers (the math task) are not needed any more
    scores, answers, samples = [], [], []
    for i, p in enumerate(test):
        s_row, a_row = [], []
        for j in range(k):
            n = i * k + j
            text = ro.texts[n]
            ans, raw = grades[n].pred, grades[n].score
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
                    "grade_reason": grades[n].reason,
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
    task_metrics = getattr(task, "eval_metrics", None)  # e.g. video_mc's per-level accuracy
    if task_metrics is not None:
        metrics.update(task_metrics(samples, test))
    metrics.update(rm_metrics)
    per = per_problem_scores(scores, answers, [1])
    ci = {f"avg@{k}": list(bootstrap_ci(per[f"avg@{k}"]))}
    mcts = None
    if ev.vm_mcts is not None:  # VM-MCTS decoding of the same checkpoint: mcts_acc, compute
        from evals.vm_mcts import mcts_decode, value_model_hint

        mcts = mcts_decode(cfg, model_dir, test, task, what=value_model_hint(cfg), log=print)
        metrics.update(mcts["metrics"])
        ci["mcts_acc"] = list(bootstrap_ci([float(x["correct"]) for x in mcts["samples"]]))
    agent = None
    if all(x is not None for x in succ):  # an agent env: success, score, steps, end reasons
        from evals.agent import agent_metrics

        agent = agent_metrics(ep)
        metrics.update(agent["metrics"])
        ci.update(agent["ci"])
        env_scores = ep.env_reward().tolist()
        for n, s in enumerate(samples):
            s.update(
                turns=ep.n_turns[n],
                env_score=env_scores[n],
                end_reason=ep.end_reasons[n],
                actions=ep.turn_texts[n],
            )

    # a task that tests on another task's split names it (grpo_core.tasks.WirelessMath)
    bench = getattr(task, "eval_name", None) or cfg.task.name
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
            # a learned prompt prior before every prompt (only when the checkpoint has one)
            **({"prompt_prefix_chars": len(prefix)} if prefix else {}),
            "task": cfg.task.model_dump(mode="json"),
            "engine": cfg.rollout.engine,
            "eval_seed": ev.seed,
            "grader": f"{type(task).__name__}.grade",
            "versions": package_versions(),
            # torch CPU capability / GPU, python, git commit (+ dirty) of the code
            "environment": environment_info(cfg.run.device),
        },
        "generation_s": gen_s,
    }
    if agent is not None:
        result["end_reasons"] = agent["end_reasons"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if mcts is not None:  # its protocol in the json, one line per problem in .mcts.jsonl
        result["vm_mcts"] = {"protocol": mcts["protocol"], "search_s": mcts["search_s"]}
        _write_atomic(
            out / f"{bench}.mcts.jsonl", "".join(json.dumps(s) + "\n" for s in mcts["samples"])
        )
    tmp = out / f"{bench}.samples.jsonl.tmp"
    tmp.write_text("".join(json.dumps(s) + "\n" for s in samples))
    tmp.replace(out / f"{bench}.samples.jsonl")
    tmp = out / f"{bench}.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / f"{bench}.json")
    return result


# --------------------------------------------------------------------------------------------
# real math benchmarks (evals.benchmarks): several eval seeds, paper / standard protocol,
# math-verify grading with a per-sample timeout


def resolve_protocol(cfg: Config, benchmark: str, protocol: str | None = None) -> dict:
    """The sampling protocol actually used: the benchmark's declared one (paper's own or the
    standard T=0.6 / top_p=0.95 one, whose k is at least eval.k) with the config's caps."""
    from evals.benchmarks import get_benchmark

    ev = cfg.eval
    b = get_benchmark(benchmark)
    name = protocol or ev.protocol
    if name not in ("paper", "standard"):
        raise UserError(f"eval.protocol must be 'paper' or 'standard', got {name!r}")
    decl = b.paper if name == "paper" else b.standard
    k = decl.k if name == "paper" else max(decl.k, ev.k)
    max_new = decl.max_new_tokens
    if ev.benchmark_max_new_tokens:
        max_new = min(max_new, ev.benchmark_max_new_tokens)
    return {
        "name": name,
        "temperature": decl.temperature,
        "top_p": decl.top_p,
        "k": k,
        "max_new_tokens": max_new,
        "template": ev.template or decl.template,
        "template_text": TEMPLATES.get(ev.template or decl.template, "eval.template"),
        "source": decl.source,
    }


def benchmark_label(benchmark: str, protocol: str) -> str:
    """File / summary name: the standard protocol keeps the benchmark's name."""
    return benchmark if protocol == "standard" else f"{benchmark}-{protocol}"


@locked_output
def evaluate_benchmark(
    cfg: Config,
    model_dir: str | Path,
    out_dir: str | Path,
    benchmark: str,
    protocol: str | None = None,
    eval_seeds: list[int] | None = None,
    reproduction: str | None = None,
    seed: int | None = None,
    threads: int | None = None,
    log=print,
) -> dict:
    """Evaluate a model on a real math benchmark under one protocol and one or more eval seeds.

    Writes <out>/<label>.json (metrics averaged over eval seeds, their std over seeds, bootstrap
    95% CIs over problems of the per-problem scores averaged over seeds, per-seed metrics, grader
    reason counts, protocol) and <out>/<label>.samples.jsonl (one line per sample and eval seed).
    """
    import numpy as np

    from evals.benchmarks import LoadReport, load_benchmark
    from grpo_core.grader import MathGrader, answer_key

    setup_torch(cfg, threads)
    ev = cfg.eval
    proto = resolve_protocol(cfg, benchmark, protocol)
    label = benchmark_label(benchmark, proto["name"])
    seeds = list(eval_seeds if eval_seeds is not None else ev.seeds)
    if not seeds:
        raise UserError("eval.seeds: give at least one eval seed")
    rep = LoadReport()
    problems = load_benchmark(
        benchmark,
        ev.benchmark_paths.get(benchmark),
        on_error="skip",
        n=ev.benchmark_n_prompts,
        report=rep,
        max_line_bytes=ev.max_line_bytes,
    )
    for msg in rep.skipped:
        log(f"skipped malformed row {msg}")
    k = proto["k"]
    ks = sorted({x for x in ev.pass_ks if x <= k} | {1})
    prefix = read_experience_prefix(model_dir)  # a learned prompt prior (training_free_grpo)
    if prefix:
        problems = [dataclasses.replace(p, prefix=prefix) for p in problems]
    tok, engine = _load_engine(cfg, model_dir)
    prompt_ids = single_turn_prompts(tok, proto["template"], problems)
    params_base = dict(
        temperature=proto["temperature"],
        top_p=proto["top_p"],
        max_new_tokens=proto["max_new_tokens"],
        stop=list(cfg.rollout.stop),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples: list[dict] = []
    runs: list[tuple[list, list]] = []
    extra: dict[str, dict] = {}
    grader_stats: dict[str, int] = {}
    gen_s = grade_s = 0.0
    from evals.benchmarks import get_benchmark as _get_benchmark

    # a code benchmark (humaneval, mbpp) runs each completion's program in the sandbox
    # (evals.benchmarks.grade_code) instead of the math grader; pass@k as for math
    code = _get_benchmark(benchmark).kind != "math"
    if code:
        from contextlib import nullcontext

        from evals.benchmarks import CODE_LIMITS, grade_code

        grader_ctx = nullcontext()
    else:
        grader_ctx = MathGrader(timeout_s=ev.grader_timeout_s, workers=ev.grader_workers)
    with grader_ctx as grader:
        for es in seeds:
            params = SamplingParams(**params_base, seed=derive_seed(es, 424242))
            flat = [ids for ids in prompt_ids for _ in range(k)]
            texts, reasons, lengths = [], [], []
            t0 = time.perf_counter()
            chunk = max(1, ev.batch_size)
            for s in range(0, len(flat), chunk):
                params.seed = derive_seed(es, 424242, s)
                # single-turn episodes (grpo_core.episodes.run_episodes) on cached prompts
                part = [problems[r // k] for r in range(s, min(s + chunk, len(flat)))]
                envs = [SingleTurnEnv(None, proto["template"], {}) for _ in part]
                ro, _ = run_episodes(
                    envs, part, [0] * len(part), flat[s : s + chunk], engine, tok, params
                )
                texts += ro.texts
                reasons += ro.finish_reasons
                lengths += ro.policy_mask.sum(-1).tolist()
                log(
                    f"{label} eval seed {es}: {min(s + chunk, len(flat))}/{len(flat)} samples, "
                    f"{time.perf_counter() - t0:.0f} s"
                )
            gen_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            if code:
                grades = grade_code([p for p in problems for _ in range(k)], texts)
            else:
                grades = grader.grade_many(
                    [(texts[i * k + j], p.answer) for i, p in enumerate(problems) for j in range(k)]
                )
            grade_s += time.perf_counter() - t0
            scores, answers = [], []
            for i, p in enumerate(problems):
                s_row, a_row = [], []
                for j in range(k):
                    n = i * k + j
                    g = grades[n]
                    s_row.append(g.score)
                    a_row.append(None if code else answer_key(g.pred))
                    samples.append(
                        {
                            "prompt_id": p.id,
                            "eval_seed": es,
                            "sample": j,
                            "completion": texts[n],
                            "answer": g.pred,
                            "gold": p.answer,
                            "score": g.score,
                            "correct": g.score >= 1.0,
                            "grade_reason": g.reason,
                            "finish_reason": reasons[n],
                            "length": lengths[n],
                        }
                    )
                    grader_stats[g.reason] = grader_stats.get(g.reason, 0) + 1
                scores.append(s_row)
                answers.append(a_row)
            runs.append((scores, answers))
            extra[str(es)] = {
                f"length@{k}": float(np.mean(lengths)),
                f"truncated@{k}": float(np.mean([r != "stop" for r in reasons])),
            }
    getattr(engine, "close", lambda: None)()  # engines without resources have none
    summ = summarize_runs(runs, ks)
    per_seed = {str(es): {**m, **extra[str(es)]} for es, m in zip(seeds, summ["per_seed"])}
    metrics = dict(summ["metrics"])
    for name in extra[str(seeds[0])]:
        metrics[name] = float(np.mean([extra[str(es)][name] for es in seeds]))
    result = {
        "benchmark": label,
        "reproduction": reproduction or cfg.reproduction,
        "seed": cfg.run.seed if seed is None else seed,
        "model": str(model_dir),
        "n_prompts": len(problems),
        "k": k,
        "eval_seeds": seeds,
        "metrics": metrics,
        "std_over_seeds": summ["std_over_seeds"],
        "ci": summ["ci"],
        "per_seed": per_seed,
        "grader": {"stats": grader_stats, "timeouts": grader_stats.get("timeout", 0)},
        "skipped_rows": rep.skipped,
        "protocol": {
            **proto,
            "pass_ks": ks,
            "benchmark": benchmark,
            "data": rep.source,
            "engine": cfg.rollout.engine,
            "stop": list(cfg.rollout.stop),
            "eval_seeds": seeds,
            "grader": {
                "name": "grpo_core.grader.MathGrader (math-verify gold-first, boxed preferred, "
                "multi-answer guard, numeric fallback)",
                "timeout_s": ev.grader_timeout_s,
            }
            if not code
            else {
                "name": "evals.benchmarks.grade_code (the program and its tests in "
                "grpo_core.sandbox; 1 when all pass)",
                "limits": dict(CODE_LIMITS),
            },
            "versions": package_versions(),
            # torch CPU capability / GPU, python, git commit (+ dirty) of the code
            "environment": environment_info(cfg.run.device),
        },
        "generation_s": gen_s,
        "grading_s": grade_s,
    }
    _write_atomic(out / f"{label}.samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    _write_atomic(out / f"{label}.json", json.dumps(result, indent=2))
    return result


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
