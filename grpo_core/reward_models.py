"""Reward models trained inside the workflow (never downloaded): data made from the profile's
task, a tiny transformer with H regression heads and / or K ensemble members, training, save /
load, and batch scoring for the registered reward ``reward_model`` (grpo_core.rewards).

- **Specs**: ``config/reward_models/<name>.yaml`` (:class:`RMSpec`): ``kind`` regression (one
  MSE-trained head per rule-based objective, the multi-label reward regression of MO-GRPO) or
  preference (Bradley-Terry on pairs labelled by a gold reward with label noise, Gao et al. /
  Coste et al.), ``heads``, ``members``, the gold weights, data and training sizes, the model.
- **Data** (:func:`make_dataset`): for each train problem of the task, completions made by
  perturbing its gold answer and format (:func:`perturb`), each labelled by the rule-based
  :data:`OBJECTIVES` (correct, close, format, brevity); preference pairs of one prompt.
- **Model** (:class:`RewardModel`): K members, each a LlamaModel built from a transformers
  config (the tiny model's char tokenizer) read at its last token, with a Linear of H heads:
  ``forward -> [K, N, H]``.
- **Files** (:func:`save_rm` / :func:`load_rm`): ``<dir>/model.safetensors`` + ``<dir>/rm.json``
  (spec, heads, normalisation, training metrics); the workflow's place is
  ``<results>/<profile>/rm/<name>/seed<S>/`` (:func:`rm_dir`).
- **Combination** (:func:`combine`): heads by weights, members by mean / min (worst case) /
  mean - lam * std / mean - lam * var (uncertainty-weighted).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from grpo_core.errors import UserError
from grpo_core.tasks import Problem, extract_answer, grade_texts, is_well_formed

COMBINES = ("mean", "min", "mean_minus_std", "mean_minus_var")


# --------------------------------------------------------------------------------------------
# rule-based objectives (the labels): fn(text, finished, problem, task) -> float


def _number(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        return float(s.strip().replace(",", ""))
    except ValueError:
        return None


def objective_values(
    names: list[str], texts: list[str], finished: list[bool], problems: list[Problem], task
) -> torch.Tensor:
    """[N, len(names)] the rule-based objectives of each completion:

    - ``correct``: the task's own grade >= 1 (grpo_core.tasks.grade_texts, the training
      reward's call);
    - ``close``: 1 / (1 + |a - gold|) of the extracted numeric answer a (0 without one);
    - ``format``: ended by itself and is just the answer (grpo_core.tasks.is_well_formed);
    - ``brevity``: min(1, len(gold) / len(text.strip())) (1 for the empty text: nothing extra).
    """
    bad = [n for n in names if n not in OBJECTIVES]
    if bad:
        raise UserError(f"unknown objective {bad[0]!r}; want one of {sorted(OBJECTIVES)}")
    grades = grade_texts(task, texts, problems) if "correct" in names else None
    out = torch.zeros(len(texts), len(names))
    for i, (t, f, p) in enumerate(zip(texts, finished, problems)):
        for j, n in enumerate(names):
            if n == "correct":
                out[i, j] = float(grades[i].score >= 1.0)
            else:
                out[i, j] = OBJECTIVES[n](t, f, p)
    return out


def _close(text: str, finished: bool, p: Problem) -> float:
    a, g = _number(extract_answer(text)), _number(p.answer)
    if a is None or g is None:
        return 0.0
    return 1.0 / (1.0 + abs(a - g))


def _format(text: str, finished: bool, p: Problem) -> float:
    return float(finished and is_well_formed(text))


def _brevity(text: str, finished: bool, p: Problem) -> float:
    n = len(text.strip())
    return 1.0 if n == 0 else min(1.0, len(p.answer) / n)


OBJECTIVES: dict[str, Callable | None] = {
    "correct": None,  # the task's grade (batched in objective_values)
    "close": _close,
    "format": _format,
    "brevity": _brevity,
}


# --------------------------------------------------------------------------------------------
# specs


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RMArch(_Strict):
    """The tiny transformer of one member (a LlamaModel from a transformers config)."""

    hidden_size: int = Field(64, ge=4)
    intermediate_size: int = Field(128, ge=4)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    max_len: int = Field(48, ge=4)  # tokens kept (the last ones) of prompt + completion


class RMSpec(_Strict):
    """A reward model trained by ``grpo rm-train <name>`` (config/reward_models/<name>.yaml)."""

    kind: Literal["regression", "preference"]
    # regression: one head per objective, trained on its values; preference: one head "gold"
    heads: list[str] = Field(min_length=1)
    members: int = Field(1, ge=1, le=16)
    # the gold reward: weights of the rule-based objectives (preference labels; logged beside
    # the proxy by the reward ``reward_model``)
    gold: dict[str, float] = Field(default_factory=dict)
    n_prompts: int = Field(1500, ge=4)  # train problems the data is made from
    per_prompt: int = Field(4, ge=2)  # perturbed completions per prompt
    label_noise: float = Field(0.0, ge=0, lt=0.5)  # preference: P(label flipped)
    holdout: float = Field(0.1, gt=0, lt=0.5)  # share of prompts held out (RM accuracy)
    steps: int = Field(300, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    model: RMArch = Field(default_factory=RMArch)

    @model_validator(mode="after")
    def _check(self):
        objs = sorted(OBJECTIVES)
        if self.kind == "regression":
            bad = [h for h in self.heads if h not in OBJECTIVES]
            if bad:
                raise ValueError(f"regression head {bad[0]!r} is no objective; want {objs}")
        elif len(self.heads) != 1:
            raise ValueError(f"a preference model has one head (the gold), got {self.heads}")
        if self.kind == "preference" and not self.gold:
            raise ValueError("a preference model needs gold: {objective: weight, ...}")
        bad = [g for g in self.gold if g not in OBJECTIVES]
        if bad:
            raise ValueError(f"gold objective {bad[0]!r} unknown; want {objs}")
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads repeat a name: {self.heads}")
        return self


def load_spec(name: str, specs_dir: Path) -> RMSpec:
    """The spec of reward model ``name``: ``<specs_dir>/<name>.yaml`` (the project's
    config/reward_models/)."""
    d = Path(specs_dir)
    f = d / f"{name}.yaml"
    if not re.fullmatch(r"[a-z0-9_]+", name) or not f.exists():
        have = sorted(p.stem for p in d.glob("*.yaml"))
        raise UserError(f"reward model {name!r}: no spec {f}; have {have}")
    try:
        raw = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{f}: not valid YAML: {str(e).splitlines()[0]}") from None
    try:
        return RMSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(top)"
        raise UserError(f"{f}: key '{key}': {err['msg']}") from None


def rm_dir(results_dir: str | Path, profile: str, name: str, seed: int) -> Path:
    """Where the workflow keeps reward model ``name`` of seed ``seed``."""
    return Path(results_dir) / profile / "rm" / name / f"seed{seed}"


# --------------------------------------------------------------------------------------------
# data


def perturb(gold: str, rng: random.Random) -> tuple[str, bool]:
    """One completion made from a numeric gold answer, and whether it ended by itself: the gold
    (weight 2), off by 1-3 (2), off by 4-50 (1), a random number (1), the gold with a stray
    character (1), its digits reversed (0.5), a run of 6 characters that did not stop (0.5),
    1-6 random characters of digits and signs (1), the gold with a digit more (0.5), its
    first digit alone (0.5) or nothing (0.5, the empty completion: a policy that stops at once):
    the policy's near misses and the junk it may drift to (a reward model scores what it never
    saw at random, and GRPO finds it: on smoke the policy collapsed to the empty completion
    when it was missing here)."""
    g = int(float(gold))
    kind = rng.choices(range(11), weights=[2, 2, 1, 1, 1, 0.5, 0.5, 1, 0.5, 0.5, 0.5])[0]
    if kind == 0:
        return gold, True
    if kind == 1:
        return str(g + rng.choice([-3, -2, -1, 1, 2, 3])), True
    if kind == 2:
        return str(g + rng.choice([-1, 1]) * rng.randint(4, 50)), True
    if kind == 3:
        return str(rng.randint(0, 199)), True
    if kind == 4:
        s = rng.choice("+=. x")
        return (gold + s) if rng.random() < 0.5 else (s + gold), True
    if kind == 5:
        return gold[::-1], True
    if kind == 6:
        return (gold * 6)[:6], False
    if kind == 7:
        n = rng.randint(1, 6)
        return "".join(rng.choice("0123456789+-=. x") for _ in range(n)), rng.random() < 0.5
    if kind == 8:
        return gold + str(rng.randint(0, 9)), True
    if kind == 9:
        return gold[0], True
    return "", True


def make_dataset(spec: RMSpec, task, seed: int) -> dict:
    """Completions of the task's first ``spec.n_prompts`` train problems (``spec.per_prompt``
    distinct ones each), their objective values, and (preference) all pairs of one prompt whose
    gold rewards differ, the better one first, flipped with P = ``label_noise``. Prompts split
    into train / held out (``spec.holdout``). Deterministic in ``seed``."""
    rng = random.Random(seed)
    problems = task.train()[: spec.n_prompts]
    bad = [p for p in problems if _number(p.answer) is None]
    if bad:
        raise UserError(
            f"reward model data: task {getattr(task, 'name', '?')!r} problem {bad[0].id} has a "
            f"non-numeric answer {bad[0].answer!r}; the perturbations need numeric answers "
            "(the arithmetic tasks)"
        )
    rows: list[tuple[int, str, bool]] = []  # (problem, text, finished)
    for k, p in enumerate(problems):
        seen: set[tuple[str, bool]] = set()
        for _ in range(8 * spec.per_prompt):
            c = perturb(p.answer, rng)
            if c not in seen:
                seen.add(c)
                rows.append((k, *c))
            if len(seen) == spec.per_prompt:
                break
    names = sorted(set(spec.heads if spec.kind == "regression" else []) | set(spec.gold))
    vals = objective_values(
        names,
        [r[1] for r in rows],
        [r[2] for r in rows],
        [problems[r[0]] for r in rows],
        task,
    )
    n_hold = max(1, int(len(problems) * spec.holdout))
    held = set(rng.sample(range(len(problems)), n_hold))
    gold = torch.zeros(len(rows))
    for n, w in spec.gold.items():
        gold += w * vals[:, names.index(n)]
    pairs: dict[str, list] = {"train": [], "held": []}
    if spec.kind == "preference":
        by_p: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            by_p.setdefault(r[0], []).append(i)
        for k, ix in by_p.items():
            for a in range(len(ix)):
                for b in range(a + 1, len(ix)):
                    i, j = ix[a], ix[b]
                    if abs(float(gold[i] - gold[j])) < 1e-9:
                        continue
                    win, lose = (i, j) if gold[i] > gold[j] else (j, i)
                    split = "held" if k in held else "train"
                    if split == "train" and rng.random() < spec.label_noise:
                        win, lose = lose, win
                    pairs[split].append((win, lose))
    return {
        "problems": problems,
        "rows": rows,
        "objectives": names,
        "values": vals,
        "gold": gold,
        "held": [k in held for k, _, _ in rows],
        "pairs": pairs,
    }


# --------------------------------------------------------------------------------------------
# model


def rm_tokenizer():
    from grpo_core.models import build_char_tokenizer

    return build_char_tokenizer()


def rm_input(problem: Problem, text: str) -> str:
    """What the reward model reads: the prompt's expression (else its question), '=', the
    completion."""
    q = problem.meta.get("expression") or problem.question
    return f"{q}={text}"


class RewardModel(torch.nn.Module):
    """K members, each a LlamaModel read at its last token with a Linear to H heads."""

    def __init__(self, spec: RMSpec, vocab_size: int, pad_id: int, seed: int = 0):
        super().__init__()
        from transformers import LlamaConfig, LlamaModel

        a = spec.model
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=a.hidden_size,
            intermediate_size=a.intermediate_size,
            num_hidden_layers=a.num_layers,
            num_attention_heads=a.num_heads,
            num_key_value_heads=a.num_heads,
            max_position_embeddings=a.max_len + 8,
            pad_token_id=pad_id,
        )
        bodies, heads = [], []
        for m in range(spec.members):
            torch.manual_seed(seed * 1000 + m)  # each member its own init
            bodies.append(LlamaModel(cfg))
            heads.append(torch.nn.Linear(a.hidden_size, len(spec.heads)))
        self.bodies = torch.nn.ModuleList(bodies)
        self.heads = torch.nn.ModuleList(heads)
        # regression heads predict objectives in [0, 1]: a sigmoid keeps them there (a policy
        # cannot push an unbounded head past what any completion earns)
        self.bounded = spec.kind == "regression"

    def member(self, m: int, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """[N, H] member m's heads on right-padded ``ids`` (in (0, 1) for regression)."""
        h = self.bodies[m](input_ids=ids, attention_mask=attn).last_hidden_state
        last = attn.sum(-1).clamp(min=1) - 1
        out = self.heads[m](h[torch.arange(len(ids)), last])
        return torch.sigmoid(out) if self.bounded else out

    def forward(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """[K, N, H]."""
        return torch.stack([self.member(m, ids, attn) for m in range(len(self.bodies))])


def encode(tok, texts: list[str], finished: list[bool], max_len: int):
    """Right-padded ids [N, L] and mask of ``texts`` (+ EOS where finished), the last
    ``max_len`` tokens of each."""
    seqs = []
    for t, f in zip(texts, finished):
        ids = tok(t, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if f else [])
        seqs.append(ids[-max_len:] or [tok.pad_token_id])
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), tok.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
    return ids, attn


# --------------------------------------------------------------------------------------------
# training


def train_rm(spec: RMSpec, task, seed: int, out_dir: Path | None = None, name: str = "") -> dict:
    """Train reward model ``spec`` on data of ``task`` (seeded: the same seed gives the same
    weights); save it to ``out_dir`` when given. Returns rm.json's content (with metrics)."""
    torch.manual_seed(seed)
    data = make_dataset(spec, task, seed)
    tok = rm_tokenizer()
    rows, held = data["rows"], data["held"]
    texts = [rm_input(data["problems"][k], t) for k, t, _ in rows]
    fin = [f for _, _, f in rows]
    ids, attn = encode(tok, texts, fin, spec.model.max_len)
    model = RewardModel(spec, len(tok), tok.pad_token_id, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    train_ix = torch.tensor([i for i, h in enumerate(held) if not h])
    if spec.kind == "regression":
        cols = [data["objectives"].index(h) for h in spec.heads]
        y = data["values"][:, cols]
        n_train = len(train_ix)
    else:
        pairs = torch.tensor(data["pairs"]["train"], dtype=torch.long)
        n_train = len(pairs)
        if n_train < 2:
            raise UserError("reward model data: fewer than 2 preference pairs; raise n_prompts")
    losses = []
    model.train()
    for _ in range(spec.steps):
        loss = torch.zeros(())
        for m in range(spec.members):
            b = torch.randint(0, n_train, (spec.batch_size,), generator=gen)
            if spec.kind == "regression":
                rix = train_ix[b]
                pred = model.member(m, ids[rix], attn[rix])
                loss = loss + torch.nn.functional.mse_loss(pred, y[rix])
            else:
                w, lo = pairs[b, 0], pairs[b, 1]
                both = torch.cat([w, lo])
                r = model.member(m, ids[both], attn[both])[:, 0]
                k = len(w)
                loss = loss - torch.nn.functional.logsigmoid(r[:k] - r[k:]).mean()
        loss = loss / spec.members
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        out = _batched(model, ids, attn)  # [K, N, H]
    tr = ~torch.tensor(held)
    if spec.kind == "preference":  # each member to mean 0, std 1 on the training completions
        mean = out[:, tr].mean(1)
        std = out[:, tr].std(1).clamp(min=1e-6)
    else:  # regression heads keep their objective's units
        mean = torch.zeros(spec.members, len(spec.heads))
        std = torch.ones(spec.members, len(spec.heads))
    w = max(1, spec.steps // 10)
    metrics = {
        "loss_first": sum(losses[:w]) / w,
        "loss_last": sum(losses[-w:]) / w,
        "n_completions": len(rows),
        "n_held": int(sum(held)),
    }
    hd = torch.tensor(held)
    if spec.kind == "regression":
        for j, h in enumerate(spec.heads):
            pred, tgt = out[:, hd, j].mean(0), y[hd, j]
            metrics[f"held_mse_{h}"] = float(((pred - tgt) ** 2).mean())
            metrics[f"held_mse_{h}_const"] = float(((tgt - y[tr, j].mean()) ** 2).mean())
    else:
        hp = torch.tensor(data["pairs"]["held"], dtype=torch.long).reshape(-1, 2)
        metrics["n_pairs_train"] = n_train
        metrics["n_pairs_held"] = len(hp)
        if len(hp):
            norm = (out - mean[:, None]) / std[:, None]
            acc = (norm[:, hp[:, 0], 0] > norm[:, hp[:, 1], 0]).float().mean(1)
            metrics["held_pair_acc_members"] = [float(a) for a in acc]
            ens = norm[:, :, 0].mean(0)
            metrics["held_pair_acc_mean"] = float((ens[hp[:, 0]] > ens[hp[:, 1]]).float().mean())
    meta = {
        "format": 1,
        "name": name,
        "seed": seed,
        "spec": spec.model_dump(mode="json"),
        "heads": list(spec.heads),
        "members": spec.members,
        "norm_mean": mean.tolist(),
        "norm_std": std.tolist(),
        "tokenizer": "char",
        "metrics": metrics,
    }
    if out_dir is not None:
        save_rm(model, meta, Path(out_dir))
    return meta


def _batched(model: RewardModel, ids, attn, bs: int = 512) -> torch.Tensor:
    return torch.cat([model(ids[i : i + bs], attn[i : i + bs]) for i in range(0, len(ids), bs)], 1)


# --------------------------------------------------------------------------------------------
# files


def save_rm(model: RewardModel, meta: dict, d: Path) -> None:
    """``d/model.safetensors`` + ``d/rm.json``, each written to a temporary name first."""
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(d / "model.safetensors")
    tmp = d / "rm.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(d / "rm.json")


_CACHE: dict[str, tuple[float, RewardModel, dict]] = {}


def load_rm(d: str | Path, how: str = "") -> tuple[RewardModel, dict]:
    """The reward model in directory ``d`` (cached by path and rm.json's mtime). Missing or
    corrupt files are one-line UserErrors naming the file and how to make it."""
    from safetensors.torch import load_file

    d = Path(d)
    f = d / "rm.json"
    hint = how or "train it with `grpo rm-train <name> --profile P --seed S`"
    if not f.exists():
        raise UserError(f"reward model {d}: no rm.json; {hint}")
    key = str(d.resolve())
    mtime = f.stat().st_mtime
    if key in _CACHE and _CACHE[key][0] == mtime:
        return _CACHE[key][1], _CACHE[key][2]
    try:
        meta = json.loads(f.read_text())
        spec = RMSpec.model_validate(meta["spec"])
        heads, members = list(meta["heads"]), int(meta["members"])
        mean, std = torch.tensor(meta["norm_mean"]), torch.tensor(meta["norm_std"])
        if mean.shape != (members, len(heads)) or std.shape != mean.shape:
            raise ValueError(f"norm_mean / norm_std shape {tuple(mean.shape)}")
    except json.JSONDecodeError as e:
        raise UserError(f"{f}: not valid JSON (line {e.lineno}); {hint}") from None
    except (KeyError, TypeError, ValueError, ValidationError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{f}: not a reward model's rm.json ({msg}); {hint}") from None
    w = d / "model.safetensors"
    if not w.exists():
        raise UserError(f"reward model {d}: no model.safetensors; {hint}")
    tok = rm_tokenizer()
    model = RewardModel(spec, len(tok), tok.pad_token_id)
    try:
        model.load_state_dict(load_file(str(w)))
    except Exception as e:  # safetensors raises its own error types on a corrupt file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{w}: cannot load the reward model's weights ({msg}); {hint}") from None
    model.eval()
    meta["_norm"] = (mean, std)
    meta["_tok"] = tok
    _CACHE[key] = (mtime, model, meta)
    return model, meta


@torch.no_grad()
def score(
    model: RewardModel,
    meta: dict,
    texts: list[str],
    finished: list[bool],
    problems: list[Problem],
) -> torch.Tensor:
    """[K, N, H] the members' normalised head values ((raw - mean) / std of rm.json) of the
    completions, without grad."""
    spec = RMSpec.model_validate(meta["spec"])
    inputs = [rm_input(p, t) for t, p in zip(texts, problems)]
    ids, attn = encode(meta["_tok"], inputs, finished, spec.model.max_len)
    raw = _batched(model, ids, attn)
    mean, std = meta["_norm"]
    return (raw - mean[:, None]) / std[:, None]


# --------------------------------------------------------------------------------------------
# combination


def head_weights(all_heads: list[str], heads: list[str] | None, weights: dict | None, where: str):
    """[H] the weight of each of the model's heads: ``weights`` (head -> weight), else equal
    weights 1/|heads| over ``heads`` (default: every head). An unknown head is an error."""
    for h in list(heads or []) + list(weights or {}):
        if h not in all_heads:
            raise UserError(f"{where}: head {h!r} is not one of the reward model's {all_heads}")
    if weights:
        return torch.tensor([float(weights.get(h, 0.0)) for h in all_heads])
    use = heads or all_heads
    return torch.tensor([1.0 / len(use) if h in use else 0.0 for h in all_heads])


def combine(scores: torch.Tensor, w: torch.Tensor, how: str = "mean", lam: float = 0.5):
    """Reward [N] from scores [K, N, H]: per member s_k = sum_h w_h * scores[k, :, h]; over
    members: mean_k s_k | min_k s_k (worst case) | mean - lam * std_k (population std) |
    mean - lam * var_k (population variance; Coste et al.'s uncertainty-weighted objective).
    Returns (reward, per-member s [K, N])."""
    if how not in COMBINES:
        raise UserError(f"reward model combine {how!r}: want one of {list(COMBINES)}")
    s = (scores * w.to(scores.dtype)).sum(-1)  # [K, N]
    mean = s.mean(0)
    if how == "mean":
        return mean, s
    if how == "min":
        return s.min(0).values, s
    var = s.var(0, unbiased=False)
    if how == "mean_minus_std":
        return mean - lam * var.sqrt(), s
    return mean - lam * var, s


def gold_values(meta: dict, texts, finished, problems, task) -> torch.Tensor | None:
    """[N] the spec's gold reward (weighted rule-based objectives), None without one."""
    gold = meta["spec"].get("gold") or {}
    if not gold:
        return None
    names = sorted(gold)
    v = objective_values(names, texts, finished, problems, task)
    return (v * torch.tensor([gold[n] for n in names])).sum(-1)
