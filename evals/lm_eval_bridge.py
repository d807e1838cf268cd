"""Run lm-evaluation-harness tasks on a checkpoint, as an outside reference for our own scores.

    from evals.lm_eval_bridge import run_lm_eval, write_eval
    res = run_lm_eval(["gsm8k"], "results/tiny/runs/grpo/seed0/checkpoint", max_gen_toks=512,
                      data_files={"gsm8k": "../shared/data/math/gsm8k/test.jsonl"})
    write_eval(res, "results/tiny/runs/grpo/seed0/eval", reproduction="grpo", seed=0)

or ``grpo lmeval grpo --profile tiny --tasks gsm8k --data gsm8k=PATH --max-gen-toks 512``.

- lm-eval 0.4.x through its Python API (``lm_eval.simple_evaluate``), the ``hf`` backend on a
  local checkpoint directory, or ``vllm`` when it is installed and the device is a GPU
  (``backend="auto"``). Install with ``pip install -e .[lmeval]``.
- ``max_gen_toks`` is a required argument and goes to both the task's generation kwargs and the
  model: lm-eval's vllm (and hf) backends otherwise stop every generation at 256 tokens without
  a word, which silently zeroes long chain-of-thought answers.
- Tasks: ``gsm8k`` (lm-eval's gsm8k: strict-match and flexible-extract), ``math500``
  (lm-eval's hendrycks_math500: 0-shot, exact_match after MATH's string normalisation; the
  gold answer is the last \\boxed{} of ``solution``) and ``aime24``. Each runs through a
  task config that this module writes (``include:`` of lm-eval's own YAML, so prompts, filters
  and metrics stay lm-eval's), pointing ``dataset_kwargs.data_files`` at a local JSONL file when
  one is given; with only local files the run is offline (HF_DATASETS_OFFLINE, HF_HUB_OFFLINE).
  Local files may use the field names of the project's reference copies (aime24: problem /
  answer); they are mapped to the names lm-eval's task reads.
- :func:`to_eval_records` / :func:`write_eval` convert lm-eval's results into the project's
  eval JSON (``eval/lmeval_<task>.json``: benchmark, reproduction, seed, metrics, ci, protocol)
  so that evals.aggregate and the report pick them up beside our own benchmarks. Metric names
  are ``<metric>:<filter>`` (``exact_match:flexible-extract``); the filter "none" is dropped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from grpo_core.errors import UserError


@dataclass(frozen=True)
class BridgeTask:
    lm_task: str  # lm-eval's task name
    yaml: str  # its config, relative to lm_eval/tasks
    split: str  # the split lm-eval evaluates (test_split)
    # fields lm-eval reads -> the field of a local file to copy them from, when absent
    fields: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()  # fields a local file must have (after the mapping)


TASKS: dict[str, BridgeTask] = {
    "gsm8k": BridgeTask("gsm8k", "gsm8k/gsm8k.yaml", "test", required=("question", "answer")),
    # hendrycks_math500, not minerva_math500: the latter's utils demand
    # antlr4-python3-runtime==4.11, which conflicts with math-verify's 4.13 (a project dependency)
    "math500": BridgeTask(
        "hendrycks_math500",
        "hendrycks_math/hendrycks_math500.yaml",
        "test",
        required=("problem", "solution"),
    ),
    "aime24": BridgeTask(
        "aime24",
        "aime/aime24.yaml",
        "train",
        fields={"Problem": "problem", "Answer": "answer"},
        required=("Problem", "Answer"),
    ),
}

HEADLINE = {  # the metric the report leads with, per task
    "gsm8k": "exact_match:flexible-extract",
    "math500": "exact_match",
    "aime24": "exact_match",
}


def _require_lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise UserError(
            "the lm-eval bridge needs lm-eval: pip install -e '.[lmeval]' (lm-eval==0.4.13)"
        ) from None
    return lm_eval


def _lm_eval_tasks_dir() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        _require_lm_eval()
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def _check_task(name: str) -> BridgeTask:
    if name not in TASKS:
        raise UserError(f"lm-eval bridge: unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def _local_copy(task: str, bt: BridgeTask, src: Path, work: Path) -> Path:
    """A JSONL copy of a local data file with the fields lm-eval's task reads."""
    if not src.is_file():
        raise UserError(f"lm-eval bridge: data file for {task} not found: {src}")
    rows = []
    for i, line in enumerate(src.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{src}:{i + 1}: not a JSON object ({e.msg})") from None
        for dst, from_ in bt.fields.items():
            if dst not in row and from_ in row:
                row[dst] = row[from_]
        missing = [f for f in bt.required if f not in row]
        if missing:
            raise UserError(
                f"{src}:{i + 1}: task {task} needs the fields {', '.join(bt.required)}; "
                f"this row lacks {', '.join(missing)}"
            )
        rows.append(row)
    if not rows:
        raise UserError(f"lm-eval bridge: {src} holds no rows")
    out = work / f"{task}.{bt.split}.jsonl"
    out.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return out


def write_task_configs(
    tasks: list[str],
    work_dir: Path,
    data_files: dict[str, str | Path] | None = None,
    num_fewshot: dict[str, int] | None = None,
) -> dict[str, str]:
    """Write one task YAML per task under work_dir; return {our name: the lm-eval task name}."""
    data_files = {k: Path(v) for k, v in (data_files or {}).items()}
    unknown = set(data_files) - set(tasks)
    if unknown:
        raise UserError(f"lm-eval bridge: data files given for tasks not run: {sorted(unknown)}")
    work_dir.mkdir(parents=True, exist_ok=True)
    base = _lm_eval_tasks_dir()
    names = {}
    for t in tasks:
        bt = _check_task(t)
        name = f"grpo_{t}"
        cfg: dict[str, Any] = {"include": str(base / bt.yaml), "task": name, "tag": []}
        if t in data_files:
            local = _local_copy(t, bt, data_files[t].resolve(), work_dir)
            cfg |= {
                "dataset_path": "json",
                "dataset_name": None,
                "dataset_kwargs": {"data_files": {bt.split: str(local)}},
                "test_split": bt.split,
                "training_split": None,
                "validation_split": None,
            }
            if t == "gsm8k":  # its few-shot examples come from the train split, absent here
                cfg |= {"fewshot_split": None, "num_fewshot": 0}
        if num_fewshot and t in num_fewshot:
            if num_fewshot[t] and t == "gsm8k" and t in data_files:
                raise UserError(
                    "lm-eval bridge: gsm8k few-shot examples come from its train split; with a "
                    "local test file only, use num_fewshot 0"
                )
            cfg["num_fewshot"] = num_fewshot[t]
        (work_dir / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        names[t] = name
    return names


def _backend(backend: str, device: str) -> str:
    if backend == "auto":
        has_vllm = importlib.util.find_spec("vllm") is not None
        return "vllm" if has_vllm and device.startswith("cuda") else "hf"
    if backend not in ("hf", "vllm"):
        raise UserError(f"lm-eval bridge: backend {backend!r}; use hf, vllm or auto")
    return backend


def run_lm_eval(
    tasks: list[str],
    model_dir: str | Path | None = None,
    *,
    max_gen_toks: int,
    data_files: dict[str, str | Path] | None = None,
    backend: str = "auto",
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int | str = 8,
    limit: int | None = None,
    num_fewshot: dict[str, int] | None = None,
    apply_chat_template: bool = False,
    seed: int = 0,
    work_dir: str | Path | None = None,
    lm: Any = None,
) -> dict:
    """Run lm-eval's tasks on a checkpoint; return lm-eval's results dict (with "samples") plus
    a "bridge" entry (task names, backend, max_gen_toks, data files, versions).

    ``lm`` (an lm_eval.api.model.LM) replaces the checkpoint; the tests use it to feed fixed
    completions."""
    if not isinstance(max_gen_toks, int) or max_gen_toks < 1:
        raise UserError(
            f"lm-eval bridge: max_gen_toks must be a positive int, got {max_gen_toks!r}"
        )
    if not tasks:
        raise UserError("lm-eval bridge: no tasks given; known: " + ", ".join(TASKS))
    for t in tasks:
        _check_task(t)
    lm_eval = _require_lm_eval()
    from lm_eval.tasks import TaskManager

    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="grpo_lmeval_"))
    names = write_task_configs(tasks, work, data_files, num_fewshot)
    tm = TaskManager(include_path=str(work), include_defaults=False)
    kind = "custom"
    if lm is None:
        if model_dir is None or not Path(model_dir).exists():
            raise UserError(f"lm-eval bridge: no checkpoint at {model_dir}")
        kind = _backend(backend, device)
        margs: dict[str, Any] = {"pretrained": str(model_dir), "dtype": dtype}
        if kind == "hf":
            margs["device"] = device
        else:
            margs |= {"max_gen_toks": max_gen_toks, "seed": seed}
        model: Any = kind
    else:
        margs, model = None, lm
    # every dataset local: nothing may reach for the Hub (nor hang trying)
    offline = set(data_files or {}) >= set(tasks)
    with _offline(offline):
        res = lm_eval.simple_evaluate(
            model=model,
            model_args=margs,
            tasks=list(names.values()),
            batch_size=batch_size,
            limit=limit,
            gen_kwargs={"max_gen_toks": max_gen_toks},
            task_manager=tm,
            apply_chat_template=apply_chat_template,
            log_samples=True,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    if res is None:  # non-zero ranks under a distributed launcher
        return {}
    res = dict(res)
    res["bridge"] = {
        "tasks": names,
        "backend": kind,
        "model": None if model_dir is None else str(model_dir),
        "max_gen_toks": max_gen_toks,
        "data_files": {k: str(Path(v).resolve()) for k, v in (data_files or {}).items()},
        "limit": limit,
        "apply_chat_template": apply_chat_template,
        "seed": seed,
        "versions": _versions(),
    }
    return res


@contextlib.contextmanager
def _offline(on: bool):
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE for the duration of a run, also in datasets and
    huggingface_hub when they are already imported (both read the variables at import)."""
    if not on:
        yield
        return
    import datasets.config as dcfg
    import huggingface_hub.constants as hcst

    env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    attrs = [(dcfg, "HF_HUB_OFFLINE"), (dcfg, "HF_DATASETS_OFFLINE"), (hcst, "HF_HUB_OFFLINE")]
    old = [getattr(m, a, None) for m, a in attrs]
    os.environ.update({k: "1" for k in env})
    for m, a in attrs:
        setattr(m, a, True)
    try:
        yield
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for (m, a), v in zip(attrs, old):
            setattr(m, a, v)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("lm-eval", "torch", "transformers", "datasets", "vllm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _metric_name(key: str) -> tuple[str, bool] | None:
    """lm-eval's "exact_match,flexible-extract" -> ("exact_match:flexible-extract", is_stderr)."""
    if "," not in key:
        return None
    metric, filt = key.split(",", 1)
    stderr = metric.endswith("_stderr")
    metric = metric.removesuffix("_stderr")
    return (metric if filt == "none" else f"{metric}:{filt}"), stderr


def to_eval_records(res: dict, reproduction: str, seed: int) -> list[dict]:
    """One project eval record per task (benchmark ``lmeval_<task>``): metrics, a normal 95% CI
    from lm-eval's stderr, n, and the protocol."""
    bridge = res["bridge"]
    out = []
    for ours, name in bridge["tasks"].items():
        r = res["results"][name]
        metrics, ci = {}, {}
        for key, v in r.items():
            m = _metric_name(key)
            if m is None or not isinstance(v, int | float):
                continue
            if not m[1]:
                metrics[m[0]] = float(v)
        for key, v in r.items():
            m = _metric_name(key)
            if m and m[1] and isinstance(v, int | float) and m[0] in metrics:
                mu = metrics[m[0]]
                ci[m[0]] = [mu - 1.96 * float(v), mu + 1.96 * float(v)]
        n = res.get("n-samples", {}).get(name, {}).get("effective")
        cfg = res.get("configs", {}).get(name, {})
        out.append(
            {
                "benchmark": f"lmeval_{ours}",
                "reproduction": reproduction,
                "seed": seed,
                "model": bridge["model"],
                "n_prompts": n,
                "k": 1,
                "metrics": metrics,
                "headline": HEADLINE.get(ours),
                "ci": ci,
                "protocol": {
                    "harness": "lm-eval",
                    "lm_eval_task": TASKS[ours].lm_task,
                    "backend": bridge["backend"],
                    "max_gen_toks": bridge["max_gen_toks"],
                    "generation_kwargs": cfg.get("generation_kwargs"),
                    "num_fewshot": cfg.get("num_fewshot"),
                    "data_file": bridge["data_files"].get(ours),
                    "limit": bridge["limit"],
                    "apply_chat_template": bridge["apply_chat_template"],
                    "seed": bridge["seed"],
                    "versions": bridge["versions"],
                },
            }
        )
    return out


def write_eval(res: dict, out_dir: str | Path, reproduction: str, seed: int) -> list[Path]:
    """eval/lmeval_<task>.json (+ .samples.jsonl: prompt, completion, filtered answer per
    filter, target, scores) per task; returns the JSON paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for rec in to_eval_records(res, reproduction, seed):
        bench = rec["benchmark"]
        name = res["bridge"]["tasks"][bench.removeprefix("lmeval_")]
        lines = []
        for s in res.get("samples", {}).get(name, []):
            lines.append(
                json.dumps(
                    {
                        "doc_id": s.get("doc_id"),
                        "filter": s.get("filter"),
                        "prompt": (s.get("arguments") or [[None]])[0][0],
                        "completion": (s.get("resps") or [[None]])[0][0],
                        "answer": (s.get("filtered_resps") or [None])[0],
                        "target": s.get("target"),
                        "scores": {k: s[k] for k in s.get("metrics", []) if k in s},
                    },
                    default=str,
                )
                + "\n"
            )
        (out / f"{bench}.samples.jsonl").write_text("".join(lines))
        p = out / f"{bench}.json"
        p.write_text(json.dumps(rec, indent=2))
        paths.append(p)
    return paths
