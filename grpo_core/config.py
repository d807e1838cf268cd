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
and the closest valid names. The models themselves live in :mod:`grpo_core.schema` (re-exported
here); this module is the loader.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from grpo_core.errors import UserError, closest
from grpo_core.errors import fmt_path as _fmt_path
from grpo_core.errors import validation_message as _error_message
from grpo_core.schema import *  # noqa: F403  (the schema's models are re-exported from here)
from grpo_core.schema import Config

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULTS_FILE = PACKAGE_DIR / "defaults.yaml"


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


SPECIAL_MODELS = ("tiny", "smollm2", "tiny_vl")  # tiny_vl: the tiny Qwen2.5-VL (video)


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


DEFAULT_PROFILE = "tiny"


def home_profiles(names: list[str], profile: str) -> dict[str, list[str]]:
    """Run names of a workflow on ``profile`` split by where they run: ``{profile: [...]}`` plus,
    on the default profile only, one entry per other tiny-scale profile named by a reproduction's
    ``meta.profile`` (its home: own task, own warm start), holding grpo (the baseline there) and
    the reproductions (and their ablations ``<slug>-no_<part>``) that live there. On any other
    profile every name runs in ``profile`` (small / paper configs carry the task in their
    profile_overrides)."""
    out: dict[str, list[str]] = {profile: []}
    for n in names:
        home = ""
        if profile == DEFAULT_PROFILE:
            home = str(reproduction_meta(n.split("-no_")[0]).get("profile") or "")
        where = home if home and home != profile else profile
        group = out.setdefault(where, ["grpo"] if where != profile else [])
        if n not in group:
            group.append(n)
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
    from grpo_core import advantages, episodes, losses, rewards, rollout, samplers, tasks

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
    if cfg.train.prefix_grouper and cfg.train.fsdp:
        raise UserError(
            f"{_source(sources, ('train', 'prefix_grouper'))}: key 'train.prefix_grouper': "
            "not supported with train.fsdp yet (untested there); set one of them to false"
        )
    if cfg.train.prefix_grouper and cfg.train.gradient_checkpointing:
        raise UserError(
            f"{_source(sources, ('train', 'prefix_grouper'))}: key 'train.prefix_grouper': "
            "needs the prompt's KV cache in the gradient pass, which "
            "train.gradient_checkpointing drops; set one of them to false"
        )
    if cfg.rollout.sampler_logprobs and cfg.rollout.engine != "hf_static":
        raise UserError(
            f"{_source(sources, ('rollout', 'sampler_logprobs'))}: key "
            f"'rollout.sampler_logprobs': an option of rollout.engine hf_static, not "
            f"{cfg.rollout.engine!r} (vllm always returns sampler log-probs, hf never)"
        )
    if cfg.rollout.carry_kv and cfg.rollout.engine != "hf_static":
        raise UserError(
            f"{_source(sources, ('rollout', 'carry_kv'))}: key 'rollout.carry_kv': an option "
            f"of rollout.engine hf_static (its decode loop keeps the K/V), not "
            f"{cfg.rollout.engine!r}; set rollout.engine: hf_static or carry_kv: false"
        )
    if cfg.rollout.max_staleness > 0:
        src = f"{_source(sources, ('rollout', 'max_staleness'))}: key 'rollout.max_staleness'"
        k = cfg.rollout.max_staleness
        if cfg.rollout.engine not in ("hf", "hf_static"):
            raise UserError(
                f"{src}: asynchronous rollouts run the hf (or hf_static) engine in a worker "
                f"thread, not rollout.engine {cfg.rollout.engine!r}; set rollout.engine: hf or "
                "rollout.max_staleness: 0"
            )
        if cfg.rollout.is_correction == "none":
            raise UserError(
                f"{src}: {k} trains on batches sampled by older weights, which needs the "
                "importance-sampling correction; set rollout.is_correction: token (or sequence)"
            )
        if cfg.train.fsdp:
            raise UserError(
                f"{src}: not supported with train.fsdp (one process only); set one of them off"
            )
    if (
        cfg.advantage.name in advantages.STEP_LEVEL
        and cfg.loss.name not in losses.TOKEN_ADVANTAGE_LOSSES
    ):
        raise UserError(
            f"{_source(sources, ('loss', 'name'))}: key 'loss.name': {cfg.loss.name!r} takes one "
            f"advantage per sequence, but advantage {cfg.advantage.name!r} gives one per turn; "
            f"want one of {list(losses.TOKEN_ADVANTAGE_LOSSES)}"
        )


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
    abl = parse_ablation(reproduction)
    if abl is not None:  # <reproduction>-no_<part>: the reproduction with one part reverted
        return _resolve_ablation(reproduction, *abl, profile, overrides, seed)
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


# --------------------------------------------------------------------------------------------
# leave-one-out ablations: <reproduction>-no_<part>

ABLATION_SEP = "-no_"
ABLATION_NAME = re.compile(r"^([a-z0-9_]+)-no_([a-z0-9_]+)$")
# loss keys that are one part together: the policy loss and its params
LOSS_COMPONENT = ("name", "params")


def part_of(key: str) -> str:
    """The part a differing key belongs to: its top-level section (``sampler``, ``rewards``,
    ``advantage``, ``rollout``, ``train``, ...), except under ``loss``, whose settings are parts
    each (``eps_high``, ``agg``, ``kl``, ``regularisers``, ``token_weights``, ...), the policy
    loss's name and params together being the part ``loss``."""
    t = _path_tuple(key)
    if t[0] == "loss" and len(t) > 1:
        return "loss" if t[1] in LOSS_COMPONENT else str(t[1])
    return str(t[0])


def _part_paths(part: str) -> list[tuple]:
    """The config subtrees an ablation of ``part`` sets back to the base's values."""
    if part == "loss":
        return [("loss", k) for k in LOSS_COMPONENT]
    if part in LossCfg.model_fields:  # noqa: F405 (from the schema)
        return [("loss", part)]
    return [(part,)]


def ablation_parts(reproduction: str, profile: str = "tiny") -> dict[str, list[str]]:
    """{part: [differing dotted keys]} of ``reproduction`` vs its base (:func:`config_diff`
    under ``profile``), grouped by :func:`part_of`, in the diff's order. E.g. dapo: rewards
    (overlong shaping), eps_high (clip-higher), agg (token mean), kl (no KL), sampler (dynamic
    sampling)."""
    parts: dict[str, list[str]] = {}
    for k, _a, _b, _src in config_diff(reproduction, profile):
        parts.setdefault(part_of(k), []).append(k)
    return parts


def ablation_names(reproduction: str, profile: str = "tiny") -> list[str]:
    """``<reproduction>-no_<part>`` for every part of ``reproduction`` (grpo has none)."""
    return [f"{reproduction}{ABLATION_SEP}{p}" for p in ablation_parts(reproduction, profile)]


def parse_ablation(name: str | None) -> tuple[str, str] | None:
    """(reproduction, part) of an ablation name (``dapo-no_sampler``); None for anything else
    (a reproduction directory of that name wins)."""
    if not name or ABLATION_SEP not in name or _reproduction_file(name).exists():
        return None
    m = ABLATION_NAME.match(name)
    if not m:
        raise UserError(
            f"ablation {name!r}: want <reproduction>-no_<part>, e.g. dapo-no_sampler "
            "(lower-case letters, digits, _)"
        )
    return m.group(1), m.group(2)


def _resolve_ablation(
    name: str,
    reproduction: str,
    part: str,
    profile: str,
    overrides: list[str] | None,
    seed: int | None,
) -> tuple[dict[str, Any], dict[tuple, str]]:
    """``reproduction`` resolved under ``profile``, with the keys of ``part`` (its subtrees,
    :func:`_part_paths`) set back to its base's resolved values; then the command line. Its
    base is the reproduction (``grpo diff NAME`` lists the reverted keys), its meta the
    reproduction's without claims (the paper's claims are about the whole reproduction)."""
    if not _reproduction_file(reproduction).exists():
        raise UserError(
            f"ablation {name!r}: unknown reproduction {reproduction!r}; "
            f"{closest(reproduction, list_reproductions())}"
        )
    parts = ablation_parts(reproduction, profile)
    if part not in parts:
        have = ", ".join(f"{reproduction}{ABLATION_SEP}{p}" for p in parts) or "none"
        raise UserError(
            f"ablation {name!r}: {reproduction} does not change a part {part!r} under profile "
            f"{profile!r}; its ablations: {have}"
        )
    data, sources = resolve(reproduction, profile)
    cfg = validate(data, sources)
    base = load_config(cfg.base, profile) if cfg.base else load_config(None, profile)
    base_d = base.model_dump(mode="json")
    src = f"ablation {name} ({part} as in {cfg.base or profile + ' profile'})"
    for path in _part_paths(part):
        val, dst = base_d, data
        for k in path:
            val = val[k]
        for k in path[:-1]:
            dst = dst.setdefault(k, {})
        dst[path[-1]] = copy.deepcopy(val)
        for k in [k for k in sources if k[: len(path)] == path]:  # the reproduction's, replaced
            del sources[k]
        sources[path] = src
        for sub in _paths(val, path):
            sources[sub] = src
    meta = dict(data.get("meta") or {})
    meta["title"] = f"{meta.get('title') or reproduction} (without {part})"
    meta["claims"] = []
    data["meta"] = meta
    for item in overrides or []:
        keys, value = parse_override(item)
        data = _merge(data, _nest(keys, value), sources, f"command line ({item})")
    if seed is not None:
        data = _merge(data, {"run": {"seed": seed}}, sources, "command line (--seed)")
    data["profile"] = profile
    data["reproduction"] = name
    data["base"] = reproduction
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
