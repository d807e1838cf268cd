"""Golden record of the smoke runs: a change of the core's shape keeps every number.

    python scripts/golden.py record OUT [--steps 4] [--repros a,b]   # before the change
    python scripts/golden.py record OUT2                              # after it, same machine
    python scripts/golden.py compare OUT OUT2                         # exit 1 on any difference
    python scripts/golden.py record OUT3 --set rollout.engine=hf_static  # a new default's value

``record`` prepares one smoke SFT start (seed 0), trains every reproduction under
``reproductions/`` from it for ``--steps`` steps (one thread, the smoke profile; a few extra
overrides so that optional paths run, see EXTRA), and writes per reproduction its metrics.jsonl
rows without the timing fields (``*_s``: step_s, wall_cum_s, tokens_per_s, ...) and the SHA-256 of its final
weights. ``compare`` lists every reproduction whose rows or weights differ, with the first
differing step and key; a field that only the second record has (a metric added since, e.g.
the compute accounting's tokens_generated / flops) is named once, not counted as a difference.
A reproduction that cannot run on the smoke profile without an EXTRA entry (its env or task
lives in its home profile: a UserError) is written as skipped and the record goes on; compare
counts it as not identical.

Numbers differ between CPU types (torch.backends.cpu.get_cpu_capability()), so compare records
made on one machine; the record names the machine's capability and refuses a mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# overrides that switch on paths the smoke profile leaves off
SFT_STEPS = 300
EXTRA = {
    "grpo_care": ["model.ref_ema={decay: 0.5, every: 1}"],
    # reproductions of another domain's profile (tiny_tools, tiny_rec), on the smoke model
    "otc_grpo": ["env.name=tools", "env.max_turns=2", "env.params={tools: [calculator]}"],
    "rank_grpo": ["task.name=rec_rank", "task.template=plain"],
    # tiny_geo's and tiny_clinic's tasks (oncoreason's reward needs the records' rationales)
    "gcpo": ["task.name=geo_angles", "task.template=plain"],
    "oncoreason": ["task.name=clinic_mix", "task.template=plain"],
    "pta_grpo": ["task.name=clinic_mix", "task.template=plain"],
    # tiny_code's task (unit tests in the sandbox), tiny_tools' env
    "posterior_grpo": ["task.name=code_fn", "task.template=plain", "rollout.max_new_tokens=16"],
    "process_grpo": ["task.name=code_fn", "task.template=plain", "rollout.max_new_tokens=16"],
    "rest_rl": ["task.name=code_fn", "task.template=plain", "rollout.max_new_tokens=16"],
    "arpo": ["env.name=tools", "env.max_turns=2", "env.params={tools: [calculator]}"],
    "flow_grpo": ["env.name=tools", "env.max_turns=2", "env.params={tools: [calculator]}"],
    "m_grpo": ["env.name=tools", "env.max_turns=2", "env.params={tools: [calculator]}"],
}


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.endswith("_s")}


def _train_reward_models(cfg, res: Path) -> None:
    """The reward models a run's rewards name (reward ``reward_model``), trained for 20 steps
    on the smoke task into <res>/smoke/rm/<name>/seed0 (the place the trainer reads)."""
    from grpo_core import reward_models as RM
    from grpo_core.config import project_root
    from grpo_core.tasks import make_task

    for t in cfg.rewards:
        name = t.params.get("name") if t.name == "reward_model" else None
        d = RM.rm_dir(res, "smoke", name, 0) if name else None
        if d is not None and not (d / "rm.json").exists():
            spec = RM.load_spec(name, project_root() / "config" / "reward_models")
            RM.train_rm(spec.model_copy(update={"steps": 20}), make_task(cfg.task), 0, d, name)


def record(out: Path, steps: int, repros: list[str] | None, sets: list[str] = ()) -> None:
    import torch

    from grpo_core.config import load_config, reproductions_dir
    from grpo_core.prepare import prepare
    from grpo_core.trainer import Trainer

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    res = out / "results"
    names = repros or sorted(
        p.name for p in reproductions_dir().iterdir() if (p / "reproduction.yaml").exists()
    )
    # a longer SFT than smoke's 20 steps, so that groups have mixed rewards (a learning signal)
    base = [
        "run.threads=1",
        f"run.results_dir={res}",
        "workflow.seeded_start=false",
        f"sft.steps={SFT_STEPS}",
        "sft.lr=3e-3",
    ]
    prepare(load_config("grpo", "smoke", base), threads=1, log=lambda *a: None)
    from grpo_core.errors import UserError

    for name in names:
        run = res / "runs" / name
        try:
            over = [*base, f"train.steps={steps}", *EXTRA.get(name, []), *sets]
            cfg = load_config(name, "smoke", over)
            _train_reward_models(cfg, res)
            Trainer(cfg, run).train(progress=False)
        except UserError as e:  # its env / task needs its home profile (no EXTRA for it yet)
            (out / f"{name}.json").write_text(json.dumps({"skipped": str(e)}, indent=1))
            print(f"{name}: skipped (add an EXTRA entry to record it): {e}", flush=True)
            continue
        rows = [_strip(json.loads(x)) for x in (run / "metrics.jsonl").read_text().splitlines()]
        h = hashlib.sha256()
        for f in sorted((run / "checkpoint").glob("*.safetensors")):
            h.update(f.read_bytes())
        (out / f"{name}.json").write_text(
            json.dumps({"rows": rows, "weights_sha256": h.hexdigest()}, indent=1)
        )
        print(f"{name}: {len(rows)} steps, weights {h.hexdigest()[:12]}", flush=True)
    # evaluation of grpo's checkpoint: the task's own eval and a benchmark (tests' gsm8k file)
    from evals.evaluate import evaluate, evaluate_benchmark

    if "grpo" in names:
        ck = res / "runs" / "grpo" / "checkpoint"
        cfg = load_config("grpo", "smoke", [*base, *sets])
        evaluate(cfg, ck, out / "eval_task")
        bcfg = load_config(
            "grpo",
            "smoke",
            [
                *base,
                f"eval.benchmark_paths.gsm8k={ROOT / 'tests' / 'data' / 'gsm8k_test12.jsonl'}",
                "eval.benchmark_max_new_tokens=6",
                "eval.grader_timeout_s=10",
                *sets,
            ],
        )
        evaluate_benchmark(bcfg, ck, out / "eval_bench", "gsm8k", eval_seeds=[0], log=lambda *a: 0)
        ev = {}
        for d in ("eval_task", "eval_bench"):
            for f in sorted((out / d).glob("*.samples.jsonl")):
                rows = [json.loads(x) for x in f.read_text().splitlines()]
                ev[f"{d}/{f.name}"] = [
                    {k: r[k] for k in ("prompt_id", "completion", "score") if k in r} for r in rows
                ]
            for f in sorted((out / d).glob("*.json")):
                ev[f"{d}/{f.name}"] = json.loads(f.read_text()).get("metrics")
        (out / "eval.json").write_text(json.dumps(ev, indent=1))
        print(f"eval: {len(ev)} files", flush=True)
    (out / "machine.json").write_text(
        json.dumps(
            {
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "steps": steps,
                "sft_steps": SFT_STEPS,
            }
        )
    )


def _same(x, y) -> bool:
    """Equal, NaN equal to NaN (a step without a batch logs NaN entropy on both sides)."""
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y))
    return x == y


def compare(a: Path, b: Path) -> int:
    ma, mb = (json.loads((d / "machine.json").read_text()) for d in (a, b))
    if ma != mb:
        print(f"records from different machines or budgets: {ma} vs {mb}")
        return 2
    bad = 0
    if (a / "eval.json").exists():
        ea, eb = (json.loads((d / "eval.json").read_text()) for d in (a, b))
        for k in sorted(set(ea) | set(eb)):
            if not _same(ea.get(k), eb.get(k)):
                print(f"eval {k}: differs")
                bad += 1
    names = sorted({p.stem for p in a.glob("*.json")} - {"machine", "eval"})
    added: set[str] = set()
    for name in names:
        fb = b / f"{name}.json"
        if not fb.exists():
            print(f"{name}: missing in {b}")
            bad += 1
            continue
        ra, rb = json.loads((a / f"{name}.json").read_text()), json.loads(fb.read_text())
        if "skipped" in ra or "skipped" in rb:  # not recorded on one side: not a match
            print(f"{name}: not recorded ({ra.get('skipped') or rb.get('skipped')})")
            bad += 1
            continue
        diff = ""
        for i, (x, y) in enumerate(zip(ra["rows"], rb["rows"])):
            added |= set(y) - set(x)  # fields added since the first record: not compared
            keys = sorted(set(x))
            d = [k for k in keys if not _same(x.get(k), y.get(k))]
            if d:
                diff = f"step {i}: " + ", ".join(f"{k} {x.get(k)} -> {y.get(k)}" for k in d[:4])
                break
        if not diff and len(ra["rows"]) != len(rb["rows"]):
            diff = f"{len(ra['rows'])} vs {len(rb['rows'])} steps"
        if not diff and ra["weights_sha256"] != rb["weights_sha256"]:
            diff = "final weights differ"
        if diff:
            print(f"{name}: {diff}")
            bad += 1
    if added:
        print(f"fields only in {b} (added, not compared): {', '.join(sorted(added))}")
    print(f"{len(names) - bad} of {len(names)} reproductions identical")
    return 1 if bad else 0


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--steps", type=int, default=4)
    r.add_argument("--repros", default="")
    # overrides for every reproduction's run (not the SFT start), e.g. --set rollout.engine=x:
    # a record with a new default's value against one without, before switching the default
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.cmd == "record":
        record(args.out, args.steps, [x for x in args.repros.split(",") if x] or None, args.set)
    else:
        sys.exit(compare(args.a, args.b))


if __name__ == "__main__":
    main()
