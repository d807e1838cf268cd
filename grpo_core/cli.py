"""The `grpo` command: prepare, train, eval, report, lmeval, list, diff, new, rm-train.

Errors caused by input (config, reproduction or component names, dataset rows, checkpoints)
print one line without a traceback; ``--traceback`` shows it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpo_core.errors import UserError, closest

START_ROW = "sft_start"  # the evaluation row of the profile's starting model


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="tiny", help="scale profile (config/profiles/<name>.yaml)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--traceback", action="store_true", help="show tracebacks of input errors")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="grpo", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser(
        "prepare", help="build/convert the profile's base model and SFT warm-start it"
    )
    _common(p)
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="with workflow.seeded_start: the run seed whose start to build (base/seed<S>); "
        "it seeds the initial weights and the SFT data order",
    )
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")

    p = sub.add_parser("train", help="train one reproduction with one seed")
    p.add_argument("reproduction")
    _common(p)
    p.add_argument("--seed", type=int, default=None, help="run seed (same as run.seed=N)")
    p.add_argument(
        "--out", default=None, help="run directory (default results/<profile>/runs/<repro>/seed<N>)"
    )
    p.add_argument(
        "--fresh",
        "--no-resume",
        dest="fresh",
        action="store_true",
        help="start over: an earlier run in the directory is moved aside to <parent>/.replaced/",
    )
    p.add_argument(
        "--replace-changed",
        action="store_true",
        help="a run of another config in the directory is moved aside and trained fresh "
        "(default: refused); a run of the same config resumes (the Snakemake rule uses this)",
    )
    p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        metavar="STEP",
        help="stop after step STEP with a checkpoint (rerun to continue); not part of the config",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--eval",
        action="store_true",
        help="when the run is finished, evaluate its checkpoint in this process (what `grpo "
        "eval` then copies instead of starting its own; evals/train_eval.py)",
    )
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")

    p = sub.add_parser(
        "eval", help=f"evaluate a run's checkpoint (or '{START_ROW}': the base model)"
    )
    p.add_argument("reproduction")
    _common(p)
    p.add_argument("--seed", type=int, default=None, help="run seed (same as run.seed=N)")
    p.add_argument("--model", default=None, help="model directory (default: the run's checkpoint)")
    p.add_argument("--out", default=None, help="output directory (default: <run>/eval)")
    p.add_argument(
        "--benchmark",
        default=None,
        help="real math benchmark(s), comma-separated (gsm8k, math500, aime24, aime25, amc23, "
        "minerva_math, olympiadbench), code benchmarks (humaneval, mbpp) or 'all' for "
        "eval.benchmarks; default: the task's test split",
    )
    p.add_argument(
        "--protocol", default=None, choices=["standard", "paper"], help="default eval.protocol"
    )
    p.add_argument(
        "--eval-seeds", default=None, help="comma-separated eval seeds (default eval.seeds)"
    )
    p.add_argument("overrides", nargs="*")

    p = sub.add_parser(
        "value-model",
        help="train a run's VM-MCTS value model (eval.vm_mcts, rest_rl) on fresh rollouts of "
        "its checkpoint into <run>/value_model",
    )
    p.add_argument("reproduction")
    _common(p)
    p.add_argument("--seed", type=int, default=None, help="run seed (same as run.seed=N)")
    p.add_argument("--model", default=None, help="model directory (default: the run's checkpoint)")
    p.add_argument("--out", default=None, help="output directory (default: <run>/value_model)")
    p.add_argument("overrides", nargs="*")

    p = sub.add_parser(
        "report", help="aggregate results/<profile> into summary.csv, report.md and report.html"
    )
    _common(p)

    p = sub.add_parser(
        "lmeval",
        help="run lm-eval tasks (gsm8k, math500, aime24) on a run's checkpoint (needs .[lmeval])",
    )
    p.add_argument("reproduction")
    _common(p)
    p.add_argument("--seed", type=int, default=None, help="run seed (same as run.seed=N)")
    p.add_argument("--tasks", default="gsm8k", help="comma-separated: gsm8k,math500,aime24")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="TASK=PATH",
        help="a local JSONL file for a task (repeatable); all local = offline",
    )
    p.add_argument(
        "--max-gen-toks",
        type=int,
        required=True,
        help="generation budget per answer (always explicit: lm-eval's default is 256)",
    )
    p.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto")
    p.add_argument("--limit", type=int, default=None, help="first N problems per task")
    p.add_argument("--batch-size", default="8")
    p.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    p.add_argument("--model", default=None, help="checkpoint directory (default: the run's)")
    p.add_argument("--out", default=None, help="output directory (default: <run>/eval)")
    p.add_argument("overrides", nargs="*")

    p = sub.add_parser("list", help="list reproductions: base, tier, status, wave")
    p.add_argument("--traceback", action="store_true")

    p = sub.add_parser(
        "diff",
        help="print the resolved settings in which a reproduction differs from its base",
    )
    p.add_argument("reproduction", nargs="?", default=None)
    p.add_argument("--profile", default="tiny", help="scale profile (config/profiles/<name>.yaml)")
    p.add_argument(
        "--write-readme",
        nargs="?",
        const="all",
        default=None,
        metavar="SLUG|all",
        help="regenerate the settings block of reproductions/<slug>/README.md (tiny profile)",
    )
    p.add_argument("--traceback", action="store_true")

    p = sub.add_parser(
        "rm-train",
        help="train reward model <name> (config/reward_models/<name>.yaml) on the profile's task "
        "into results/<profile>/rm/<name>/seed<S>/",
    )
    p.add_argument("name")
    _common(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the data, the init and the order")
    p.add_argument("--out", default=None, help="directory (default results/<profile>/rm/...)")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value (the task)")

    p = sub.add_parser("new", help="scaffold reproductions/<slug>/")
    p.add_argument("slug")
    p.add_argument("--traceback", action="store_true")
    return ap


def cmd_rm_train(a) -> int:
    import time

    from grpo_core import reward_models as RM
    from grpo_core.config import load_config, project_root
    from grpo_core.runtime import setup_torch
    from grpo_core.tasks import make_task

    spec = RM.load_spec(a.name, project_root() / "config" / "reward_models")
    cfg = load_config(None, a.profile, a.overrides, seed=a.seed)
    setup_torch(cfg, a.threads)
    out = Path(a.out) if a.out else RM.rm_dir(cfg.run.results_dir, a.profile, a.name, a.seed)
    t0 = time.perf_counter()
    meta = RM.train_rm(spec, make_task(cfg.task), a.seed, out, name=a.name)
    m = meta["metrics"]
    print(
        f"reward model {a.name} seed {a.seed}: loss {m['loss_first']:.4f} -> "
        f"{m['loss_last']:.4f} in {time.perf_counter() - t0:.1f} s; {out}"
    )
    print(" ".join(f"{k}={v}" for k, v in m.items() if k.startswith("held")))
    return 0


def cmd_prepare(a) -> int:
    from grpo_core.config import load_config
    from grpo_core.prepare import prepare

    cfg = load_config(None, a.profile, a.overrides, seed=a.seed)
    print(f"prepared {prepare(cfg, a.threads)}")
    return 0


def _ensure_base(cfg, threads) -> None:
    from grpo_core.config import base_dir, prepared_start
    from grpo_core.prepare import prepare

    if prepared_start(cfg) and not (base_dir(cfg) / "model").exists():
        seed = f" --seed {cfg.run.seed}" if cfg.workflow.seeded_start else ""
        print(
            f"no base model at {base_dir(cfg) / 'model'}: preparing it "
            f"(grpo prepare --profile {cfg.profile}{seed})"
        )
        prepare(cfg, threads)


def cmd_train(a) -> int:
    from grpo_core.config import load_config, run_dir
    from grpo_core.trainer import Trainer

    cfg = load_config(a.reproduction, a.profile, _run_overrides(a), seed=a.seed)
    _ensure_base(cfg, a.threads)
    out = run_dir(cfg)
    done = None
    if not a.fresh:  # a finished run of this config: say so without loading anything
        import contextlib
        import os

        from grpo_core.rundir import RunLock, finished_step

        # rank 0 alone locks (under torchrun every rank runs this before the process group
        # exists; another rank's brief lock here could meet rank 0's trainer lock)
        main_rank = int(os.environ.get("RANK", "0")) == 0
        with RunLock(out) if main_rank else contextlib.nullcontext():
            done = finished_step(out, cfg)
    if done is None:
        trainer = Trainer(
            cfg, out, resume=not a.fresh, if_changed="replace" if a.replace_changed else "error"
        )
        if trainer.finished:
            trainer.release()
            done = trainer.step
    if done is not None:
        print(
            f"already finished: {out} (step {done} of {cfg.train.steps}, same config); "
            "nothing to do (--fresh retrains it)"
        )
        if a.eval:
            _eval_in_train(a, out)
        return 0
    if trainer.step:
        print(f"resuming {out} from step {trainer.step}")
    trainer.train(progress=not a.no_progress, stop_at=a.stop_at)
    if trainer._stop:
        print(f"interrupted: checkpoint saved at step {trainer.step} in {out}/checkpoint")
        return 128 + (trainer._stop_signal or 2)  # SIGINT 130, SIGTERM 143
    if not trainer.finished:
        print(f"stopped at step {trainer.step} (--stop-at): rerun to continue {out}")
        return 0
    print(f"done: {out}")
    if a.eval:
        del trainer  # (train released the run's lock)
        _eval_in_train(a, out)
    return 0


def _eval_in_train(a, out) -> None:
    """``grpo train --eval``: the finished run's task evaluation, in this process, with the
    config `grpo eval` resolves for the same arguments (evals/train_eval.py)."""
    import gc
    import os

    from evals.train_eval import evaluate_in_train
    from grpo_core.config import load_config

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print("no in-process evaluation under torchrun; `grpo eval` evaluates the run")
        return
    gc.collect()  # the trainer's model, optimizer and engine, before the evaluation's
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    # resolved afresh (training may have filled in fields): what `grpo eval` resolves for the
    # same overrides and --threads, so that its key matches
    cfg = load_config(a.reproduction, a.profile, _run_overrides(a), seed=a.seed)
    evaluate_in_train(cfg, out, a.threads)


def _run_overrides(a) -> list[str]:
    """A train command's config overrides: its own, then --out (the run directory) and
    --threads."""
    ov = list(a.overrides) + ([f"run.output_dir={a.out}"] if a.out else [])
    return ov + ([f"run.threads={a.threads}"] if a.threads else [])


def cmd_eval(a) -> int:
    from grpo_core.config import load_config, resolve_model_path, run_dir

    start = a.reproduction == START_ROW
    overrides = list(a.overrides) + ([f"run.threads={a.threads}"] if a.threads else [])
    cfg = load_config(None if start else a.reproduction, a.profile, overrides, seed=a.seed)
    if start:
        cfg.reproduction = START_ROW
        _ensure_base(cfg, a.threads)
    # the start: base/model, or base/seed<S>/model with workflow.seeded_start (--seed S)
    model = a.model or (resolve_model_path(cfg) if start else run_dir(cfg) / "checkpoint")
    if not Path(model).exists():
        raise UserError(
            f"no model at {model}: train it first (grpo train {a.reproduction} --profile {a.profile} --seed {cfg.run.seed})"
        )
    out = a.out or run_dir(cfg) / "eval"
    if not start and not a.benchmark and not a.model and not a.out:
        from evals.train_eval import take_stashed  # (imports no torch)

        res = take_stashed(cfg, run_dir(cfg), out)
        if res is not None:  # the train job evaluated this checkpoint: copied
            m = res["metrics"]
            print(
                f"{res['benchmark']}: "
                + ", ".join(f"{k}={v:.3f}" for k, v in m.items())
                + f" (evaluated by the train job: {run_dir(cfg) / '.train_eval'})"
            )
            return 0
    if a.benchmark:
        from evals.evaluate import evaluate_benchmark

        names = cfg.eval.benchmarks if a.benchmark == "all" else a.benchmark.split(",")
        if not names:
            raise UserError("--benchmark all: the profile lists no eval.benchmarks")
        seeds = None
        if a.eval_seeds:
            try:
                seeds = [int(x) for x in a.eval_seeds.split(",")]
            except ValueError:
                raise UserError(
                    f"--eval-seeds: comma-separated integers, got {a.eval_seeds!r}"
                ) from None
        for name in names:
            res = evaluate_benchmark(
                cfg,
                model,
                out,
                name.strip(),
                protocol=a.protocol,
                eval_seeds=seeds,
                reproduction=cfg.reproduction,
                seed=cfg.run.seed,
                threads=a.threads,
            )
            m, ci = res["metrics"], res["ci"]
            print(
                f"{res['benchmark']} ({res['n_prompts']} problems, k={res['k']}, eval seeds "
                f"{res['eval_seeds']}): "
                + ", ".join(
                    f"{k}={v:.3f}" + (f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if k in ci else "")
                    for k, v in m.items()
                )
                + f"; grader timeouts {res['grader']['timeouts']}"
            )
        return 0
    from evals.evaluate import evaluate

    res = evaluate(
        cfg, model, out, reproduction=cfg.reproduction, seed=cfg.run.seed, threads=a.threads
    )
    m = res["metrics"]
    print(f"{res['benchmark']}: " + ", ".join(f"{k}={v:.3f}" for k, v in m.items()))
    return 0


def cmd_value_model(a) -> int:
    from evals.vm_mcts import train_value_model
    from grpo_core.config import load_config, run_dir
    from grpo_core.runtime import setup_torch

    overrides = list(a.overrides) + ([f"run.threads={a.threads}"] if a.threads else [])
    cfg = load_config(a.reproduction, a.profile, overrides, seed=a.seed)
    model = a.model or run_dir(cfg) / "checkpoint"
    if not Path(model).exists():
        raise UserError(
            f"no model at {model}: train it first (grpo train {a.reproduction} --profile "
            f"{a.profile} --seed {cfg.run.seed})"
        )
    setup_torch(cfg, a.threads)
    train_value_model(cfg, model, a.out)
    return 0


def cmd_report(a) -> int:
    from evals.aggregate import aggregate
    from evals.report import write_report
    from grpo_core.config import load_config

    cfg = load_config(None, a.profile)
    d = Path(cfg.run.results_dir) / a.profile
    if not (d / "runs").exists():
        raise UserError(f"no runs under {d}/runs: train and evaluate first")
    aggregate(d)
    md = write_report(d)
    print(f"wrote {md} and {md.with_suffix('.html')}")
    return 0


def cmd_lmeval(a) -> int:
    import json

    from evals.lm_eval_bridge import run_lm_eval, write_eval
    from grpo_core.config import load_config, resolve_model_path, run_dir

    start = a.reproduction == START_ROW
    cfg = load_config(None if start else a.reproduction, a.profile, list(a.overrides), seed=a.seed)
    if start:
        cfg.reproduction = START_ROW
    # the start: base/model, or base/seed<S>/model with workflow.seeded_start (--seed S)
    model = a.model or (resolve_model_path(cfg) if start else run_dir(cfg) / "checkpoint")
    if not Path(model).exists():
        raise UserError(f"no model at {model}: train it first, or give --model DIR")
    data = {}
    for d in a.data:
        task, sep, path = d.partition("=")
        if not sep or not task or not path:
            raise UserError(f"--data {d!r}: expected TASK=PATH, e.g. gsm8k=data/gsm8k/test.jsonl")
        data[task] = path
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    bs = int(a.batch_size) if a.batch_size.isdigit() else a.batch_size
    res = run_lm_eval(
        [t for t in a.tasks.split(",") if t],
        model,
        max_gen_toks=a.max_gen_toks,
        data_files=data,
        backend=a.backend,
        device=cfg.run.device,
        dtype=cfg.run.dtype,
        batch_size=bs,
        limit=a.limit,
        apply_chat_template=a.chat,
        seed=cfg.run.seed,
    )
    out = a.out or run_dir(cfg) / "eval"
    for p in write_eval(res, out, reproduction=cfg.reproduction, seed=cfg.run.seed):
        m = json.loads(p.read_text())["metrics"]
        print(f"{p}: " + ", ".join(f"{k}={v:.3f}" for k, v in m.items()))
    return 0


LIST_WIDTH = 100  # `grpo list` fits a 100-column terminal; details are in the READMEs


def cmd_list(a) -> int:
    from grpo_core.config import list_reproductions, reproduction_base, reproduction_meta

    head = ("reproduction", "base", "tier", "status", "wave")
    rows = []
    for slug in list_reproductions():
        meta = reproduction_meta(slug)
        rows.append(
            (
                slug,
                reproduction_base(slug) or "-",
                str(meta.get("tier", "?")).split()[0] if meta.get("tier") else "?",
                " ".join(str(meta.get("status", "?")).split()),
                str(meta.get("wave", 0)),
            )
        )
    w = [max(len(r[i]) for r in [*rows, head]) for i in range(5)]
    # the status column takes what the others leave of LIST_WIDTH
    w[3] = min(w[3], LIST_WIDTH - (w[0] + w[1] + w[2] + w[4] + 8))

    def fit(text: str, n: int) -> str:
        return text if len(text) <= n else text[: n - 3] + "..."

    for r in [head, *rows]:
        cells = [fit(c, w[i]) for i, c in enumerate(r)]
        print("  ".join(f"{c:<{w[i]}}" for i, c in enumerate(cells)).rstrip())
    return 0


def cmd_diff(a) -> int:
    from grpo_core.config import (
        README_PROFILE,
        config_diff,
        format_diff,
        list_reproductions,
        reproductions_dir,
        write_readme_block,
    )

    if a.write_readme is not None:
        if a.profile != README_PROFILE:
            raise UserError(
                f"--write-readme: the README blocks come from --profile {README_PROFILE}"
            )
        target = a.write_readme if a.reproduction is None else a.reproduction
        slugs = list_reproductions() if target == "all" else [target]
        for slug in slugs:
            if not (reproductions_dir() / slug / "reproduction.yaml").exists():
                raise UserError(
                    f"unknown reproduction {slug!r}; {closest(slug, list_reproductions())}"
                )
        for slug in slugs:
            changed = write_readme_block(slug)
            print(f"{'updated' if changed else 'unchanged'}: reproductions/{slug}/README.md")
        return 0
    if a.reproduction is None:
        raise UserError("grpo diff: name a reproduction (grpo diff SLUG [--profile P])")
    lines = format_diff(config_diff(a.reproduction, a.profile))
    print("\n".join(lines) if lines else f"{a.reproduction}: no differences from its base")
    return 0


SCAFFOLD_YAML = """# {slug}: a diff over its base reproduction. The loader layers core defaults < profile <
# the base (reproductions/grpo/reproduction.yaml and its profile_overrides.<profile>; another
# reproduction with `base: <slug>`) < this file (+ its profile_overrides) < command line.
# Everything not written here is the base's, KL (grpo: loss.kl.beta 0.04) included; `meta` is
# not inherited. `grpo diff {slug} --profile tiny` prints what this file changes.
# base: grpo
meta:
  title: "{slug}"
  paper: ""          # citation / arXiv id
  tier: A
  status: planned    # planned | ran | partial | inconclusive | reproduced | not-reproduced
  signature: ""      # the effect a run must show against grpo

# Only the keys that differ from the base. Components are looked up by name in grpo_core
# (advantages.py, losses.py, rewards.py, samplers.py); add one there only if the paper needs it.
# A paper without a KL penalty says so: loss: {{kl: {{beta: 0.0}}}}  # <source>

profile_overrides:
  paper: {{}}
"""

SCAFFOLD_README = """# {slug}

- **Paper:**
- **Mechanism:** (two or three sentences and one formula)
- **Settings used:** the generated block below (`grpo diff --write-readme {slug}` after editing
  reproduction.yaml); why each value, with its source
- **Paper's headline claim:**
- **Reproduced at tiny scale:**
- **Deviations:**
"""


def cmd_new(a) -> int:
    import re

    from grpo_core.config import reproductions_dir

    if not re.fullmatch(r"[a-z][a-z0-9_]*", a.slug):
        raise UserError(
            f"slug {a.slug!r}: use lowercase letters, digits and underscores (e.g. my_variant)"
        )
    d = reproductions_dir() / a.slug
    if d.exists():
        raise UserError(f"{d} already exists")
    d.mkdir(parents=True)
    (d / "reproduction.yaml").write_text(SCAFFOLD_YAML.format(slug=a.slug))
    (d / "README.md").write_text(SCAFFOLD_README.format(slug=a.slug))
    from grpo_core.config import write_readme_block

    write_readme_block(a.slug)
    print(f"created {d}/reproduction.yaml and README.md; try: grpo train {a.slug} --profile smoke")
    return 0


COMMANDS = {
    "prepare": cmd_prepare,
    "train": cmd_train,
    "eval": cmd_eval,
    "value-model": cmd_value_model,
    "report": cmd_report,
    "lmeval": cmd_lmeval,
    "list": cmd_list,
    "diff": cmd_diff,
    "new": cmd_new,
    "rm-train": cmd_rm_train,
}


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    # config overrides (key.sub=value) may come anywhere on the line
    bad = [x for x in extra if "=" not in x or x.startswith("-")]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        if not hasattr(args, "overrides"):
            ap.error(f"'{args.cmd}' takes no config overrides: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    try:
        return COMMANDS[args.cmd](args)
    except UserError as e:
        if args.traceback:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, unwritable or missing directory: one line, no traceback
        if args.traceback or args.cmd not in ("train", "eval", "prepare", "report", "value-model"):
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
