# The workflow: prepare model -> train (reproduction x seed) -> evaluate -> aggregate -> report.
#
#   snakemake --cores 2                                   # default: the tiny profile
#   snakemake --cores 2 --config profile=smoke            # CI-sized
#   snakemake --cores all --config profile=tiny reproductions=[grpo,dapo] seeds=[0,1]
#   snakemake --profile profiles/slurm --config profile=paper      # on a SLURM cluster
#   snakemake --cores 2 --config ablate=dapo              # + dapo's leave-one-out ablations
#
# What runs for a profile (reproductions, seeds) comes from config/profiles/<profile>.yaml
# (its `workflow:` block); --config reproductions=... / seeds=... override it.

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))
from grpo_core.config import (
    RUN_REF,
    ablation_names,
    expand_reproductions,
    home_profiles,
    load_config,
)

PROFILE = str(config.get("profile", "tiny"))
_base_cfg = load_config(None, PROFILE)
_wf = _base_cfg.workflow


def _as_list(v):
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return [x for x in str(v).strip("[]").replace(" ", "").split(",") if x]


# group names expand: wave1 = grpo + every reproduction with meta.wave 1; all = every one
REPROS = expand_reproductions(_as_list(config.get("reproductions", _wf.reproductions)))
# leave-one-out ablations (--config ablate=dapo or ablate=[dapo,gspo]): the reproduction and each
# <reproduction>-no_<part> (grpo_core.config.ablation_parts: one part of its diff set back to
# its base's values); the report shows each one's delta vs the full reproduction
for _a in _as_list(config.get("ablate", [])):
    REPROS += [r for r in [_a, *ablation_names(_a, PROFILE)] if r not in REPROS]
# a run name: a reproduction, or an ablation <reproduction>-no_<part>
RUN_NAME = r"[a-z0-9_]+(-no_[a-z0-9_]+)?"
SEEDS = [int(s) for s in _as_list(config.get("seeds", _wf.seeds))]
THREADS = int(config.get("train_threads", _wf.train_threads))
PREPARE_THREADS = int(config.get("prepare_threads", _wf.prepare_threads))
BENCH = _base_cfg.task.name
# real math benchmarks (eval.benchmarks of the profile; the tiny profile has none): one job per
# (reproduction, seed, benchmark, eval seed), merged over eval seeds into eval/<label>.json
EV = _base_cfg.eval
MATH = [str(b) for b in _as_list(config.get("benchmarks", EV.benchmarks))]
EVAL_SEEDS = [int(s) for s in _as_list(config.get("eval_seeds", EV.seeds))]
LABEL = {b: (b if EV.protocol == "standard" else f"{b}-{EV.protocol}") for b in MATH}
RES = f"{_base_cfg.run.results_dir}/{PROFILE}"
GRPO = "python -m grpo_core.cli"
# GPU jobs (workflow.gpus in the profile): resources for the SLURM executor (tasks=0: no
# --ntasks-per-gpu, which would start the command once per GPU); with several GPUs training runs
# data parallel under torchrun.
GPUS = int(config.get("gpus", _wf.gpus))
JOB_RES = dict(mem_mb=_wf.mem_mb, runtime=_wf.runtime_min) | (dict(gpu=GPUS, tasks=0) if GPUS else {})
TRAIN = f"torchrun --standalone --nproc-per-node {GPUS} -m grpo_core.cli" if GPUS > 1 else GRPO
# the train job evaluates its finished run in process (evals/train_eval.py): the evaluate job
# then copies that result instead of paying its own start-up (~7 s of a ~7.5 s tiny eval job);
# not under torchrun
TRAIN_EVAL = " --eval" if GPUS <= 1 else ""


def config_hash(wildcards):
    """The hash of the resolved training config (grpo_core.rundir.config_hash, the one the run
    directory's run.json holds): a params rerun trigger (code changes do not retrain). Values
    equal to the defaults do not count, so a new option with a default leaves runs valid; meta,
    eval and workflow settings (and run.threads / paths) do not change training and do not
    count. When it changes, the train job starts that run fresh (--replace-changed: the old run
    directory is moved aside to runs/<repro>/.replaced/); when it does not, the job resumes an
    interrupted run or leaves a finished one as it is."""
    from grpo_core.rundir import config_hash as _hash

    return _hash(load_config(wildcards.repro, PROFILE, seed=int(wildcards.seed)))


START = "sft_start"
# workflow.seeded_start (tiny, tiny_cot, smoke): seed s trains and evaluates from its own SFT
# start base/seed<s>/model (`grpo prepare --seed s`), and sft_start is evaluated per seed; else
# one start base/model serves every seed and sft_start is evaluated once (seed 0).
SEEDED = bool(_wf.seeded_start)
START_SEEDS = SEEDS if SEEDED else [0]


def base_model(seed):
    """The starting model of run seed ``seed``."""
    return f"{RES}/base/seed{seed}/model" if SEEDED else f"{RES}/base/model"

for _r in REPROS:  # fail at parse time, with the closest names, on a typo
    load_config(_r, PROFILE)

# Home profiles: on the default profile, a reproduction whose meta.profile names another
# tiny-scale profile (its own task and warm start, e.g. rank_grpo -> tiny_rec) runs there, with
# that profile's grpo as its baseline, as a module of this same Snakefile (its rules prefixed
# <profile>_, its results under results/<profile>/); `all` then also wants that profile's report.
# A module itself runs only what it was given (config _home_of).
HOMES = {} if config.get("_home_of") else home_profiles(REPROS, PROFILE)
REPROS = HOMES.pop(PROFILE, REPROS)
HOME_OUT = []
for _p, _names in HOMES.items():
    for _r in _names:
        load_config(_r, _p)
    _res = f"{load_config(None, _p).run.results_dir}/{_p}"
    HOME_OUT += [f"{_res}/summary.csv", f"{_res}/report.md", f"{_res}/report.html"]
    print(f"note: {', '.join(_names)} run in their home profile {_p} ({_res})", file=sys.stderr)
# the profiles with a module block at the end of this file (a module's name must be written out)
MODULE_PROFILES = {
    "tiny_rec", "tiny_code", "tiny_geo", "tiny_agent", "tiny_tools", "tiny_search", "tiny_video",
    "tiny_cot", "tiny_urpo", "tiny_clinic", "tiny_video_com", "tiny_gui",
}
_NO_MODULE = sorted(set(HOMES) - MODULE_PROFILES)
if _NO_MODULE:
    raise ValueError(
        f"home profile(s) {_NO_MODULE} (a reproduction's meta.profile) have no module block in "
        "the Snakefile: add one like tiny_rec's at its end and name it in MODULE_PROFILES"
    )

if "grpo" not in REPROS:
    print(f"note: 'grpo' is not among the reproductions; deltas vs grpo will be empty", file=sys.stderr)


AGG_INPUT = [
    *[f"{RES}/runs/{r}/seed{s}/eval/{BENCH}.json" for r in REPROS for s in SEEDS],
    *[f"{RES}/runs/{r}/seed{s}/train.done" for r in REPROS for s in SEEDS],
    *[f"{RES}/runs/{START}/seed{s}/eval/{BENCH}.json" for s in START_SEEDS],
    *[f"{RES}/runs/{r}/seed{s}/eval/{LABEL[b]}.json" for r in REPROS for s in SEEDS for b in MATH],
    *[f"{RES}/runs/{START}/seed{s}/eval/{LABEL[b]}.json" for s in START_SEEDS for b in MATH],
]
# summary.csv is committed, the runs are not: without .snakemake metadata (a fresh clone, a copied
# results folder) Snakemake takes an existing summary.csv as up to date even when the runs it
# needs are missing (missing intermediate files do not trigger reruns), and `snakemake --config
# profile=tiny_agent` on a fresh clone would train nothing. The local-only marker, named by the
# hash of the requested inputs, is missing on a fresh clone and whenever reproductions, seeds or
# benchmarks change, so aggregate (and everything it needs) runs then (rule report asks for it:
# Snakemake checks a job only for the outputs something asks for).
AGG_MARK = f"{RES}/logs/aggregate-" + hashlib.sha1("\n".join(AGG_INPUT).encode()).hexdigest()[:12] + ".done"


rule all:
    input:
        f"{RES}/summary.csv",
        f"{RES}/report.md",
        f"{RES}/report.html",
        HOME_OUT,


if SEEDED:

    rule prepare_model:
        output:
            directory(f"{RES}/base/seed{{seed}}/model"),
        log:
            f"{RES}/logs/prepare_seed{{seed}}.log",
        wildcard_constraints:
            seed=r"\d+",
        threads: PREPARE_THREADS
        shell:
            "{GRPO} prepare --profile {PROFILE} --seed {wildcards.seed} --threads {threads} "
            "> {log} 2>&1"

else:

    rule prepare_model:
        output:
            directory(f"{RES}/base/model"),
        log:
            f"{RES}/logs/prepare.log",
        threads: PREPARE_THREADS
        shell:
            "{GRPO} prepare --profile {PROFILE} --threads {threads} > {log} 2>&1"


def train_inputs(wildcards):
    """The base model, plus the run a reference / teacher comes from (model.ref_name_or_path
    "run:<reproduction>/seed<N>", e.g. KDRL's teacher), plus the reward models trained in the
    workflow that its rewards name (reward ``reward_model`` with params.name: rule rm_train)."""
    c = load_config(wildcards.repro, PROFILE, seed=int(wildcards.seed))
    m = RUN_REF.match(c.model.ref_name_or_path or "")
    teacher = [f"{RES}/runs/{m[1]}/seed{m[2]}/train.done"] if m else []
    rms = [
        f"{RES}/rm/{t.params['name']}/seed{wildcards.seed}/rm.json"
        for t in c.rewards
        if t.name == "reward_model" and t.params.get("name")
    ]
    return [base_model(wildcards.seed)] + teacher + rms


def rm_spec_hash(name):
    import hashlib
    import json

    from grpo_core.config import project_root
    from grpo_core.reward_models import load_spec

    spec = load_spec(name, project_root() / "config" / "reward_models")
    blob = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# a reward model trained inside the workflow (config/reward_models/<rm>.yaml, grpo rm-train);
# only a run whose rewards name one asks for it, so no other reproduction's DAG changes
rule rm_train:
    output:
        f"{RES}/rm/{{rm}}/seed{{seed}}/rm.json",
    log:
        f"{RES}/logs/rm_{{rm}}_seed{{seed}}.log",
    wildcard_constraints:
        rm=r"[a-z0-9_]+",
        seed=r"\d+",
    # the spec's resolved values: an edited config/reward_models/<rm>.yaml retrains it (and the
    # runs that use it: their config hash covers the spec, grpo_core.rundir.reward_model_specs)
    params:
        spec=lambda wc: rm_spec_hash(wc.rm),
    threads: 1
    shell:
        "{GRPO} rm-train {wildcards.rm} --profile {PROFILE} --seed {wildcards.seed} "
        "--threads {threads} > {log} 2>&1"


rule train:
    input:
        train_inputs,
    # The output is a marker: Snakemake deletes a failed job's outputs, and the run directory
    # (metrics.jsonl, checkpoint/) must survive a crash or interrupt so the rerun resumes.
    output:
        touch(f"{RES}/runs/{{repro}}/seed{{seed}}/train.done"),
    log:
        f"{RES}/logs/train_{{repro}}_seed{{seed}}.log",
    params:
        config=config_hash,
    wildcard_constraints:
        repro=RUN_NAME,
        seed=r"\d+",
    threads: THREADS
    resources:
        **JOB_RES,
    shell:
        "{TRAIN} train {wildcards.repro} --profile {PROFILE} --seed {wildcards.seed} "
        "--threads {threads} --no-progress --replace-changed{TRAIN_EVAL} > {log} 2>&1"


def eval_inputs(wildcards):
    """The trained run, plus its VM-MCTS value model when the reproduction decodes with one
    (eval.vm_mcts: rest_rl)."""
    run = f"{RES}/runs/{wildcards.repro}/seed{wildcards.seed}"
    if wildcards.repro == START:  # evaluate_start's (ruleorder) own files; no value model
        return [f"{run}/train.done"]
    c = load_config(wildcards.repro, PROFILE, seed=int(wildcards.seed))
    vm = [f"{run}/value_model/value_model.json"] if c.eval.vm_mcts is not None else []
    return [f"{run}/train.done"] + vm


rule value_model:
    input:
        f"{RES}/runs/{{repro}}/seed{{seed}}/train.done",
    output:
        f"{RES}/runs/{{repro}}/seed{{seed}}/value_model/value_model.json",
    log:
        f"{RES}/logs/value_model_{{repro}}_seed{{seed}}.log",
    wildcard_constraints:
        repro=RUN_NAME,
        seed=r"\d+",
    threads: THREADS
    resources:
        **JOB_RES,
    shell:
        "{GRPO} value-model {wildcards.repro} --profile {PROFILE} --seed {wildcards.seed} "
        "--threads {threads} > {log} 2>&1"


rule evaluate:
    input:
        eval_inputs,
    output:
        f"{RES}/runs/{{repro}}/seed{{seed}}/eval/{BENCH}.json",
        f"{RES}/runs/{{repro}}/seed{{seed}}/eval/{BENCH}.samples.jsonl",
    log:
        f"{RES}/logs/eval_{{repro}}_seed{{seed}}.log",
    wildcard_constraints:
        repro=RUN_NAME,
    threads: THREADS
    resources:
        **JOB_RES,
    shell:
        "{GRPO} eval {wildcards.repro} --profile {PROFILE} --seed {wildcards.seed} "
        "--threads {threads} > {log} 2>&1"


rule evaluate_start:
    input:
        lambda w: base_model(w.seed),
    output:
        f"{RES}/runs/{START}/seed{{seed}}/eval/{BENCH}.json",
    log:
        f"{RES}/logs/eval_{START}_seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
    threads: THREADS
    resources:
        **JOB_RES,
    shell:
        "{GRPO} eval {START} --profile {PROFILE} --seed {wildcards.seed} --threads {threads} "
        "> {log} 2>&1"


ruleorder: evaluate_start > evaluate


def _bench_model(wildcards):
    if wildcards.repro == START:
        return base_model(wildcards.seed)
    return f"{RES}/runs/{wildcards.repro}/seed{wildcards.seed}/train.done"


rule evaluate_benchmark:
    input:
        _bench_model,
    output:
        f"{RES}/runs/{{repro}}/seed{{seed}}/eval/es{{es}}/{{label}}.json",
        f"{RES}/runs/{{repro}}/seed{{seed}}/eval/es{{es}}/{{label}}.samples.jsonl",
    log:
        f"{RES}/logs/eval_{{repro}}_seed{{seed}}_{{label}}_es{{es}}.log",
    wildcard_constraints:
        repro=RUN_NAME,
        seed=r"\d+",
        es=r"\d+",
        label="|".join(LABEL.values()) or "NONE",
    params:
        bench=lambda w: next(b for b, l in LABEL.items() if l == w.label),
    threads: THREADS
    resources:
        **JOB_RES,
    shell:
        "{GRPO} eval {wildcards.repro} --profile {PROFILE} --seed {wildcards.seed} "
        "--benchmark {params.bench} --eval-seeds {wildcards.es} "
        "--out {RES}/runs/{wildcards.repro}/seed{wildcards.seed}/eval/es{wildcards.es} "
        "--threads {threads} > {log} 2>&1"


def label_eval_seeds(label):
    """eval.seeds, extended to the benchmark protocol's min_eval_seeds (>= 10 for AIME under
    the paper protocol: evals.benchmarks.eval_seeds_for)."""
    from evals.benchmarks import eval_seeds_for

    bench = next(b for b, l in LABEL.items() if l == label)
    return eval_seeds_for(bench, EV.protocol, EVAL_SEEDS)


rule merge_eval_seeds:
    input:
        lambda w: [
            f"{RES}/runs/{w.repro}/seed{w.seed}/eval/es{e}/{w.label}.json"
            for e in label_eval_seeds(w.label)
        ],
    output:
        f"{RES}/runs/{{repro}}/seed{{seed}}/eval/{{label}}.json",
        f"{RES}/runs/{{repro}}/seed{{seed}}/eval/{{label}}.samples.jsonl",
    wildcard_constraints:
        repro=RUN_NAME,
        seed=r"\d+",
        label="|".join(LABEL.values()) or "NONE",
    run:
        from evals.aggregate import merge_eval_seeds

        merge_eval_seeds([Path(f) for f in input], Path(output[0]))


rule aggregate:
    input:
        AGG_INPUT,
    output:
        f"{RES}/summary.csv",
        touch(AGG_MARK),
    run:
        from evals.aggregate import aggregate

        evals = [f for f in input if f.endswith(".json")]
        aggregate(Path(RES), files=[Path(f) for f in evals])
        for old in Path(AGG_MARK).parent.glob("aggregate-*.done"):
            if str(old) != AGG_MARK:
                old.unlink()


rule report:
    input:
        f"{RES}/summary.csv",
        AGG_MARK,
    # report.html is report.md's self-contained twin (plots inlined); claims.csv holds the
    # verdicts on the reproductions' meta.claims (evals.claims)
    output:
        f"{RES}/report.md",
        f"{RES}/report.html",
    run:
        from evals.report import write_report

        write_report(Path(RES), title=f"GRPO variants, profile {PROFILE}")


# ------------------------------------------------------------------ home profiles (see HOMES)
# One block per tiny-scale profile a reproduction can name as meta.profile (a module name must
# be written out). Each runs this Snakefile for that profile with the names HOMES gave it.
def _home_config(profile):
    return {**config, "profile": profile, "reproductions": HOMES[profile], "ablate": [],
            "_home_of": PROFILE}


if "tiny_rec" in HOMES:

    module tiny_rec:
        snakefile: "Snakefile"
        config: _home_config("tiny_rec")

    use rule * from tiny_rec as tiny_rec_*


if "tiny_code" in HOMES:

    module tiny_code:
        snakefile: "Snakefile"
        config: _home_config("tiny_code")

    use rule * from tiny_code as tiny_code_*


if "tiny_geo" in HOMES:

    module tiny_geo:
        snakefile: "Snakefile"
        config: _home_config("tiny_geo")

    use rule * from tiny_geo as tiny_geo_*


if "tiny_agent" in HOMES:

    module tiny_agent:
        snakefile: "Snakefile"
        config: _home_config("tiny_agent")

    use rule * from tiny_agent as tiny_agent_*


if "tiny_tools" in HOMES:

    module tiny_tools:
        snakefile: "Snakefile"
        config: _home_config("tiny_tools")

    use rule * from tiny_tools as tiny_tools_*


if "tiny_search" in HOMES:

    module tiny_search:
        snakefile: "Snakefile"
        config: _home_config("tiny_search")

    use rule * from tiny_search as tiny_search_*


if "tiny_gui" in HOMES:

    module tiny_gui:
        snakefile: "Snakefile"
        config: _home_config("tiny_gui")

    use rule * from tiny_gui as tiny_gui_*


if "tiny_video" in HOMES:

    module tiny_video:
        snakefile: "Snakefile"
        config: _home_config("tiny_video")

    use rule * from tiny_video as tiny_video_*


if "tiny_video_com" in HOMES:

    module tiny_video_com:
        snakefile: "Snakefile"
        config: _home_config("tiny_video_com")

    use rule * from tiny_video_com as tiny_video_com_*


if "tiny_cot" in HOMES:

    module tiny_cot:
        snakefile: "Snakefile"
        config: _home_config("tiny_cot")

    use rule * from tiny_cot as tiny_cot_*


if "tiny_urpo" in HOMES:

    module tiny_urpo:
        snakefile: "Snakefile"
        config: _home_config("tiny_urpo")

    use rule * from tiny_urpo as tiny_urpo_*


if "tiny_clinic" in HOMES:

    module tiny_clinic:
        snakefile: "Snakefile"
        config: _home_config("tiny_clinic")

    use rule * from tiny_clinic as tiny_clinic_*
