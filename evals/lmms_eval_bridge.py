"""lmms-eval's video tasks on a checkpoint, from local files, as an outside reference for the
project's own video benchmark scores (evals.video_benchmarks).

    from evals.lmms_eval_bridge import checkpoint_generator, run_lmms_eval, write_eval
    gen = checkpoint_generator("results/tiny_video/runs/grpo/seed0/checkpoint", max_new_tokens=16)
    res = run_lmms_eval("videomme", "/data/Video-MME", gen)
    write_eval(res, "results/.../eval", reproduction="grpo", seed=0)

- lmms-eval 0.7.3 is NOT a project dependency: its requirements pin torchvision and av<16,
  which break the CPU torch and the project's av. Install it in a venv of its own that also
  sees the project's packages, e.g.::

      python -m venv /tmp/lmms
      echo /path/to/project/.venv/lib/python3.11/site-packages \\
          > /tmp/lmms/lib/python3.11/site-packages/zz_project.pth
      /tmp/lmms/bin/pip install --no-deps lmms-eval==0.7.3
      /tmp/lmms/bin/pip install loguru jsonlines python-dotenv
      /tmp/lmms/bin/pip install --no-deps opencv-python-headless   # Video-MME's utils

  Everything here imports lmms-eval lazily; tests skip (pytest.importorskip) where it is
  absent.
- What runs as lmms-eval: each task's own ``doc_to_text`` (with the ``default`` entry of its
  YAML's ``lmms_eval_specific_kwargs``), its ``process_results`` on the completion after
  lmms-eval's ``strip_reasoning_tags`` (``reasoning_tags=[["<think>", "</think>"]]``) and its
  metric's aggregation function. What does not: lmms-eval's dataset loading (its YAMLs
  download the Hub copy and its videos) and its model classes (Qwen2.5-VL there needs
  qwen-vl-utils and torchvision): the documents are the local annotation rows
  (evals.video_benchmarks' layout), the frames our PyAV sampler's, the model ours
  (:func:`checkpoint_generator`, or any ``generate(prompt, frames) -> str``).
- MMVU's open-ended answers: lmms-eval asks a GPT judge when its rules say wrong; the bridge
  runs with no judge (lmms-eval's own fallback to the rule result), like our grader.
- :func:`to_eval_records` / :func:`write_eval`: ``eval/lmms_<benchmark>.json`` records
  (benchmark, reproduction, seed, metrics: acc = mean item score and each lmms-eval task's
  aggregate, n, protocol) beside our own benchmarks' records.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from evals.video_benchmarks import checkpoint_generator  # noqa: F401  (the bridge's model)
from grpo_core.errors import UserError
from grpo_core.tasks import Problem

REASONING_TAGS = [["<think>", "</think>"]]

# our benchmark -> lmms-eval: utils module, its YAML (for the prompt kwargs), doc_to_text per
# level ("*": every level), process_results, the metric and its aggregation function
LMMS_TASKS: dict[str, dict[str, Any]] = {
    "mmvu": {
        "module": "mmvu.utils",
        "yaml": "mmvu/mmvu_val.yaml",
        "text": {"*": "mmvu_doc_to_text"},
        "results": "mmvu_process_results",
        "metric": "accuracy",
        "aggregate": "mmvu_aggregate_results_val",
    },
    "vsibench": {
        "module": "vsibench.utils",
        "yaml": "vsibench/_default_template_yaml",
        "text": {"*": "vsibench_doc_to_text"},
        "results": "vsibench_process_results",
        "metric": "vsibench_overall",
        "aggregate": "vsibench_aggregate_overall",
    },
    "videommmu": {
        "module": "videommmu.utils",
        "yaml": "videommmu/_default_template_yaml",
        "text": {
            "Adaptation": "videommmu_doc_to_text_adaptation",
            "*": "videommmu_doc_to_text_perception_comprehension",
        },
        "results": "videommmu_process_results",
        "metric": "mmmu_acc",
        "aggregate": "videommmu_aggregate_results",
    },
    "mvbench": {
        "module": "mvbench.utils",
        "yaml": "mvbench/mvbench_{level}.yaml",
        "text": {"*": "mvbench_doc_to_text"},
        "results": "mvbench_process_results",
        "metric": "mvbench_accuracy",
        "aggregate": "mvbench_aggregate_results",
    },
    "videomme": {
        "module": "videomme.utils",
        "yaml": "videomme/videomme.yaml",
        "text": {"*": "videomme_doc_to_text"},
        "results": "videomme_process_results",
        "metric": "videomme_perception_score",
        "aggregate": "videomme_aggregate_results",
    },
}


def _require_lmms_eval():
    try:
        import lmms_eval
    except ImportError:
        raise UserError(
            "the lmms-eval bridge needs lmms-eval 0.7.3 in a venv of its own (it pins "
            "torchvision and av<16): see evals/lmms_eval_bridge.py"
        ) from None
    return lmms_eval


def _check(name: str) -> dict:
    if name not in LMMS_TASKS:
        raise UserError(
            f"lmms-eval bridge: {name!r} is not an lmms-eval video task here; known: "
            f"{', '.join(LMMS_TASKS)} (seed_bench_r1 has no lmms-eval task)"
        )
    return LMMS_TASKS[name]


def _tasks_dir() -> Path:
    lm = _require_lmms_eval()
    return Path(lm.__file__).parent / "tasks"


def _utils(name: str):
    """lmms-eval's utils module of a task (imported with HF_HOME set: some read it at import)."""
    t = _check(name)
    _require_lmms_eval()
    os.environ.setdefault("HF_HOME", str(Path(tempfile.gettempdir()) / "grpo_lmms_hf_home"))
    return importlib.import_module(f"lmms_eval.tasks.{t['module']}")


def _yaml_kwargs(name: str, level: str | None) -> dict:
    """The ``default`` entry of the task YAML's lmms_eval_specific_kwargs (its !function
    lines dropped, as lmms-eval's utils read their YAMLs)."""
    import yaml

    rel = LMMS_TASKS[name]["yaml"].format(level=level)
    lines = (_tasks_dir() / rel).read_text().splitlines()
    cfg = yaml.safe_load("\n".join(x for x in lines if "!function" not in x)) or {}
    return dict((cfg.get("lmms_eval_specific_kwargs") or {}).get("default") or {})


def lmms_task_name(p: Problem) -> str:
    """lmms-eval's task name of a problem (mvbench_<task>, video_mmmu_<track>, ...)."""
    from evals.video_benchmarks import get_video_benchmark

    b = get_video_benchmark(p.meta["benchmark"])
    lv = str(p.meta.get("level"))
    return b.lmms_task.format(level=lv, level_lower=lv.lower())


def lmms_prompt(p: Problem) -> str:
    """lmms-eval's doc_to_text of a problem's annotation row."""
    name = p.meta["benchmark"]
    t = _check(name)
    mod = _utils(name)
    level = p.meta.get("level")
    fn = getattr(mod, t["text"].get(level, t["text"]["*"]))
    return fn(copy.deepcopy(p.meta["doc"]), _yaml_kwargs(name, level))


@contextlib.contextmanager
def _no_judge(mod):
    """MMVU's GPT judge unreachable (lmms-eval then keeps its rule-based result)."""
    if not hasattr(mod, "_get_pipeline"):
        yield
        return

    def refuse():
        raise RuntimeError("no LLM judge in the lmms-eval bridge")

    old = mod._get_pipeline
    mod._get_pipeline = refuse
    try:
        yield
    finally:
        mod._get_pipeline = old


def _item_score(name: str, mod, out: dict) -> float:
    v = out[LMMS_TASKS[name]["metric"]]
    if name == "mmvu":
        return float(v["correct"])
    if name == "vsibench":
        return float(v["accuracy"] if "accuracy" in v else v["MRA:.5:.95:.05"])
    if name == "videommmu":
        res = mod.evaluate_videommmu([v])
        return float(res[1]["acc"])
    return float(v["score"])


def lmms_results(p: Problem, completion: str, answer_tag: bool = False) -> tuple[dict, float]:
    """(lmms-eval's process_results output, the item's score) of one completion: the
    completion after lmms-eval's reasoning-tag strip (and, with ``answer_tag``, the last
    <answer> content when there is one, as our grader's answer_tag mode)."""
    from lmms_eval.api.reasoning import strip_reasoning_tags

    from evals.video_graders import answer_tag as tag_of

    name = p.meta["benchmark"]
    mod = _utils(name)
    resp = strip_reasoning_tags(completion, REASONING_TAGS)
    if answer_tag:
        a = tag_of(resp)
        resp = resp if a is None else a
    with _no_judge(mod):
        out = getattr(mod, LMMS_TASKS[name]["results"])(copy.deepcopy(p.meta["doc"]), [resp])
    return out, _item_score(name, mod, out)


def lmms_score(p: Problem, completion: str, answer_tag: bool = False) -> float:
    """lmms-eval's score of one completion (0 / 1; VSI-Bench numeric: MRA)."""
    return lmms_results(p, completion, answer_tag)[1]


# ---------------------------------------------------------------------------- runs


def run_lmms_eval(
    benchmark: str,
    root: str | Path,
    generate: Callable[[str, Any], str],
    *,
    levels: list[str] | None = None,
    n: int | None = None,
    answer_tag: bool = False,
    factor: int | None = None,
    model: str | None = None,
    sampling: dict | None = None,
) -> dict:
    """Evaluate ``generate`` on an lmms-eval video task from a local directory: lmms-eval's
    prompt, our frames, lmms-eval's process_results and aggregation. Returns {"benchmark",
    "tasks": {lmms task: its aggregate}, "samples": [...], "acc", "n", "bridge": {...}}.
    ``sampling``: entries replacing the declared frame sampling's (count, max_pixels, ...)."""
    from evals.video_benchmarks import (
        VIDEO_PLACEHOLDER,
        get_video_benchmark,
        load_frames,
        load_video_benchmark,
    )

    t = _check(benchmark)
    mod = _utils(benchmark)
    b = get_video_benchmark(benchmark)
    probs = load_video_benchmark(benchmark, root, levels=levels, n=n)
    frames_used = b.frames.as_dict() | dict(sampling or {})
    unknown = set(sampling or {}) - set(b.frames.as_dict())
    if unknown:
        raise UserError(
            f"lmms-eval bridge: unknown sampling keys {sorted(unknown)}; known: "
            f"{sorted(b.frames.as_dict())}"
        )
    for p in probs:
        p.meta["sampling"] = dict(frames_used)
    fac = factor or getattr(generate, "factor", 28)
    per_task: dict[str, list] = {}
    samples = []
    for p in probs:
        prompt = lmms_prompt(p)
        completion = generate(VIDEO_PLACEHOLDER + prompt, load_frames(p, factor=fac))
        out, s = lmms_results(p, completion, answer_tag)
        task = lmms_task_name(p)
        per_task.setdefault(task, []).append(out[t["metric"]])
        samples.append(
            {
                "id": p.id,
                "lmms_task": task,
                "level": p.meta.get("level"),
                "prompt": prompt,
                "completion": completion,
                "target": p.answer,
                "score": s,
            }
        )
    agg = getattr(mod, t["aggregate"])
    tasks: dict[str, float | None] = {}
    agg_errors: dict[str, str] = {}
    for k, v in per_task.items():
        try:
            tasks[k] = float(agg(v))
        except (KeyError, ValueError, ZeroDivisionError) as e:
            # e.g. VSI-Bench's aggregate needs all three relative-direction types present
            tasks[k] = None
            agg_errors[k] = f"{type(e).__name__}: {e}"
    return {
        "benchmark": benchmark,
        "tasks": tasks,
        "samples": samples,
        "acc": sum(x["score"] for x in samples) / len(samples),
        "n": len(samples),
        "bridge": {
            "root": str(Path(root).resolve()),
            "levels": levels,
            "n": n,
            "answer_tag": answer_tag,
            "frames": frames_used,
            "generation": b.generation,
            "model": model,
            "aggregate_errors": agg_errors,
            "versions": _versions(),
        },
    }


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("lmms-eval", "torch", "transformers", "av"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def to_eval_records(res: dict, reproduction: str, seed: int) -> list[dict]:
    """One project eval record (benchmark ``lmms_<name>``): acc (the mean item score; VSI's
    numeric items count their MRA), each lmms-eval task's aggregate (``<task>`` as lmms-eval
    reports it: mostly percent), n and the protocol."""
    metrics = {"acc": res["acc"], **{f"lmms:{k}": v for k, v in res["tasks"].items()}}
    br = res["bridge"]
    return [
        {
            "benchmark": f"lmms_{res['benchmark']}",
            "reproduction": reproduction,
            "seed": seed,
            "model": br["model"],
            "n_prompts": res["n"],
            "k": 1,
            "metrics": metrics,
            "headline": "acc",
            "ci": {},
            "protocol": {
                "harness": "lmms-eval",
                "lmms_tasks": sorted(res["tasks"]),
                "root": br["root"],
                "levels": br["levels"],
                "answer_tag": br["answer_tag"],
                "frames": br["frames"],
                "generation": br["generation"],
                "aggregate_errors": br["aggregate_errors"],
                "versions": br["versions"],
            },
        }
    ]


def write_eval(res: dict, out_dir: str | Path, reproduction: str, seed: int) -> list[Path]:
    """eval/lmms_<benchmark>.json and .samples.jsonl; returns the JSON paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for rec in to_eval_records(res, reproduction, seed):
        bench = rec["benchmark"]
        lines = "".join(json.dumps(s, default=str) + "\n" for s in res["samples"])
        (out / f"{bench}.samples.jsonl").write_text(lines)
        p = out / f"{bench}.json"
        p.write_text(json.dumps(rec, indent=2))
        paths.append(p)
    return paths
