"""VM-MCTS (ReST-RL, Zhoubian et al. 2025): value-model-guided Monte-Carlo tree search decoding.

Two parts, both on a checkpoint of the policy:

1. **The value model** (``train_value_model``, CLI ``grpo value-model``): ``vm_k`` rollouts of
   each of ``vm_prompts`` train-split prompts, graded by the task (the reward's own grade); each
   rollout is cut into steps (``split``: ``step_tokens``-token chunks or lines) and every prefix
   ``s`` gets the target ``V(s)`` = the mean final score of the rollouts that pass through it (the
   value of the tree node ``s`` of the tree those rollouts span; a whole completion is a terminal
   node whose value is its own score). The model is a regression head (Linear - Tanh - Linear)
   on the checkpoint's last hidden state at the prefix's last token (features standardised),
   fitted by full-batch Adam on the squared error. Written to ``<run>/value_model/``.

2. **The search** (``mcts_decode``; the authors' ``algorithms/MCTS/mcts.py`` with
   ``tasks/MCTS/task.py`` in the test phase, rm_type prm). One tree per problem, its root the
   prompt. Each iteration:
   - *select*: from the root, while the node is expanded go to its visible child of highest
     ``UCT = V + c * sqrt((1 + ln N_parent) / (eps + n))`` (ties: a seeded random choice);
   - a selected *terminal* node is backed up once more with its value: ``(n, sum) += (1, V)``;
   - *expand* another: ``num_sample`` continuations are sampled from its state; each gives an
     action (its first step) and a child (terminal when the continuation is one step or less);
     a new child is valued by the VM (``V = VM(state)``, ``n = 1``), a repeated action adds
     ``(1, V)`` to its child; only the ``num_decision`` children of highest V stay visible.
     Every continuation is also kept whole (a candidate answer) and scored by the VM;
   - *back up*: ``(n, sum)`` of the expanded node and each ancestor grow by the children's
     ``(sum n, sum sum)``; ``V = sum / n``.
   The answer is the candidate of highest VM score. The trees of all problems advance in lock
   step, so one ``generate`` call serves one iteration of every tree.
   With ``bon_baseline`` the same value model also picks the best of as many whole samples
   from the root as the problem's search drew (``vm_bon_acc``: the tree's share of the gain).

Evaluation (evals.evaluate with ``eval.vm_mcts`` set) records ``mcts_acc`` (the answer's
task score >= 1) next to plain sampling's ``avg@k`` on the same checkpoint, with the compute:
``mcts_samples`` (sampled continuations per problem), ``mcts_gen_calls`` (expansions per
problem) and ``mcts_vm_calls`` (value-model scorings per problem).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from grpo_core.errors import UserError
from grpo_core.rollout import SamplingParams, eos_token_ids, finish_completions
from grpo_core.runtime import derive_seed

VM_DIR = "value_model"
VM_JSON = "value_model.json"
VM_WEIGHTS = "value_head.safetensors"


# ------------------------------------------------------------------ steps of a completion


def step_cut(seq: list[int], split: str, step_tokens: int, has_newline) -> tuple[list[int], bool]:
    """(action, terminal) of a sampled continuation ``seq``: its first step, and whether the
    continuation is that one step (nothing left after it). ``tokens``: the first ``step_tokens``
    tokens; ``line``: up to the first token whose text holds a newline (the authors' first
    line; terminal when no newline or only whitespace follows, ``sample.rstrip().count('\\n')
    < 1``). ``has_newline(ids) -> bool`` / ``(ids, tail_blank)`` come from the tokenizer."""
    if split == "tokens":
        if len(seq) <= step_tokens:
            return list(seq), True
        return list(seq[:step_tokens]), False
    for i in range(len(seq)):
        if has_newline([seq[i]]):
            if i + 1 >= len(seq) or not has_newline.text(seq[i + 1 :]).strip():
                return list(seq), True
            return list(seq[: i + 1]), False
    return list(seq), True


def step_boundaries(seq: list[int], split: str, step_tokens: int, has_newline) -> list[int]:
    """Lengths of the prefixes of ``seq`` that are tree states (each step's end, the last one
    the whole sequence): the states the search will ask the value model about."""
    out, pos = [], 0
    while pos < len(seq):
        action, terminal = step_cut(seq[pos:], split, step_tokens, has_newline)
        pos = len(seq) if terminal else pos + len(action)
        out.append(pos)
    return out


class NewlineTest:
    """``has_newline(ids)``: does the decoded text of ``ids`` hold a newline; ``.text(ids)``."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.cache: dict[int, bool] = {}

    def text(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def __call__(self, ids) -> bool:
        if len(ids) == 1:
            t = int(ids[0])
            if t not in self.cache:
                self.cache[t] = "\n" in self.text([t])
            return self.cache[t]
        return "\n" in self.text(ids)


# ------------------------------------------------------------------ the tree


@dataclass(eq=False)
class Node:
    """A tree state: the completion tokens after the prompt (``ids``)."""

    ids: tuple
    parent: Node | None = None
    terminal: bool = False
    n: int = 0  # visits
    total: float = 0.0  # summed value
    V: float = 0.0  # total / n
    expanded: bool = False
    visible: bool = True
    children: dict = field(default_factory=dict)  # action tuple -> Node
    # whole continuations sampled at this node: [full completion ids, VM score or None]
    completions: list = field(default_factory=list)


def uct(child: Node, c: float, eps: float) -> float:
    """``V + c * sqrt((1 + ln N_parent) / (eps + n))`` (the authors' MCTS.UCT)."""
    return child.V + c * math.sqrt((1 + math.log(child.parent.n)) / (eps + child.n))


def best_child(node: Node, c: float, eps: float, rng: random.Random) -> Node:
    best, best_v = [], -math.inf
    for ch in node.children.values():
        if not ch.visible:
            continue
        v = uct(ch, c, eps)
        if v > best_v:
            best, best_v = [ch], v
        elif v == best_v:
            best.append(ch)
    return best[0] if len(best) == 1 else rng.choice(best)


def select(root: Node, c: float, eps: float, rng: random.Random) -> Node:
    node = root
    while node.expanded:
        node = best_child(node, c, eps, rng)
    return node


def backup(node: Node, n: int, total: float) -> None:
    while node is not None:
        node.total += total
        node.n += n
        node.V = node.total / node.n
        node = node.parent


def expand(node: Node, samples, cut, value_fn, num_decision: int) -> tuple[int, float]:
    """Grow ``node`` by the continuations ``samples`` (token lists sampled from its state);
    ``cut(seq) -> (action, terminal)``; ``value_fn(list of completion tuples) -> values``.
    Scores the node's whole continuations too and returns the ``(n, sum)`` to back up: its
    children's summed visits and values (the prm branch of the authors' ``do_rollout``)."""
    new, repeats = [], {}
    for seq in samples:
        action, terminal = cut(list(seq))
        action = tuple(action)
        node.completions.append([node.ids + tuple(seq), None])
        if action not in node.children:
            ch = Node(node.ids + action, parent=node, terminal=terminal)
            node.children[action] = ch
            new.append(ch)
        else:  # sampled again in this expansion: one more visit at its value
            repeats[action] = repeats.get(action, 0) + 1
    vals = value_fn([ch.ids for ch in new] + [c[0] for c in node.completions])
    for ch, v in zip(new, vals[: len(new)]):
        ch.V, ch.n, ch.total = float(v), 1, float(v)
    for action, r in repeats.items():
        ch = node.children[action]
        ch.n += r
        ch.total += r * ch.V
    for comp, v in zip(node.completions, vals[len(new) :]):
        comp[1] = float(v)
    if len(node.children) > num_decision:  # keep the num_decision highest values visible
        order = sorted(node.children.values(), key=lambda x: x.V, reverse=True)
        for ch in order[num_decision:]:
            ch.visible = False
    node.expanded = True
    kids = list(node.children.values())
    return sum(ch.n for ch in kids), sum(ch.total for ch in kids)


def all_completions(root: Node) -> list:
    """Every sampled whole continuation in the tree, preorder (the authors' order)."""
    out = list(root.completions)
    if root.expanded:
        for ch in root.children.values():
            out += all_completions(ch)
    return out


def best_completion(root: Node) -> tuple[tuple, float] | None:
    """The candidate of highest VM score (the first in preorder on a tie)."""
    best = None
    for ids, v in all_completions(root):
        if v is not None and (best is None or v > best[1]):
            best = (ids, v)
    return best


@dataclass
class SearchStats:
    gen_calls: int = 0  # expansions (one sampling request of num_sample continuations)
    samples: int = 0  # sampled continuations
    tokens: int = 0  # sampled tokens
    vm_calls: int = 0  # value-model scorings
    terminal_backups: int = 0


def search(
    roots,
    sample_fn,
    cut,
    value_fns,
    cfg,
    rng: random.Random,
    stats: list[SearchStats],
    prefetch=None,
):
    """Run ``cfg.iterations`` rounds on every tree in lock step. ``sample_fn(list of (tree
    index, node), it) -> list of continuation lists`` (``cfg.num_sample`` per request);
    ``value_fns[t]`` scores states of tree t; ``prefetch(list of (tree, state))``, if given, is
    told every state an iteration's expansions will score first (one batched VM pass)."""
    for it in range(cfg.iterations):
        todo = []
        for t, root in enumerate(roots):
            node = select(root, cfg.c, cfg.eps, rng)
            if node.terminal:
                backup(node, 1, node.V)
                stats[t].terminal_backups += 1
            else:
                todo.append((t, node))
        if not todo:
            continue
        samples = sample_fn(todo, it)
        if prefetch is not None:
            reqs = []
            for (t, node), seqs in zip(todo, samples):
                for seq in seqs:
                    reqs.append((t, node.ids + tuple(cut(list(seq))[0])))
                    reqs.append((t, node.ids + tuple(seq)))
            prefetch(reqs)
        for (t, node), seqs in zip(todo, samples):
            counted = _Counting(value_fns[t], stats[t])
            n, s = expand(node, seqs, cut, counted, cfg.num_decision)
            backup(node, n, s)
            stats[t].gen_calls += 1
            stats[t].samples += len(seqs)
            stats[t].tokens += sum(len(x) for x in seqs)


class _Counting:
    def __init__(self, fn, st: SearchStats):
        self.fn, self.st = fn, st

    def __call__(self, states):
        self.st.vm_calls += len(states)
        return self.fn(states)


# ------------------------------------------------------------------ the value model


class ValueHead(nn.Module):
    """``V(s) = w2 . tanh(W1 (h(s) - mu) / sd + b1) + b2`` on the policy's last hidden state
    ``h(s)`` at the state's last token."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.register_buffer("mu", torch.zeros(d_in))
        self.register_buffer("sd", torch.ones(d_in))
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(1.0))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net((h - self.mu) / self.sd).squeeze(-1)

    @torch.no_grad()
    def value(self, h: torch.Tensor) -> torch.Tensor:
        """Predictions clamped to the targets' range (the authors clamp to [min_rw, max_rw])."""
        return self.forward(h).clamp(float(self.lo), float(self.hi))


def fit_value_head(
    feats: torch.Tensor, targets: torch.Tensor, hidden: int, steps: int, lr: float, seed: int
) -> tuple[ValueHead, list[float]]:
    """Full-batch Adam on the mean squared error; returns the head and its loss per step."""
    torch.manual_seed(seed)
    head = ValueHead(feats.shape[1], hidden)
    head.mu.copy_(feats.mean(0))
    head.sd.copy_(feats.std(0, unbiased=False).clamp_min(1e-6))
    head.lo.fill_(float(targets.min()))
    head.hi.fill_(float(targets.max()))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = ((head(feats) - targets) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(((head(feats) - targets) ** 2).mean()))
    return head, losses


def value_targets(rows, split: str, step_tokens: int, has_newline) -> dict:
    """``{(problem index, prefix tuple): mean score of the rollouts through it}`` from rows of
    (problem index, completion ids, score)."""
    acc: dict = {}
    for pi, seq, score in rows:
        for b in step_boundaries(list(seq), split, step_tokens, has_newline):
            key = (pi, tuple(seq[:b]))
            s, n = acc.get(key, (0.0, 0))
            acc[key] = (s + float(score), n + 1)
    return {k: s / n for k, (s, n) in acc.items()}


@torch.no_grad()
def hidden_features(model, seqs: list[list[int]], pad_id: int, batch: int = 256) -> torch.Tensor:
    """The last hidden state (after the final norm) at each sequence's last token; right
    padding, so positions 0..len-1 are the sequence's own."""
    base = getattr(model, "model", None)
    dev = next(model.parameters()).device
    out = []
    for s in range(0, len(seqs), batch):
        chunk = seqs[s : s + batch]
        w = max(len(x) for x in chunk)
        ids = torch.full((len(chunk), w), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), w), dtype=torch.long)
        for i, x in enumerate(chunk):
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        if base is not None:
            h = base(input_ids=ids, attention_mask=mask).last_hidden_state
        else:
            h = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            h = h.hidden_states[-1]
        last = mask.sum(1) - 1
        out.append(h[torch.arange(len(chunk), device=dev), last].float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


# ------------------------------------------------------------------ running on a checkpoint


def search_temperature(cfg) -> float:
    """``eval.vm_mcts.temperature``, else ``eval.temperature``."""
    vm = cfg.eval.vm_mcts
    return vm.temperature if vm.temperature is not None else cfg.eval.temperature


def check_params(vm, max_new: int, temperature: float | None = None) -> None:
    """Cross-field checks of ``eval.vm_mcts`` (the schema checks each field)."""
    if temperature is not None and temperature <= 0:
        raise UserError(
            "eval.vm_mcts.temperature: the search samples several continuations per node, "
            f"so it needs a temperature > 0 (eval.temperature is {temperature}); set "
            "eval.vm_mcts.temperature (the authors': 0.7)"
        )
    if vm.split == "tokens" and vm.step_tokens >= max_new:
        raise UserError(
            f"eval.vm_mcts.step_tokens: {vm.step_tokens} is not below the generation budget "
            f"{max_new} (eval.max_new_tokens / rollout.max_new_tokens), so every child would "
            "be terminal; use a smaller step (e.g. step_tokens: 2)"
        )


def vm_dir_for(model_dir: str | Path) -> Path:
    """A run's value model sits next to its checkpoint: <run>/value_model."""
    return Path(model_dir).parent / VM_DIR


def value_model_hint(cfg) -> str:
    """The command that trains the value model of this run."""
    return f"grpo value-model {cfg.reproduction} --profile {cfg.profile} --seed {cfg.run.seed}"


def require_value_model(cfg, model_dir, vm_dir=None) -> Path:
    """The value model's directory; a one-line error when it is not there."""
    d = Path(vm_dir) if vm_dir else vm_dir_for(model_dir)
    if not (d / VM_JSON).exists() or not (d / VM_WEIGHTS).exists():
        raise UserError(
            f"eval.vm_mcts: no value model at {d} (needs {VM_JSON} and {VM_WEIGHTS}); train "
            f"it first: {value_model_hint(cfg)}"
        )
    return d


def load_value_head(vm_dir: Path, d_model: int, what: str) -> tuple[ValueHead, dict]:
    meta_f, w_f = vm_dir / VM_JSON, vm_dir / VM_WEIGHTS
    if not meta_f.exists() or not w_f.exists():
        raise UserError(
            f"eval.vm_mcts: no value model at {vm_dir} (needs {VM_JSON} and {VM_WEIGHTS}); "
            f"train it first: {what}"
        )
    try:
        meta = json.loads(meta_f.read_text())
        from safetensors.torch import load_file

        head = ValueHead(int(meta["d_model"]), int(meta["hidden"]))
        head.load_state_dict(load_file(str(w_f)))
    except Exception as e:  # any unreadable file (json, safetensors header, shapes): one line
        raise UserError(
            f"{vm_dir}: unreadable value model ({type(e).__name__}: {str(e)[:120]}); retrain "
            f"it: {what}"
        ) from None
    if int(meta["d_model"]) != d_model:
        raise UserError(
            f"{meta_f}: value model for hidden size {meta['d_model']}, but the checkpoint's is "
            f"{d_model}; retrain it on this checkpoint: {what}"
        )
    head.eval()
    return head, meta


def _load(cfg, model_dir):
    from grpo_core.models import load_model_and_tokenizer
    from grpo_core.rollout import HFEngine

    model, tok = load_model_and_tokenizer(str(model_dir), cfg.run.dtype, cfg.run.device)
    model.eval()
    eng = HFEngine(model, tok, cfg=cfg, model_path=str(model_dir), batch_size=cfg.eval.batch_size)
    return model, tok, eng


def _texts(tok, seqs: list[tuple], stop: list[str]) -> list[str]:
    if not seqs:
        return []
    pad = tok.pad_token_id
    w = max(1, max(len(s) for s in seqs))
    raw = torch.full((len(seqs), w), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        raw[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    return finish_completions(raw, tok, eos_token_ids(tok), stop, pad)[3]


def _completion_lists(ro) -> list[list[int]]:
    ids, mask = ro.completion_ids, ro.completion_mask
    return [ids[i][mask[i].bool()].tolist() for i in range(len(ro))]


def train_value_model(cfg, model_dir, out_dir=None, log=print) -> dict:
    """Roll the checkpoint out on train prompts, build the value targets, fit the head, write
    ``<out_dir>/value_head.pt`` and ``value_model.json``; returns the json."""
    from grpo_core.episodes import single_turn_prompts
    from grpo_core.tasks import grade_texts, make_task

    vm = cfg.eval.vm_mcts
    if vm is None:
        raise UserError(
            f"grpo value-model: {cfg.reproduction!r} sets no eval.vm_mcts (the VM-MCTS "
            "decoding of rest_rl); nothing to train"
        )
    max_new = cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens
    check_params(vm, max_new, search_temperature(cfg))
    out = Path(out_dir) if out_dir else vm_dir_for(model_dir)
    t0 = time.perf_counter()
    task = make_task(cfg.task)
    probs = task.train()[: vm.vm_prompts]
    model, tok, eng = _load(cfg, model_dir)
    prompts = single_turn_prompts(tok, cfg.task.template, probs)
    flat = [p for p in prompts for _ in range(vm.vm_k)]
    temp = search_temperature(cfg)
    params = SamplingParams(
        temperature=temp,
        top_p=cfg.eval.top_p,
        max_new_tokens=max_new,
        stop=list(cfg.rollout.stop),
        seed=derive_seed(vm.seed, 5151),
    )
    ro = eng.generate(flat, params)
    seqs = _completion_lists(ro)
    problems = [p for p in probs for _ in range(vm.vm_k)]
    scores = [g.score for g in grade_texts(task, ro.texts, problems)]
    task.close()
    nl = NewlineTest(tok)
    rows = [(i // vm.vm_k, s, sc) for i, (s, sc) in enumerate(zip(seqs, scores))]
    targets = value_targets(rows, vm.split, vm.step_tokens, nl)
    keys = sorted(targets, key=lambda k: (k[0], len(k[1]), k[1]))
    states = [list(prompts[pi]) + list(pre) for pi, pre in keys]
    feats = hidden_features(model, states, tok.pad_token_id, batch=cfg.eval.batch_size)
    y = torch.tensor([targets[k] for k in keys], dtype=torch.float32)
    head, losses = fit_value_head(feats, y, vm.vm_hidden, vm.vm_steps, vm.vm_lr, vm.seed)
    var = float(((y - y.mean()) ** 2).mean())
    meta = {
        "d_model": int(feats.shape[1]),
        "hidden": vm.vm_hidden,
        "model": str(model_dir),
        "n_prompts": len(probs),
        "k": vm.vm_k,
        "n_states": len(keys),
        "mean_score": sum(scores) / max(1, len(scores)),
        "target_var": var,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        # 1 - mse / var: the share of the targets' variance the head explains
        "r2": 1 - losses[-1] / var if var > 0 else None,
        "split": vm.split,
        "step_tokens": vm.step_tokens,
        "temperature": temp,
        "train_s": time.perf_counter() - t0,
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (VM_WEIGHTS + ".tmp")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp))
    tmp.replace(out / VM_WEIGHTS)
    tmp = out / (VM_JSON + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(out / VM_JSON)
    log(
        f"value model: {len(keys)} states from {len(seqs)} rollouts (mean score "
        f"{meta['mean_score']:.3f}); mse {losses[0]:.4f} -> {losses[-1]:.4f} (target var "
        f"{var:.4f}) -> {out}"
    )
    return meta


def mcts_decode(cfg, model_dir, test, task, vm_dir=None, what="", log=print) -> dict:
    """VM-MCTS on the problems ``test``: per problem the chosen completion, its task score and
    the search's compute. Returns {"metrics", "samples", "protocol"}."""
    from grpo_core.episodes import single_turn_prompts
    from grpo_core.tasks import grade_texts

    vm = cfg.eval.vm_mcts
    max_new = cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens
    check_params(vm, max_new, search_temperature(cfg))
    t0 = time.perf_counter()
    model, tok, eng = _load(cfg, model_dir)
    head, meta = load_value_head(
        Path(vm_dir) if vm_dir else vm_dir_for(model_dir), model.config.hidden_size, what
    )
    if vm.n_prompts:
        test = test[: vm.n_prompts]
    prompts = single_turn_prompts(tok, cfg.task.template, test)
    nl = NewlineTest(tok)
    temp = search_temperature(cfg)
    cache: dict = {}

    def prefetch(reqs):  # every state of an iteration in one batched pass
        todo = [r for r in dict.fromkeys(reqs) if r not in cache]
        if todo:
            h = hidden_features(
                model,
                [list(prompts[t]) + list(s) for t, s in todo],
                tok.pad_token_id,
                batch=cfg.eval.batch_size,
            )
            for r, x in zip(todo, head.value(h).tolist()):
                cache[r] = x

    def value_fn_for(t):
        def fn(states):
            prefetch([(t, s) for s in states])
            return [cache[(t, s)] for s in states]

        return fn

    def sample_fn(todo, it):
        flat = [list(prompts[t]) + list(node.ids) for t, node in todo for _ in range(vm.num_sample)]
        params = SamplingParams(
            temperature=temp,
            top_p=cfg.eval.top_p,
            max_new_tokens=max_new - min(len(node.ids) for _, node in todo),
            stop=list(cfg.rollout.stop),
            seed=derive_seed(vm.seed, 7373, it),
        )
        seqs = _completion_lists(eng.generate(flat, params))
        out = []
        for j, (_, node) in enumerate(todo):
            room = max_new - len(node.ids)  # the rest of this node's budget
            out.append([s[:room] for s in seqs[j * vm.num_sample : (j + 1) * vm.num_sample]])
        return out

    def cut(seq):
        return step_cut(seq, vm.split, vm.step_tokens, nl)

    roots = [Node(()) for _ in test]
    stats = [SearchStats() for _ in test]
    rng = random.Random(vm.seed)
    fns = [value_fn_for(t) for t in range(len(test))]
    search(roots, sample_fn, cut, fns, vm, rng, stats, prefetch=prefetch)
    chosen = [best_completion(r) for r in roots]
    texts = _texts(tok, [c[0] if c else () for c in chosen], list(cfg.rollout.stop))
    grades = grade_texts(task, texts, test)
    bon = None
    if vm.bon_baseline:  # the same value model ranking as many whole samples from the root
        flat, owner = [], []
        for t, st in enumerate(stats):
            flat += [list(prompts[t])] * st.samples
            owner += [t] * st.samples
        params = SamplingParams(
            temperature=temp,
            top_p=cfg.eval.top_p,
            max_new_tokens=max_new,
            stop=list(cfg.rollout.stop),
            seed=derive_seed(vm.seed, 9191),
        )
        seqs = _completion_lists(eng.generate(flat, params)) if flat else []
        prefetch([(t, tuple(q)) for t, q in zip(owner, seqs)])
        best: dict = {}
        for t, q in zip(owner, seqs):
            v = cache[(t, tuple(q))]
            if t not in best or v > best[t][1]:
                best[t] = (tuple(q), v)
        b_texts = _texts(tok, [best.get(t, ((), 0))[0] for t in range(len(test))], cfg.rollout.stop)
        bon = [g.score for g in grade_texts(task, b_texts, test)]
    samples = []
    for p, root, c, txt, g, st in zip(test, roots, chosen, texts, grades, stats):
        samples.append(
            {
                "prompt_id": p.id,
                "completion": txt,
                "answer": g.pred,
                "gold": p.answer,
                "score": g.score,
                "correct": g.score >= 1.0,
                "vm_value": None if c is None else c[1],
                "candidates": len(all_completions(root)),
                "gen_calls": st.gen_calls,
                "samples": st.samples,
                "tokens": st.tokens,
                "vm_calls": st.vm_calls,
            }
        )
    n = max(1, len(samples))
    metrics = {
        "mcts_acc": sum(s["correct"] for s in samples) / n,
        "mcts_score": sum(s["score"] for s in samples) / n,
        "mcts_samples": sum(s["samples"] for s in samples) / n,
        "mcts_gen_calls": sum(s["gen_calls"] for s in samples) / n,
        "mcts_tokens": sum(s["tokens"] for s in samples) / n,
        "mcts_vm_calls": sum(s["vm_calls"] for s in samples) / n,
    }
    if bon is not None:  # VM best-of-N at the search's sample count, problem by problem
        metrics["vm_bon_acc"] = sum(x >= 1.0 for x in bon) / n
        for smp, x in zip(samples, bon):
            smp["bon_score"] = x
    dt = time.perf_counter() - t0
    log(
        f"VM-MCTS on {len(test)} problems: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items())
    )
    protocol = {
        **vm.model_dump(mode="json"),
        "temperature": temp,
        "max_new_tokens": max_new,
        "engine": "hf",
        "value_model": {k: meta.get(k) for k in ("n_states", "loss_last", "r2", "model")},
        "n_prompts": len(test),
    }
    return {"metrics": metrics, "samples": samples, "protocol": protocol, "search_s": dt}
