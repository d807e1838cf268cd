"""Samplers: which prompts a step trains on, and how many generation rounds fill the batch.

A sampler has ``next_prompts(n) -> list[int]`` (indices into the train split),
``group_sizes(indices, G) -> list[int]`` (rollouts per prompt; G each unless the sampler allocates
a budget), ``keep(groups: list of 1-D reward tensors) -> bool mask`` deciding which sampled groups
enter the batch, ``update(stats) -> dict | None`` after each step (stats: "indices", "problems",
"rewards" [N], "group_sizes", "texts" [N], "step" of all kept groups, and "entropy", the step's
token-mean policy entropy; a returned dict is logged as
"sampler/<key>"), and ``state_dict`` / ``load_state_dict`` for exact resume.

Every sampler accepts ``sampler.params.pool: K`` (train only on the first K prompts of the train
split; the test split is unchanged), so a per-prompt statistic can be revisited within a short run.
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import numpy as np
import torch

from grpo_core import params as P
from grpo_core.errors import UserError
from grpo_core.registry import Registry
from grpo_core.runtime import derive_seed
from grpo_core.schema import SamplerCfg

SAMPLERS: Registry = Registry("sampler", default_params=P.SamplerParams)


@SAMPLERS.register("uniform")
class UniformSampler:
    """Epochs over the shuffled train split; every sampled group is kept."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        self.n, self.cfg = n_items, cfg
        # this sampler's params (the registered class's model; defaults filled in), pool apart
        self.p = SAMPLERS.resolve_params(SAMPLERS.name_of(type(self)), cfg.params, "sampler.params")
        pool = self.p.pop("pool", None)
        if pool is not None:
            self.n = min(n_items, pool)
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.pos = 0
        self.epoch = 0

    def next_prompts(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if self.pos >= len(self.order):
                self.order = list(range(self.n))
                self.rng.shuffle(self.order)
                self.pos, self.epoch = 0, self.epoch + 1
            out.append(self.order[self.pos])
            self.pos += 1
        return out

    @property
    def max_rounds(self) -> int:
        return 1

    def group_sizes(self, indices: list[int], group_size: int) -> list[int]:
        return [group_size] * len(indices)

    def keep(
        self, groups: list[torch.Tensor], acc: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``groups``: each sampled group's total rewards; ``acc``: its per-sample accuracy
        (1.0 where the task's grader scores the answer correct, before any shaping term)."""
        return torch.ones(len(groups), dtype=torch.bool)

    def update(self, stats: dict) -> dict | None:
        return None

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.getstate(),
            "order": self.order,
            "pos": self.pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, s: dict) -> None:
        st = s["rng"]
        self.rng.setstate((st[0], tuple(st[1]), st[2]))
        self.order, self.pos, self.epoch = list(s["order"]), s["pos"], s["epoch"]


@SAMPLERS.register("dynamic", params=P.DynamicParams)
class DynamicSampler(UniformSampler):
    """DAPO dynamic sampling (Yu et al. 2025): drop groups whose accuracies are all equal (all
    right or all wrong) and keep generating until the batch holds ``prompts_per_step`` groups,
    at most ``cfg.max_rounds`` rounds; if the cap is hit the batch is trained as it is.
    ``params.metric``: ``acc`` (default; verl's recipe/dapo ``filter_groups.metric=acc``: the
    correctness of each answer, before the overlong penalty) or ``reward`` (the total shaped
    reward: a group whose answers are all right but differ in length penalty is kept)."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.metric = self.p["metric"]

    @property
    def max_rounds(self) -> int:
        return self.cfg.max_rounds

    def keep(
        self, groups: list[torch.Tensor], acc: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        # uniform selection with the nonzero_std filter (sampler.filter composes it with any
        # sampler)
        return nonzero_std_filter(groups, acc, metric=self.metric)


@SAMPLERS.register("aepo", params=P.AepoParams)
class EntropyTargetSampler(UniformSampler):
    """AEPO (Wang et al. 2025, arXiv:2510.08141; the authors' verl trainer): hold the policy's
    entropy at a target with a REINFORCE term on samples of a temperature-adjusted policy.
    After each step the measured token entropy H (the training pass's, logged as ``entropy``)
    sets the next step's extra round (:meth:`grpo_core.trainer.Trainer._extra_round`): the first
    ``frac`` of the batch's prompts are sampled again (G each) at ``t_high`` if H <= ``target``
    else at ``t_low``; the completions whose advantage within their new group exceeds
    ``min_adv`` join the batch with advantage ``advantage``, at most ``max_rows`` of them; when
    cooling half of that, min(max_rows, candidates) // 2 (the authors' ray_trainer.py). No extra round before the first entropy is measured. Prompt order is
    the uniform sampler's."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.entropy: float | None = None

    def extra_round(self, step: int) -> dict | None:
        if self.entropy is None:
            return None
        hot = self.entropy <= float(self.p["target"])
        cap = int(self.p["max_rows"])
        return {
            "temperature": float(self.p["t_high"] if hot else self.p["t_low"]),
            "frac": float(self.p["frac"]),
            "min_adv": float(self.p["min_adv"]),
            "max_rows": cap,
            # cooling keeps half: min(cap, candidates) // 2 (the authors' code)
            "keep_frac": 1.0 if hot else 0.5,
            "advantage": float(self.p["advantage"]),
        }

    def update(self, stats: dict) -> dict | None:
        e = stats.get("entropy")
        if e is None or e != e:  # missing or NaN (no batch this step)
            return None
        self.entropy = float(e)
        return {"entropy_gap": self.entropy - float(self.p["target"])}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "entropy": self.entropy}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.entropy = s.get("entropy")


@SAMPLERS.register("reference", params=P.ReferenceParams)
class ReferenceSampler(UniformSampler):
    """Uniform prompts plus a reference round: the first ``frac`` of the batch's prompts get
    the task's reference completion (what SFT teaches) as one more, off-policy row of their
    group (the plan ``kind: reference`` of :meth:`grpo_core.trainer.Trainer._extra_round`), for
    losses that align the samples with a reference answer (GRAO). ``mode: replace``: the
    reference takes the place of the group's last sampled row instead (TempSamp-R1's
    ground-truth injection: G - 1 samples + the ground truth), so the group keeps G rows."""

    def extra_round(self, step: int) -> dict | None:
        return {"kind": "reference", "frac": float(self.p["frac"]), "mode": self.p["mode"]}


@SAMPLERS.register("critique", params=P.CritiqueParams)
class CritiqueSampler(UniformSampler):
    """Critique-GRPO (Zhang et al. 2025, arXiv:2506.03106; github.com/zhangxy-2019/critique-GRPO)
    refinement round: after the main round, each first attempt of the first ``frac`` of the
    batch's prompts is critiqued by a rule-based critic (:meth:`critique`), the policy writes a
    refinement from the question, its attempt and the critique (:meth:`refine_prompt`), and one
    refinement per prompt (the first correct one, else the highest reward) joins that prompt's
    group as a response to the original question (the plan ``kind: refine`` of
    :meth:`grpo_core.trainer.Trainer._extra_round`). Prompt order is the uniform sampler's."""

    # the authors' critique_prompts.py texts for critique_type simple / simple_gt
    TEXTS = {
        True: "The generated solution is correct",
        False: "The generated solution is incorrect",
    }

    def extra_round(self, step: int) -> dict | None:
        return {
            "kind": "refine",
            "frac": float(self.p["frac"]),
            "critique": self.critique,
            "prompt": self.refine_prompt,
        }

    def critique(self, answer: str | None, correct: bool, gold: str) -> str:
        """``simple``: right / wrong; ``simple_gt``: and the ground truth (the authors' run);
        ``hint``: wrong answers get the last character of the ground truth instead (for a
        number: its last digit), a hint that does not give the answer away."""
        kind = self.p["critique"]
        text = self.TEXTS[bool(correct)]
        if kind == "simple_gt":
            return f"{text}, the ground truth is {gold}."
        if kind == "hint" and not correct:
            said = answer if answer is not None else "no answer"
            return f"{text}: {said} is wrong, the answer ends in {gold[-1:]}."
        return f"{text}."

    @staticmethod
    def refine_prompt(question: str, attempt: str, critique: str) -> str:
        """The refinement turn's user message: the question, the previous attempt, the critique,
        then the question again (a compact form of the authors' refine_prompt, which asks to
        correct the errors the critique names and re-answer)."""
        return (
            f"Question: {question}\nPrevious solution: {attempt}\nCritique: {critique}\n"
            f"Re-answer: {question}"
        )


@SAMPLERS.register("urpo", params=P.UrpoParams)
class UrpoSampler(UniformSampler):
    """URPO (Lu et al. 2025, arXiv:2507.17515): the policy is player and referee in one GRPO
    batch. After the main (player) round, the first ``frac`` of the batch's prompts become
    referee data (the plan ``kind: referee`` of :meth:`grpo_core.trainer.Trainer._extra_round`):
    the referee prompt (:meth:`referee_prompt`) shows the question and two candidate answers,
    one right (the label) and one wrong (:meth:`referee_pair`: a wrong answer of the player's
    own group when it has one, else a distractor), in a seeded order; the policy answers with
    the right one, G samples per referee prompt, rewarded by the run's reward functions against
    the label (the verdict is correct when its answer is the right candidate). The referee
    groups join the batch as groups of their own and get the estimator's advantages like the
    player's. URPO's preference data recast as a pairwise verdict scored against the known
    preference; there is no unlabeled data here, so no verdict replaces a reward. Prompt order is
    the uniform sampler's."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.seed = seed

    def extra_round(self, step: int) -> dict | None:
        return {
            "kind": "referee",
            "frac": float(self.p["frac"]),
            "group_size": self.p["group_size"],
            "pair": lambda gold, preds, correct, k: self.referee_pair(
                gold, preds, correct, step, k
            ),
            "prompt": self.referee_prompt,
        }

    def referee_pair(
        self, gold: str, preds: list, correct: list[bool], step: int, k: int
    ) -> tuple[str, str, bool] | None:
        """(first candidate, second candidate, whether the wrong one is the player's) for a
        group of gold answer ``gold`` whose answers are ``preds`` (None: no answer) with grades
        ``correct``. The wrong candidate: the group's first wrong answer, else (all right or no
        answers) the distractor gold + 10 (an integer gold; otherwise no referee prompt, None).
        The order is drawn from (run seed, step, k): the right one first half the time."""
        wrong = next((a for a, ok in zip(preds, correct) if a is not None and not ok), None)
        own = wrong is not None
        if wrong is None:
            try:
                wrong = str(int(gold) + 10)
            except ValueError:
                return None
        rng = random.Random(f"urpo/{self.seed}/{step}/{k}")
        a, b = (gold, wrong) if rng.random() < 0.5 else (wrong, gold)
        return a, b, own

    @staticmethod
    def referee_prompt(question: str, a: str, b: str) -> str:
        """The referee's user message: the two candidates, then the question as the player
        sees it (URPO's referee template asks which response is better; here the answer is the
        better candidate itself, which a model that writes numbers can give)."""
        return f"Which is right, {a} or {b}?\n{question}"


def experience_category(gold: str, worse: str | None) -> tuple[str, str]:
    """(key, what went wrong) of the worse rollout's answer ``worse`` against ``gold``: the
    rule-based semantic advantage of Training-Free GRPO on an arithmetic task. Keys: format (no
    answer), digits (another number of digits), carry (off by a power of ten: a lost or extra
    carry), ones (a wrong last digit), tens (another digit wrong), answer (not integers)."""
    if worse is None:
        return "format", "End the reply with the final number."
    try:
        g, w = int(gold), int(worse)
    except ValueError:
        return "answer", "Check the result against the question before answering."
    if len(str(abs(g))) != len(str(abs(w))):
        return "digits", f"The answer has {len(str(abs(g)))} digits."
    d = abs(g - w)
    if d >= 10 and d in {10**i for i in range(1, 12)}:
        return "carry", "When a column sums to 10 or more, carry 1 into the next column."
    if g % 10 != w % 10:
        return "ones", "The last digit is the last digit of the sum of the last digits."
    return "tens", "Add the tens digits and the carry from the ones."


EXPERIENCE_FILE = "experience.json"  # the library, next to a checkpoint's weights (for eval)


def read_experience_prefix(model_dir) -> str | None:
    """The experience prefix a checkpoint directory carries (``experience.json``, written by a
    run of the experience sampler), or None when it has none. A malformed file is an error."""
    import json
    from pathlib import Path

    f = Path(model_dir) / EXPERIENCE_FILE
    if not f.exists():
        return None
    try:
        d = json.loads(f.read_text())
        prefix = d["prefix"]
    except (ValueError, KeyError, TypeError):
        raise UserError(
            f"{f}: not an experience library (want JSON with a 'prefix' string, as "
            "training_free_grpo writes); delete it or rerun the training"
        ) from None
    if prefix is not None and not isinstance(prefix, str):
        raise UserError(f"{f}: 'prefix' must be a string or null, got {type(prefix).__name__}")
    return prefix or None


@SAMPLERS.register("experience", params=P.ExperienceParams)
class ExperienceSampler(UniformSampler):
    """Training-Free GRPO (Cai et al. 2025, arXiv:2510.08191; github.com/TencentCloudADP/
    youtu-agent, branch training_free_GRPO): an experience library learned from each step's
    groups, shown before every prompt as a prior (:meth:`prefix`), with no weight update (run
    it with ``train.optimize: false``). After a step (:meth:`update`), each group whose rewards
    differ (``only_partial``; the paper's 0 < mean < 1) gives one semantic advantage: what its
    best rollout did that its worst did not (:func:`experience_category` names the error of the
    worst; the text is the rule's, or the policy's own sentence with ``summariser: policy``),
    applied as one operation: *modify* the experience of that key (new text, support + 1) or
    *add* it. Then experiences not reinforced for ``ttl`` updates, and the least supported past
    ``max_items``, are *deleted*. The library is sampler state (checkpointed) and is written to
    the checkpoint as ``experience.json``, which evaluation prepends to its prompts."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.library: dict[str, dict] = {}  # id -> {key, text, support, age}
        self.next_id = 0
        self.generate = None  # the policy summariser's texts -> texts (Trainer binds it)

    def bind_generate(self, fn) -> None:
        self.generate = fn

    def prefix_text(self) -> str | None:
        """The library as the prompt prior: the header, then ``[G<id>]. text`` lines, cut to
        ``max_chars``; None while the library is empty."""
        if not self.library:
            return None
        lines = [self.p["header"]] + [f"[{i}]. {e['text']}" for i, e in self.library.items()]
        return ("\n".join(lines) + "\n")[: int(self.p["max_chars"])]

    def prefix(self, index: int, problem, task) -> str | None:
        return self.prefix_text()

    def summarise(self, groups: list[dict]) -> list[tuple[str, str]]:
        """One (key, text) per group ({question, gold, better, worse, better_pred,
        worse_pred}): the rule's, or with ``summariser: policy`` the policy's sentence (its
        first line; the rule's text when it writes nothing)."""
        out = []
        for g in groups:  # the rule: the error class and a worked example of this group
            key, rule = experience_category(g["gold"], g["worse_pred"])
            out.append((key, f"{rule} E.g. {g['question']} = {g['gold']}."))
        if self.p["summariser"] != "policy" or not groups:
            return out
        if self.generate is None:
            raise UserError(
                "sampler experience with summariser: policy needs the trainer's generate "
                "(Trainer binds it); use summariser: rule outside a run"
            )
        prompts = [self.summary_prompt(g) for g in groups]
        texts = self.generate(prompts, int(self.p["summary_tokens"]))
        res = []
        for (key, rule), t in zip(out, texts):  # the policy's text, the rule's key
            line = next((x.strip() for x in str(t).splitlines() if x.strip()), "")
            res.append((key, line[:160] or rule))
        return res

    @staticmethod
    def summary_prompt(g: dict) -> str:
        """The policy summariser's user message (a short form of the paper's group advantage
        prompt: compare the rollouts and state a general lesson)."""
        return (
            f"Problem: {g['question']}\nCorrect solution: {g['better']}\n"
            f"Wrong solution: {g['worse']}\nIn one short sentence, state a general lesson: "
            "what did the correct solution do that the wrong one did not?"
        )

    def apply(self, ops: list[tuple[str, str]]) -> dict:
        """Apply one step's (key, text) operations to the library (modify the key's experience,
        else add it), then age and delete. Returns the counts of each operation."""
        n_add = n_mod = 0
        touched = set()
        by_key = {e["key"]: i for i, e in self.library.items()}
        for key, text in ops:
            if key in by_key:
                e = self.library[by_key[key]]
                e["text"], e["support"], e["age"] = text, e["support"] + 1, 0
                n_mod += 1
            else:
                i = f"G{self.next_id}"
                self.next_id += 1
                self.library[i] = {"key": key, "text": text, "support": 1, "age": 0}
                by_key[key] = i
                n_add += 1
            touched.add(by_key[key])
        n_del = 0
        for i in list(self.library):
            if i not in touched:
                self.library[i]["age"] += 1
                if self.library[i]["age"] >= int(self.p["ttl"]):
                    del self.library[i]
                    n_del += 1
        while len(self.library) > int(self.p["max_items"]):
            # the least supported, the oldest (lowest id) first on ties
            worst = min(self.library, key=lambda i: (self.library[i]["support"], int(i[1:])))
            del self.library[worst]
            n_del += 1
        return {"n_add": n_add, "n_modify": n_mod, "n_delete": n_del}

    def update(self, stats: dict) -> dict | None:
        from grpo_core.tasks import extract_answer

        problems, rewards, texts = stats["problems"], stats["rewards"], stats["texts"]
        groups, s = [], 0
        for g in stats["group_sizes"]:
            r = [float(x) for x in rewards[s : s + g]]
            if max(r) - min(r) > 1e-8 or not self.p["only_partial"]:
                hi = max(range(g), key=lambda j: (r[j], -j))  # the first best
                lo = min(range(g), key=lambda j: (r[j], j))  # the first worst
                p = problems[s]
                groups.append(
                    {
                        "question": p.meta.get("expression", p.question),
                        "gold": p.answer,
                        "better": texts[s + hi],
                        "worse": texts[s + lo],
                        "better_pred": extract_answer(texts[s + hi]),
                        "worse_pred": extract_answer(texts[s + lo]),
                    }
                )
            s += g
        logs = self.apply(self.summarise(groups))
        logs.update(library_size=len(self.library), n_learn_groups=len(groups))
        return logs

    def checkpoint_files(self) -> dict[str, str]:
        import json

        return {
            EXPERIENCE_FILE: json.dumps(
                {"prefix": self.prefix_text(), "experiences": self.library}, indent=1
            )
        }

    def state_dict(self) -> dict:
        return {**super().state_dict(), "library": self.library, "next_id": self.next_id}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.library = {k: dict(v) for k, v in s.get("library", {}).items()}
        self.next_id = int(s.get("next_id", 0))


def arpo_failed_groups(groups: list[torch.Tensor], fail_std: float, fail_mean: float) -> list[bool]:
    """ARPO's all-negative groups (the authors' apply_replay): population std of the group's
    rewards below ``fail_std`` and mean below ``fail_mean``."""
    out = []
    for r in groups:
        r = r.double()
        out.append(bool(r.std(correction=0) < fail_std and r.mean() < fail_mean))
    return out


@SAMPLERS.register("arpo", params=P.ArpoParams)
class ArpoSampler(UniformSampler):
    """ARPO (Lu et al. 2025, "ARPO: End-to-End Policy Optimization for GUI Agents with Experience
    Replay", arXiv:2505.16282; github.com/dvlab-research/ARPO): a replay buffer of successful
    trajectories per task, and task selection.

    Replay (the plan ``kind: replay`` of :meth:`grpo_core.trainer.Trainer._replay_round`):
    after the main round, every group that is all-negative (:func:`arpo_failed_groups`) and
    whose task has buffered successes gets ``n_replay`` of them, drawn with replacement
    (``random.choices``), in place of its first rows, marked off-policy; then every on-policy
    trajectory of the batch whose reward exceeds ``success`` is stored (FIFO, at most
    ``buffer_size`` per task), as the authors' code does after the injection.
    Task selection: prompts in epochs over the pool as ``uniform``; with ``select``, epochs
    after the first visit only the tasks whose first group had a success (all tasks while
    none has)."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.buffer: dict[int, list[dict]] = {}
        self.first_ok: dict[int, bool] = {}  # task -> its first visit had a success

    def next_prompts(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if self.pos >= len(self.order):
                pool = list(range(self.n))
                if self.p["select"] and self.epoch >= 1:
                    pool = [i for i in pool if self.first_ok.get(i, True)] or pool
                self.order = pool
                self.rng.shuffle(self.order)
                self.pos, self.epoch = 0, self.epoch + 1
            out.append(self.order[self.pos])
            self.pos += 1
        return out

    def extra_round(self, step: int) -> dict | None:
        return {"kind": "replay", "buffer": self, "importance": self.p["importance"]}

    def failed(self, groups: list[torch.Tensor]) -> list[bool]:
        return arpo_failed_groups(groups, float(self.p["fail_std"]), float(self.p["fail_mean"]))

    def is_success(self, reward: float) -> bool:
        return float(reward) > float(self.p["success"])

    def draw(self, index: int, k: int) -> list[dict]:
        """k buffered trajectories of task ``index`` (with replacement), [] if it has none."""
        entries = self.buffer.get(int(index))
        return self.rng.choices(entries, k=k) if entries else []

    def store(self, index: int, entry: dict) -> None:
        buf = self.buffer.setdefault(int(index), [])
        buf.append(entry)
        if len(buf) > int(self.p["buffer_size"]):
            buf.pop(0)

    def size(self) -> int:
        return sum(len(v) for v in self.buffer.values())

    def update(self, stats: dict) -> dict | None:
        for idx, r, _ in split_groups(stats):
            if idx not in self.first_ok:
                self.first_ok[idx] = any(self.is_success(x) for x in r.tolist())
        return {
            "buffer_tasks": float(len(self.buffer)),
            "selected_tasks": float(sum(self.first_ok.values())),
        }

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "buffer": [[k, v] for k, v in sorted(self.buffer.items())],
            "first_ok": [[k, v] for k, v in sorted(self.first_ok.items())],
        }

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.buffer = {int(k): list(v) for k, v in s["buffer"]}
        self.first_ok = {int(k): bool(v) for k, v in s["first_ok"]}


@SAMPLERS.register("seagent", params=P.SeagentParams)
class SeagentSampler(UniformSampler):
    """SEAgent (Sun et al. 2025, "SEAgent: Self-Evolving Computer Use Agent with Autonomous
    Learning from Experience", arXiv:2508.04700): the curriculum generator. The train split is
    a pool of tasks on apps the SFT start never saw (task gui_apps, ``train_apps: novel``;
    each problem's meta: app, level, goal); the sampler reads it (``bind_problems``) and the
    episodes' infos (``wants_infos``: the env's world-state diffs). It keeps, per app, the
    state keys the agent has changed in any episode (what it explored) and, per task, whether
    a judged success was seen. A task is eligible when its level <= the unlocked level and,
    above level 1, every key of its goal is explored on its app (new tasks are composed from
    what the agent has done there); unsolved eligible tasks are drawn first, uniformly,
    without repeats within a step. Level l + 1 unlocks when the judged success rate of the last
    ``window`` episodes at level l reaches ``promote`` (simple to complex). The paper's
    generator is an LLM writing new task texts from the explored states; here the task space
    is generated ahead (every task of the novel apps) and the generator chooses from it."""

    wants_infos = True

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.meta: list[tuple[str, int, list[str]]] | None = None  # (app, level, goal keys)
        self.explored: dict[str, set[str]] = {}
        self.solved: set[int] = set()
        self.level = 1
        self.recent: dict[int, list[float]] = {}

    def bind_problems(self, problems: list) -> None:
        out = []
        for i, p in enumerate(problems[: self.n]):
            m = p.meta
            if not {"app", "level", "goal"} <= set(m):
                raise UserError(
                    f"sampler seagent: train problem {i} ({p.id}) has no app / level / goal in "
                    "its meta; use it with task.name: gui_apps"
                )
            out.append((str(m["app"]), int(m["level"]), sorted(m["goal"])))
        self.meta = out

    def eligible(self) -> list[int]:
        if self.meta is None:
            raise UserError("sampler seagent: no train problems bound (bind_problems)")
        out = []
        for i, (app, level, keys) in enumerate(self.meta):
            if level > self.level:
                continue
            if level == 1 or set(keys) <= self.explored.get(app, set()):
                out.append(i)
        return out

    def next_prompts(self, n: int) -> list[int]:
        el = self.eligible()
        if not el:  # no level-1 task in the pool: every task
            el = list(range(len(self.meta)))
        fresh = [i for i in el if i not in self.solved]
        out: list[int] = []
        for pool in (fresh, [i for i in el if i in self.solved]):
            pool = list(pool)
            self.rng.shuffle(pool)
            out += pool[: n - len(out)]
        while len(out) < n:  # fewer eligible tasks than prompts: repeats
            out.append(self.rng.choice(el))
        self.epoch += 1
        return out

    def update(self, stats: dict) -> dict | None:
        infos = stats.get("infos")
        if infos is None:
            raise UserError("sampler seagent: the step's infos are missing (wants_infos)")
        ok = float(self.p["success"])
        for idx, r, info in zip(stats["indices"], stats["rewards"], infos):
            idx = int(idx)
            app, level, _ = self.meta[idx]
            self.explored.setdefault(app, set()).update(d[0] for d in info.get("diff", []))
            good = float(r) >= ok
            if good:
                self.solved.add(idx)
            self.recent.setdefault(level, []).append(float(good))
            self.recent[level] = self.recent[level][-int(self.p["window"]) :]
        top = min(int(self.p["max_level"]), max(lv for _, lv, _ in self.meta))
        while self.level < top:
            last = self.recent.get(self.level, [])
            if len(last) < int(self.p["window"]) or sum(last) / len(last) < float(
                self.p["promote"]
            ):
                break
            self.level += 1
        return {
            "level": float(self.level),
            "eligible": float(len(self.eligible())),
            "solved": float(len(self.solved)),
            "explored_keys": float(sum(len(v) for v in self.explored.values())),
        }

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "explored": [[k, sorted(v)] for k, v in sorted(self.explored.items())],
            "solved": sorted(self.solved),
            "level": self.level,
            "recent": [[k, v] for k, v in sorted(self.recent.items())],
        }

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.explored = {k: set(v) for k, v in s["explored"]}
        self.solved = set(int(x) for x in s["solved"])
        self.level = int(s["level"])
        self.recent = {int(k): list(v) for k, v in s["recent"]}


# ------------------------------------------------------------------ group filters
# A group filter decides which sampled groups enter the batch (``sampler.filter``); the step
# keeps generating (up to ``sampler.max_rounds`` rounds) until prompts_per_step groups are
# kept. It composes with any sampler's prompt selection and allocation.

FILTERS: Registry = Registry("group filter")


@FILTERS.register("nonzero_std", params=P.NonzeroStdFilterParams)
def nonzero_std_filter(
    groups: list[torch.Tensor], acc: list[torch.Tensor] | None, metric: str = "acc"
) -> torch.Tensor:
    """Keep a group when its ``metric`` varies: ``acc`` (the task's correctness of each answer,
    before shaping terms; DAPO's and verl's ``filter_groups.metric=acc``; with 0/1 accuracy:
    0 < successes < G) or ``reward`` (the total shaped reward)."""
    if metric == "acc":
        if acc is None:
            raise ValueError("the nonzero_std filter with metric acc needs per-sample accuracy")
        groups = acc
    return torch.tensor([bool(r.max() - r.min() > 1e-8) for r in groups], dtype=torch.bool)


@FILTERS.register("reward_std", params=P.RewardStdFilterParams)
def reward_std_filter(
    groups: list[torch.Tensor],
    acc: list[torch.Tensor] | None,
    threshold: float = 0.05,
    metric: str = "reward",
) -> torch.Tensor:
    """ReST-GRPO (ReST-RL): keep a group when the population std of its ``metric`` (the shaped
    reward by default, the task's accuracy with ``acc``) is at least ``threshold``:
    ``sqrt(mean_i (r_i - mean r)^2) >= threshold`` (the authors drop ``std < 0.05``). With 0/1
    rewards and G < 400 this is nonzero_std; it differs on graded rewards (a test pass rate)."""
    if metric == "acc":
        if acc is None:
            raise ValueError("the reward_std filter with metric acc needs per-sample accuracy")
        groups = acc
    keep = [float(r.double().std(unbiased=False)) >= threshold - 1e-12 for r in groups]
    return torch.tensor(keep, dtype=torch.bool)


class FilteredSampler:
    """A sampler whose group filter is ``sampler.filter``: prompt selection, allocation,
    statistics, extra rounds and state are the wrapped sampler's; ``keep`` is the filter's and
    ``max_rounds`` is ``sampler.max_rounds``."""

    def __init__(self, base, cfg: SamplerCfg):
        self.base = base
        f = cfg.filter
        self._filter = FILTERS.get(f.name, "sampler.filter.name")
        self._params = FILTERS.resolve_params(f.name, f.params, "sampler.filter.params")
        self._max_rounds = cfg.max_rounds

    @property
    def max_rounds(self) -> int:
        return self._max_rounds

    def keep(self, groups, acc=None) -> torch.Tensor:
        return self._filter(groups, acc, **self._params)

    def __getattr__(self, name):  # next_prompts, group_sizes, update, extra_round, state, ...
        return getattr(self.base, name)


def make_sampler(cfg: SamplerCfg, n_items: int, seed: int):
    """The sampler of ``cfg.name``, with ``cfg.filter`` as its group filter when one is set."""
    s = SAMPLERS.get(cfg.name, "sampler.name")(n_items, cfg, seed)
    if cfg.filter is None:
        return s
    if cfg.name == "dynamic":
        raise UserError(
            "sampler.filter: sampler 'dynamic' filters groups itself; use sampler.name: uniform "
            "with sampler.filter: {name: nonzero_std} (the same), or drop sampler.filter"
        )
    if hasattr(s, "hint"):  # scaf, seele: their keep decides the hint rounds
        raise UserError(
            f"sampler.filter: sampler {cfg.name!r} decides which groups are kept itself (a "
            "rejected group is sampled again with a hint); drop sampler.filter"
        )
    return FilteredSampler(s, cfg)


# ------------------------------------------------------------------ per-prompt statistics
# Samplers below keep statistics of each prompt's past groups (from ``update``) and use them to
# choose prompts (``next_prompts``) or to split the step's rollout budget len(indices) * G across
# them (``group_sizes``). All of their state is in ``state_dict`` (exact resume).


def split_groups(stats: dict) -> list[tuple[int, torch.Tensor, list[str]]]:
    """The update stats as (train index, rewards [g], texts [g]) per kept group."""
    rewards = torch.as_tensor(stats["rewards"], dtype=torch.float64)
    texts = stats.get("texts") or [""] * len(rewards)
    out, s = [], 0
    for g in stats["group_sizes"]:
        out.append((int(stats["indices"][s]), rewards[s : s + g], list(texts[s : s + g])))
        s += g
    return out


def weighted_without_replacement(
    rng: random.Random, weights, k: int, exclude: set[int] = frozenset()
) -> list[int]:
    """k distinct indices drawn with probability proportional to ``weights`` (Efraimidis and
    Spirakis 2006: the k largest keys log(u) / w). Zero weights are drawn last, uniformly."""
    keys = []
    for i, w in enumerate(weights):
        u = rng.random()
        if i in exclude:
            continue
        w = float(w)
        key = (1, math.log(max(u, 1e-300)) / w) if w > 0 else (0, u)
        keys.append((key, i))
    keys.sort(key=lambda t: (t[0][0], t[0][1], -t[1]), reverse=True)
    return [i for _, i in keys[:k]]


def _success(rewards: torch.Tensor, threshold: float) -> torch.Tensor:
    return (rewards >= threshold).double()


def knapsack_value(n: int, p: float) -> float:
    """Knapsack RL's value of giving a prompt with success rate p a group of n rollouts:
    P(the group has both outcomes) * p (1-p)^2 = (1 - p^n - (1-p)^n) * p * (1-p)^2."""
    return (1.0 - p**n - (1.0 - p) ** n) * p * (1.0 - p) ** 2


def knapsack_allocate(
    rates: list[float | None],
    group_size: int,
    min_n: int = 2,
    max_n: int | None = None,
    base_value: str = "min_n",
) -> list[int]:
    """Split the budget len(rates) * G into rollouts per prompt (Li et al. 2025, Knapsack RL).

    Prompts never seen get G; prompts whose last success rate was 0 or 1 get ``min_n``; the
    others get ``min_n`` plus k_i extra, with sum k_i = the remaining budget and
    k_i in [0, max_n - min_n] chosen by a dynamic programme to maximise
    sum_i knapsack_value(min_n + k_i, p_i). Budget no prompt can take (every effective prompt at
    max_n) goes round-robin to the prompts with success rate 0 (they may still be solved),
    else to the unseen ones, else to all.

    ``base_value``: what an effective prompt given no extra rollouts (k_i = 0) is worth:
    ``min_n`` = knapsack_value(min_n, p_i) (the paper's objective, the default) or ``zero``
    (the authors' solve_by_dp, whose "don't allocate" branch adds nothing, so each effective
    prompt is pushed to take at least one extra rollout).
    """
    G = group_size
    max_n = max_n or 4 * G
    budget = len(rates) * G
    sizes = [G if p is None else min_n for p in rates]
    eff = [i for i, p in enumerate(rates) if p is not None and 0.0 < p < 1.0]
    rest = budget - sum(sizes)
    if eff and rest > 0:
        K = max_n - min_n
        dp = np.zeros(rest + 1)  # best value with at most w extra rollouts
        choice = np.zeros((len(eff), rest + 1), dtype=np.int64)
        for j, i in enumerate(eff):
            gains = [knapsack_value(min_n + k, rates[i]) for k in range(min(K, rest) + 1)]
            if base_value == "zero":
                gains[0] = 0.0
            new = np.full(rest + 1, -np.inf)
            for k, v in enumerate(gains):
                cand = np.full(rest + 1, -np.inf)
                cand[k:] = dp[: rest + 1 - k] + v
                better = cand > new + 1e-15  # ties keep the smaller k: deterministic
                new = np.where(better, cand, new)
                choice[j] = np.where(better, k, choice[j])
            dp = new
        w = rest
        for j in reversed(range(len(eff))):
            k = int(choice[j, w])
            sizes[eff[j]] += k
            w -= k
        rest = budget - sum(sizes)
    if rest > 0:
        zero = [i for i, p in enumerate(rates) if p == 0.0]
        unseen = [i for i, p in enumerate(rates) if p is None]
        takers = zero or unseen or list(range(len(rates)))
        for t in range(rest):
            sizes[takers[t % len(takers)]] += 1
    return sizes


@SAMPLERS.register("knapsack", params=P.KnapsackParams)
class KnapsackSampler(UniformSampler):
    """Knapsack RL (Li et al. 2025, arXiv:2509.25849): prompts in epochs as ``uniform``; the step's
    rollout budget (prompts x G) is split across them by :func:`knapsack_allocate` from each
    prompt's success rate at its previous visit. Params: min_n (2), max_n (4 G), success (reward
    counted as a success, 1.0), pool."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.rate: dict[int, float] = {}
        self._logs: dict = {}

    def group_sizes(self, indices: list[int], group_size: int) -> list[int]:
        min_n, max_n = int(self.p["min_n"]), self.p["max_n"]
        if min_n > group_size or (max_n is not None and int(max_n) < group_size):
            raise UserError(
                f"sampler.params: min_n {min_n} / max_n {max_n} must bracket rollout.group_size {group_size}"
            )
        rates = [self.rate.get(i) for i in indices]
        sizes = knapsack_allocate(
            rates,
            group_size,
            min_n,
            None if max_n is None else int(max_n),
            base_value=self.p["base_value"],
        )
        self._logs = {
            "n_max": max(sizes),
            "n_min": min(sizes),
            "frac_seen": sum(r is not None for r in rates) / len(rates),
            "frac_effective": sum(r is not None and 0 < r < 1 for r in rates) / len(rates),
        }
        return sizes

    def update(self, stats: dict) -> dict | None:
        for i, r, _ in split_groups(stats):
            self.rate[i] = float(_success(r, self.p["success"]).mean())
        return dict(self._logs)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rate": dict(self.rate)}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.rate = {int(k): float(v) for k, v in s["rate"].items()}


def neyman_allocate(sigma: list[float], budget: int, min_n: int, max_n: int) -> list[int]:
    """Integer rollouts n_i proportional to sigma_i (minimises sum_i sigma_i^2 / n_i under
    sum_i n_i = budget), clipped to [min_n, max_n], summing exactly to ``budget``: floor, then
    largest remainders (or smallest, when the clipping overshoots)."""
    tot = sum(sigma)
    x = [budget * s / tot for s in sigma] if tot > 0 else [budget / len(sigma)] * len(sigma)
    n = [min(max(int(math.floor(v + 1e-9)), min_n), max_n) for v in x]
    while sum(n) < budget:
        i = max((i for i in range(len(n)) if n[i] < max_n), key=lambda i: (x[i] - n[i], -i))
        n[i] += 1
    while sum(n) > budget:
        i = min((i for i in range(len(n)) if n[i] > min_n), key=lambda i: (x[i] - n[i], i))
        n[i] -= 1
    return n


@SAMPLERS.register("cures", params=P.CuresParams)
class CuresSampler(UniformSampler):
    """CurES (CurES: From Gradient Analysis to Efficient Curriculum Learning for Reasoning LLMs,
    2025): a Beta posterior of each prompt's accuracy from all its past
    rollouts, p_i = (s_i + 1) / (n_i + 2) (Beta(1, 1) prior); prompts are drawn without
    replacement with probability proportional to p_i (1 - p_i) (the expected reward variance,
    which bounds the prompt's gradient), and the step's budget (prompts x G) is split in
    proportion to the posterior std sqrt(p_i (1 - p_i)) (Neyman allocation: least variance of
    the summed gradient), clipped to [min_n, max_n]. Params: min_n (2), max_n (2 G), success
    (1.0), pool."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.succ = [0] * self.n
        self.tries = [0] * self.n
        self._logs: dict = {}

    def posterior(self, i: int) -> float:
        return (self.succ[i] + 1) / (self.tries[i] + 2)

    def weights(self) -> list[float]:
        return [self.posterior(i) * (1 - self.posterior(i)) for i in range(self.n)]

    def next_prompts(self, n: int) -> list[int]:
        return weighted_without_replacement(self.rng, self.weights(), min(n, self.n))

    def group_sizes(self, indices: list[int], group_size: int) -> list[int]:
        min_n = int(self.p["min_n"])
        max_n = int(self.p["max_n"] or 2 * group_size)
        if not min_n <= group_size <= max_n:
            raise UserError(
                f"sampler.params: min_n {min_n} / max_n {max_n} must bracket rollout.group_size {group_size}"
            )
        sig = [math.sqrt(self.posterior(i) * (1 - self.posterior(i))) for i in indices]
        sizes = neyman_allocate(sig, len(indices) * group_size, min_n, max_n)
        self._logs = {
            "n_max": max(sizes),
            "n_min": min(sizes),
            "posterior_mean": sum(self.posterior(i) for i in indices) / len(indices),
            "frac_seen": sum(self.tries[i] > 0 for i in indices) / len(indices),
        }
        return sizes

    def update(self, stats: dict) -> dict | None:
        for i, r, _ in split_groups(stats):
            self.succ[i] += int(_success(r, self.p["success"]).sum())
            self.tries[i] += len(r)
        return dict(self._logs)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "succ": list(self.succ), "tries": list(self.tries)}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.succ, self.tries = list(s["succ"]), list(s["tries"])


@SAMPLERS.register("vade", params=P.VadeParams)
class VadeSampler(UniformSampler):
    """VADE (Hu et al. 2025, arXiv:2511.18902, a non-stationary bandit over prompts):
    a Beta(a_i, b_i) per prompt from its past successes and failures;
    each step draws theta_i ~ Beta(a_i, b_i) for every prompt (Thompson sampling) and trains on the
    n prompts with the largest information gain theta_i (1 - theta_i) (the reward variance a
    group would show). Two-scale prior decay: every step all (a, b) move toward the prior
    (a0, b0) by factor ``decay_slow``, and a prompt's old evidence is multiplied by
    ``decay_fast`` before a new visit's counts are added, so estimates follow the changing
    policy. Params: prior_a (1), prior_b (1), decay_slow (0.99), decay_fast (0.5), success
    (1.0), pool."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.a = np.full(self.n, float(self.p["prior_a"]))
        self.b = np.full(self.n, float(self.p["prior_b"]))
        self.nrng = np.random.default_rng(seed)
        self.seen = np.zeros(self.n, dtype=bool)
        self._logs: dict = {}

    def next_prompts(self, n: int) -> list[int]:
        theta = self.nrng.beta(self.a, self.b)
        gain = theta * (1.0 - theta)
        pick = np.argsort(-gain, kind="stable")[: min(n, self.n)]
        self._logs = {
            "gain_mean": float(gain[pick].mean()),
            "frac_seen": float(self.seen[pick].mean()),
        }
        return [int(i) for i in pick]

    def decay(self, visited: dict[int, tuple[float, float]]) -> None:
        """One step of the two-scale decay, then the visited prompts' new (successes, failures)."""
        a0, b0 = float(self.p["prior_a"]), float(self.p["prior_b"])
        ds, df = float(self.p["decay_slow"]), float(self.p["decay_fast"])
        self.a = a0 + ds * (self.a - a0)
        self.b = b0 + ds * (self.b - b0)
        for i, (s, f) in visited.items():
            self.a[i] = a0 + df * (self.a[i] - a0) + s
            self.b[i] = b0 + df * (self.b[i] - b0) + f
            self.seen[i] = True

    def update(self, stats: dict) -> dict | None:
        visited: dict[int, tuple[float, float]] = {}
        for i, r, _ in split_groups(stats):
            s = float(_success(r, self.p["success"]).sum())
            ps, pf = visited.get(i, (0.0, 0.0))
            visited[i] = (ps + s, pf + len(r) - s)
        self.decay(visited)
        return dict(self._logs)

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "a": self.a.copy(),
            "b": self.b.copy(),
            "seen": self.seen.copy(),
            "nrng": self.nrng.bit_generator.state,
        }

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.a, self.b, self.seen = np.array(s["a"]), np.array(s["b"]), np.array(s["seen"])
        self.nrng.bit_generator.state = s["nrng"]


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Trajectory diversity of a group: distinct character n-grams / all n-grams (0 if none)."""
    grams = [t[k : k + n] for t in texts for k in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@SAMPLERS.register("vas", params=P.VasParams)
class VasSampler(UniformSampler):
    """MMR1 Variance-Aware Sampling (Leng et al. 2025, arXiv:2509.21268): Variance Promotion Score
    VPS_i = w_var * p_i (1 - p_i) + w_div * TDS_i (p_i the prompt's last pass rate, TDS_i the
    distinct-2 diversity of its last group's completions), min-max normalised over the pool and
    refreshed every ``update_every`` steps; each step takes round(mix * n) prompts drawn by VPS
    (without replacement) and the rest from the uniform epoch order. Unvisited prompts get the
    mean VPS of the visited ones (MMR1 scores every prompt with probe rollouts first; here the
    training rollouts are the probes). Params: w_var (1.0), w_div (0.0, as the authors' released
    config), mix (0.5), update_every (4), ngram (2), success (1.0), pool."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.rate: dict[int, float] = {}
        self.div: dict[int, float] = {}
        self.weights: list[float] | None = None  # None: no refresh yet (weighted part uniform)
        self._logs: dict = {}

    def vps(self) -> list[float]:
        """Min-max normalised VPS over the pool (all ones while nothing is known)."""
        score = {
            i: float(self.p["w_var"]) * p * (1 - p) + float(self.p["w_div"]) * self.div.get(i, 0.0)
            for i, p in self.rate.items()
            if i < self.n
        }
        if not score:
            return [1.0] * self.n
        fill = sum(score.values()) / len(score)
        v = [score.get(i, fill) for i in range(self.n)]
        lo, hi = min(v), max(v)
        if hi - lo <= 1e-12:
            return [1.0] * self.n
        return [(x - lo) / (hi - lo) for x in v]

    def next_prompts(self, n: int) -> list[int]:
        k_w = int(round(n * float(self.p["mix"])))
        rand = super().next_prompts(n - k_w)
        w = self.weights if self.weights is not None else [1.0] * self.n
        picked = weighted_without_replacement(self.rng, w, k_w, exclude=set(rand))
        if self.weights is not None:
            self._logs = {"vps_picked": sum(w[i] for i in picked) / max(len(picked), 1)}
        return rand + picked

    def update(self, stats: dict) -> dict | None:
        for i, r, texts in split_groups(stats):
            self.rate[i] = float(_success(r, self.p["success"]).mean())
            self.div[i] = distinct_n(texts, int(self.p["ngram"]))
        if (int(stats["step"]) + 1) % int(self.p["update_every"]) == 0:
            self.weights = self.vps()
        return {**self._logs, "frac_scored": len(self.rate) / self.n}

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "rate": dict(self.rate),
            "div": dict(self.div),
            "weights": None if self.weights is None else list(self.weights),
        }

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.rate = {int(k): float(v) for k, v in s["rate"].items()}
        self.div = {int(k): float(v) for k, v in s["div"].items()}
        self.weights = None if s["weights"] is None else list(s["weights"])


def t_quantile(q: float, df: int) -> float:
    """Student-t quantile t_{q, df}: exact for df 1 and 2, Cornish-Fisher expansion in 1/df
    (Abramowitz and Stegun 26.7.5) above: at q = 0.975 off by 0.004 at df 3, < 1e-3 from df 4."""
    if df < 1:
        return math.inf
    if df == 1:
        return math.tan(math.pi * (q - 0.5))
    if df == 2:
        return (2 * q - 1) / math.sqrt(2 * q * (1 - q))
    z = NormalDist().inv_cdf(q)
    v = float(df)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / v + g2 / v**2 + g3 / v**3 + g4 / v**4


def ci_halfwidth(std: float, n: int, alpha: float = 0.05) -> float:
    """Half-width of the Student-t confidence interval of a mean from n samples with sample std
    ``std``: h(n) = t_{1 - alpha/2, n - 1} * std / sqrt(n)."""
    return t_quantile(1 - alpha / 2, n - 1) * std / math.sqrt(n)


@SAMPLERS.register("xrpo", params=P.XrpoParams)
class XrpoSampler(UniformSampler):
    """XRPO's rollout allocator (Bamba et al. 2025, arXiv:2510.06672): prompts in epochs as
    ``uniform``; each gets ``base`` rollouts, and the rest of the step's budget (prompts x G) goes
    one rollout at a time to the prompt with the largest priority
        Delta_i(n) = h_i(n) - h_i(n + 1) + c * sqrt(ln(1 + T) / (1 + N_i + n)),
    h_i(n) = t_{1-alpha/2, n-1} s_i / sqrt(n) the confidence half-width of its mean reward (s_i the
    reward std at its last visit; ``prior_std`` when unvisited), N_i its past rollouts, T all past
    rollouts (the exploration bonus), capped at ``max_n``. Params: base (G // 2, >= 2), max_n
    (2 G), alpha (0.05), c (0.1), prior_std (0.5), pool."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.std: dict[int, float] = {}
        self.count: dict[int, int] = {}
        self.total = 0
        self._logs: dict = {}

    def priority(self, i: int, n: int) -> float:
        s = self.std.get(i, float(self.p["prior_std"]))
        a = float(self.p["alpha"])
        drop = ci_halfwidth(s, n, a) - ci_halfwidth(s, n + 1, a)
        bonus = float(self.p["c"]) * math.sqrt(
            math.log(1 + self.total) / (1 + self.count.get(i, 0) + n)
        )
        return drop + bonus

    def group_sizes(self, indices: list[int], group_size: int) -> list[int]:
        import heapq

        base = int(self.p["base"] or max(2, group_size // 2))
        max_n = int(self.p["max_n"] or 2 * group_size)
        if not 2 <= base <= group_size <= max_n:
            raise UserError(
                f"sampler.params: want 2 <= base ({base}) <= rollout.group_size ({group_size}) "
                f"<= max_n ({max_n})"
            )
        sizes = [base] * len(indices)
        heap = [(-self.priority(i, base), k) for k, i in enumerate(indices)]
        heapq.heapify(heap)
        for _ in range(len(indices) * (group_size - base)):
            _, k = heapq.heappop(heap)  # the largest priority (the lowest position on ties)
            sizes[k] += 1
            if sizes[k] < max_n:
                heapq.heappush(heap, (-self.priority(indices[k], sizes[k]), k))
        self._logs = {"n_max": max(sizes), "n_min": min(sizes)}
        return sizes

    def update(self, stats: dict) -> dict | None:
        for i, r, _ in split_groups(stats):
            self.std[i] = float(r.std()) if len(r) > 1 else 0.0
            self.count[i] = self.count.get(i, 0) + len(r)
            self.total += len(r)
        return dict(self._logs)

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "std": dict(self.std),
            "count": dict(self.count),
            "total": self.total,
        }

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.std = {int(k): float(v) for k, v in s["std"].items()}
        self.count = {int(k): int(v) for k, v in s["count"].items()}
        self.total = int(s["total"])


# ------------------------------------------------------------------ hint-giving samplers
# A sampler with ``hint(index, problem, task) -> text | None`` has the trainer append that text to
# the prompt of the rows it shows (grpo_core.trainer.Trainer.row_problems, Task.hinted); the
# hint material is the task's (Task.hint_parts: worked-solution pieces without the answer).


class RedrawSampler(UniformSampler):
    """Prompts as ``uniform``, plus a queue of (index, level) that ``keep`` fills with prompts to
    draw again in the step's next generation round (``sampler.max_rounds``), at another level
    (scaf: a hint level; difficulty_aug: harder / easier). ``last`` holds the current round's
    (index, level) in order, ``levels`` the same as a dict; fresh prompts come at level 0;
    ``round`` counts this step's rounds (the subclass's update resets it)."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.step = 0
        self.round = 0
        self.queue: list[tuple[int, int]] = []  # (index, level) to sample again this step
        self.levels: dict[int, int] = {}  # the level of each prompt of the current round
        self.last: list[tuple[int, int]] = []  # the current round's (index, level), in order

    @property
    def max_rounds(self) -> int:
        return self.cfg.max_rounds

    def next_prompts(self, n: int) -> list[int]:
        again, self.queue = self.queue[:n], self.queue[n:]
        fresh = super().next_prompts(n - len(again)) if n > len(again) else []
        self.last = again + [(i, 0) for i in fresh]
        self.levels = dict(self.last)
        self.round += 1
        return [i for i, _ in self.last]


@SAMPLERS.register("scaf", params=P.ScafParams)
class ScafSampler(RedrawSampler):
    """Scaf-GRPO (Zhang et al. 2025, arXiv:2510.19807; the authors' hint_mix_grpo trainer):
    tiered in-prompt hints for prompts whose whole group failed. Prompts come as ``uniform``;
    from step ``warmup_steps`` on, a group with no success (accuracy < ``success`` on every
    sample) is not kept: its prompt is sampled again in the next generation round of the step
    with hint level 1 (the first piece of ``Task.hint_parts``), then level 2, ..., until a
    group has a success or the last level (``max_level``, default every piece) was tried; that
    group (hinted, or unhinted when the prompt has no hint material) enters the batch, so each
    prompt trains with the smallest hint that made it solvable. Rounds are capped by
    ``sampler.max_rounds``. Levels restart at 0 every step. Logs ``frac_hinted`` (kept groups
    trained with a hint) and ``hint_level`` (their mean level)."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.n_levels: dict[int, int] = {}  # hint pieces available per prompt (seen in hint())
        self.kept: list[int] = []  # the levels of this step's kept groups

    def hint(self, index: int, problem, task) -> str | None:
        parts = len(task.hint_parts(problem))
        cap = self.p["max_level"]
        self.n_levels[index] = parts if cap is None else min(parts, int(cap))
        level = self.levels.get(index, 0)
        return task.hint_text(problem, level) if level > 0 else None

    def keep(self, groups, acc=None) -> torch.Tensor:
        if acc is None:
            raise ValueError("the scaf sampler needs per-sample accuracy")
        out = []
        for (i, level), a in zip(self.last, acc):
            failed = bool((a < float(self.p["success"])).all())
            more = level < self.n_levels.get(i, 0)
            if failed and more and self.step >= int(self.p["warmup_steps"]):
                self.queue.append((i, level + 1))
                out.append(False)
            else:
                self.kept.append(level)
                out.append(True)
        return torch.tensor(out, dtype=torch.bool)

    def update(self, stats: dict) -> dict | None:
        kept, self.kept, self.queue, self.round = self.kept, [], [], 0
        self.step = int(stats["step"]) + 1
        hinted = [v for v in kept if v > 0]
        return {
            "frac_hinted": len(hinted) / max(len(kept), 1),
            "hint_level": sum(hinted) / len(hinted) if hinted else 0.0,
        }

    def state_dict(self) -> dict:
        return {**super().state_dict(), "step": self.step}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.step = int(s["step"])


def irt_prob(rate: float, b: float, a: float, c: float = 0.0) -> float:
    """Three-parameter logistic item response: P(correct | hint rate) =
    c + (1 - c) / (1 + exp(-a (rate - b))); b is the item's difficulty on the hint-rate scale
    (the rate at which accuracy is halfway between c and 1), a its discrimination, c the
    guessing floor."""
    z = max(-60.0, min(60.0, a * (rate - b)))
    return c + (1.0 - c) / (1.0 + math.exp(-z))


def irt_fit_b(pairs: list[tuple[float, int, int]], a: float, c: float = 0.0) -> float:
    """The maximum-likelihood difficulty b of :func:`irt_prob` (a, c fixed) from (hint rate,
    successes, tries) pairs, each accuracy smoothed to (s + 0.5) / (n + 1) (a finite b for all
    right / all wrong groups). One pair: closed form b = rate - logit((acc - c) / (1 - c)) / a;
    more: the log-likelihood (concave in b) maximised by ternary search on [-4, 5]."""
    acc = [(r, (s + 0.5) / (n + 1), n) for r, s, n in pairs]
    if len(acc) == 1:
        r, p, _ = acc[0]
        q = min(max((p - c) / (1.0 - c), 1e-6), 1 - 1e-6)
        return r - math.log(q / (1.0 - q)) / a

    def ll(b: float) -> float:
        tot = 0.0
        for r, p, n in acc:
            pr = min(max(irt_prob(r, b, a, c), 1e-12), 1 - 1e-12)
            tot += n * (p * math.log(pr) + (1.0 - p) * math.log(1.0 - pr))
        return tot

    lo, hi = -4.0, 5.0
    for _ in range(100):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if ll(m1) < ll(m2):
            lo = m1
        else:
            hi = m2
    return (lo + hi) / 2


def irt_rate_for(target: float, b: float, a: float, c: float = 0.0) -> float:
    """The hint rate whose predicted accuracy is ``target``: b + logit((t - c) / (1 - c)) / a
    (unclipped; a target at or below the floor c gives -inf)."""
    q = (target - c) / (1.0 - c)
    if q <= 0:
        return -math.inf
    return b + math.log(q / (1.0 - q)) / a


@SAMPLERS.register("seele", params=P.SeeleParams)
class SeeleSampler(UniformSampler):
    """SEELE (Li et al. 2025, arXiv:2509.06923): each prompt is shown with a hint, the first
    ``rate`` share of its worked solution (the characters of the joined ``Task.hint_parts``),
    the rate chosen per prompt so that the predicted accuracy is ``target`` (0.5, the sweet spot
    of the loss-descent bound a(1 - a)). Prediction: a three-parameter logistic item response
    model of accuracy in the hint rate (:func:`irt_prob`, discrimination ``a`` and floor ``c``
    fixed) whose difficulty b is fitted (:func:`irt_fit_b`) to the prompt's (rate, accuracy)
    pairs from its earlier rounds (this step's and past visits', the last ``history``). Rounds:
    a prompt's first round uses the fit of its past pairs (``rate0`` when it has none); a group
    whose accuracy is all or nothing is not kept while rounds remain (``sampler.max_rounds``):
    the prompt is sampled again with the refitted rate; the last round's group is kept.
    Rates are clipped to [0, ``max_rate``]. Logs ``hint_rate`` (mean over kept groups),
    ``frac_hinted`` and ``irt_b`` (mean fitted difficulty)."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        self.pairs: dict[int, list[tuple[float, int, int]]] = {}
        self.queue: list[tuple[int, float]] = []
        self.rates: dict[int, float] = {}
        self.last: list[tuple[int, float]] = []
        self.round = 0
        self.kept: list[float] = []
        self.bs: list[float] = []

    @property
    def max_rounds(self) -> int:
        return self.cfg.max_rounds

    def rate_for(self, i: int) -> float:
        """The next hint rate of prompt i: the fitted model's rate for the target accuracy."""
        pairs = self.pairs.get(i)
        if not pairs:
            return float(self.p["rate0"])
        a, c = float(self.p["a"]), float(self.p["c"])
        b = irt_fit_b(pairs, a, c)
        self.bs.append(b)
        r = irt_rate_for(float(self.p["target"]), b, a, c)
        return min(max(r, 0.0), float(self.p["max_rate"]))

    def next_prompts(self, n: int) -> list[int]:
        again, self.queue = self.queue[:n], self.queue[n:]
        fresh = super().next_prompts(n - len(again)) if n > len(again) else []
        self.last = again + [(i, self.rate_for(i)) for i in fresh]
        self.rates = dict(self.last)
        self.round += 1
        return [i for i, _ in self.last]

    def hint(self, index: int, problem, task) -> str | None:
        rate = self.rates.get(index, 0.0)
        if rate <= 0:
            return None
        full = task.hint_text(problem, len(task.hint_parts(problem)))
        return full[: int(round(rate * len(full)))] or None

    def keep(self, groups, acc=None) -> torch.Tensor:
        if acc is None:
            raise ValueError("the seele sampler needs per-sample accuracy")
        out = []
        last_round = self.round >= self.max_rounds
        for (i, rate), a in zip(self.last, acc):
            s, n = int((a >= float(self.p["success"])).sum()), len(a)
            hist = self.pairs.setdefault(i, [])
            hist.append((rate, s, n))
            del hist[: -int(self.p["history"])]
            if 0 < s < n or last_round:
                self.kept.append(rate)
                out.append(True)
            else:
                self.queue.append((i, self.rate_for(i)))
                out.append(False)
        return torch.tensor(out, dtype=torch.bool)

    def update(self, stats: dict) -> dict | None:
        kept, bs = self.kept, self.bs
        self.kept, self.bs, self.queue, self.round = [], [], [], 0
        return {
            "hint_rate": sum(kept) / max(len(kept), 1),
            "frac_hinted": sum(r > 0 for r in kept) / max(len(kept), 1),
            "irt_b": sum(bs) / len(bs) if bs else 0.0,
        }

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "pairs": {i: [list(x) for x in v] for i, v in self.pairs.items()},
        }

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.pairs = {
            int(i): [(float(r), int(k), int(n)) for r, k, n in v] for i, v in s["pairs"].items()
        }


# ------------------------------------------------------------------ difficulty-aware augmentation


def difficulty_decision(mean: float, ref: float, easy: float, hard: float, margin: float) -> int:
    """DeepVideo-R1's difficulty of a group against the reference level: +1 (too easy: its mean
    is at least ``easy`` and at least ``ref + margin``; make it harder), -1 (too hard: at most
    ``hard`` and at most ``ref - margin``; make it easier), else 0 (solvable: as it is)."""
    if mean >= easy and mean >= ref + margin:
        return 1
    if mean <= hard and mean <= ref - margin:
        return -1
    return 0


def ema_update(ref: float | None, value: float, decay: float) -> float:
    """The reference level after a step whose plain groups' mean is ``value``: the value
    itself on the first step, else decay * ref + (1 - decay) * value."""
    return value if ref is None else decay * ref + (1.0 - decay) * value


def hint_pieces(n: int, frac: float) -> int:
    """How many of a prompt's n hint pieces an easier draw shows: ceil(frac * n), at least 1
    (0 when there are none)."""
    return 0 if n <= 0 else max(1, math.ceil(frac * n - 1e-9))


@SAMPLERS.register("difficulty_aug", params=P.DifficultyAugParams)
class DifficultyAugSampler(RedrawSampler):
    """DeepVideo-R1's difficulty-aware data augmentation (Park et al. 2025, arXiv:2506.07464;
    rule built from the paper's description, no code found). Prompts come as ``uniform``. A
    group's difficulty is its mean accuracy (``metric: acc``, or mean reward) compared with
    the reference level ``ref``, an EMA (``decay``) over steps of the mean of each step's
    plain groups (:func:`ema_update`; the first step uses its own mean).
    :func:`difficulty_decision`: a too-easy group (mean >= ``easy`` and >= ref + ``margin``)
    is not kept and its prompt is drawn again in the step's next generation round made harder
    (``Task.perturbed``: video_mc's clip with Gaussian pixel noise of std ``noise``; a task
    without a sound perturbation, text, keeps such a group as it is); a too-hard group (mean
    <= ``hard`` and <= ref - ``margin``) is drawn again easier, with a reasoning cue (the first
    ``ceil(hint_frac * n)`` of the task's n hint pieces, ``Task.hint_parts``; no pieces: kept
    as it is). An augmented group is kept whatever its rewards (one augmentation per prompt a
    step), so groups leave the zero-variance regime where the augmentation works. Needs
    ``sampler.max_rounds >= 2``. Logs ``ref_level``, ``n_harder`` / ``n_easier`` (prompts
    drawn again perturbed / hinted this step), ``frac_perturbed`` / ``frac_hinted`` (kept
    groups trained augmented) and ``aug_nonzero_std`` (augmented groups whose rewards vary)."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        if cfg.max_rounds < 2:
            raise UserError(
                f"sampler difficulty_aug: sampler.max_rounds={cfg.max_rounds}: the augmented "
                "prompts are drawn in the step's next generation round; set "
                "sampler.max_rounds: 2 (or more)"
            )
        self.seed = seed
        self.ref: float | None = None  # the reference level (None before the first step)
        self.ref_now = 0.0  # the level this step's decisions use
        # levels here: +1 a harder draw, -1 an easier one, 0 plain
        self.can: dict[int, tuple[bool, bool]] = {}  # (can be made harder, easier) per prompt
        self.plain: list[float] = []  # this step's first-round group means
        self.n_harder = self.n_easier = 0
        self.kept: list[tuple[int, bool]] = []  # (level, rewards vary) of this step's kept

    def perturb_seed(self, index: int) -> int:
        """The noise seed of prompt ``index``'s harder draw this step (one clip per group)."""
        return derive_seed(self.seed, self.step, index, 0xDA)

    def hint(self, index: int, problem, task) -> str | None:
        """The reasoning cue of an easier draw (None otherwise); also notes which ways the
        prompt can be augmented (the trainer asks for every row it shows)."""
        parts = task.hint_parts(problem)
        harder = task.perturbed(problem, float(self.p["noise"]), 0) is not None
        self.can[index] = (harder, bool(parts))
        if self.levels.get(index, 0) >= 0 or not parts:
            return None
        return task.hint_text(problem, hint_pieces(len(parts), float(self.p["hint_frac"])))

    def augment(self, index: int, problem, task):
        """The problem of a harder draw: its input perturbed (``Task.perturbed``)."""
        if self.levels.get(index, 0) <= 0:
            return problem
        out = task.perturbed(problem, float(self.p["noise"]), self.perturb_seed(index))
        return problem if out is None else out

    def keep(self, groups, acc=None) -> torch.Tensor:
        if self.p["metric"] == "acc":
            if acc is None:
                raise ValueError("the difficulty_aug sampler with metric acc needs accuracy")
            vals = acc
        else:
            vals = groups
        means = [float(v.double().mean()) for v in vals]
        if self.round == 1:  # the step's plain draws set its reference
            self.plain = [m for (_, lv), m in zip(self.last, means) if lv == 0]
            if self.ref is not None:
                self.ref_now = self.ref
            else:
                self.ref_now = sum(self.plain) / max(len(self.plain), 1)
        last_round = self.round >= self.max_rounds
        p, out = self.p, []
        for (i, lv), m, v in zip(self.last, means, vals):
            if lv == 0 and not last_round:
                d = difficulty_decision(
                    m, self.ref_now, float(p["easy"]), float(p["hard"]), float(p["margin"])
                )
                harder, easier = self.can.get(i, (False, False))
                if (d > 0 and harder) or (d < 0 and easier):
                    self.queue.append((i, d))
                    self.n_harder += d > 0
                    self.n_easier += d < 0
                    out.append(False)
                    continue
            self.kept.append((lv, bool(float(v.max() - v.min()) > 1e-8)))
            out.append(True)
        return torch.tensor(out, dtype=torch.bool)

    def update(self, stats: dict) -> dict | None:
        if self.plain:
            m = sum(self.plain) / len(self.plain)
            self.ref = ema_update(self.ref, m, float(self.p["decay"]))
        kept, n = self.kept, max(len(self.kept), 1)
        aug = [s for lv, s in kept if lv != 0]
        logs = {
            "ref_level": self.ref if self.ref is not None else 0.0,
            "n_harder": float(self.n_harder),
            "n_easier": float(self.n_easier),
            "frac_perturbed": sum(lv > 0 for lv, _ in kept) / n,
            "frac_hinted": sum(lv < 0 for lv, _ in kept) / n,
            "aug_nonzero_std": sum(aug) / len(aug) if aug else 0.0,
        }
        self.kept, self.queue, self.plain, self.round = [], [], [], 0
        self.n_harder = self.n_easier = 0
        self.step = int(stats["step"]) + 1
        return logs

    def state_dict(self) -> dict:
        return {**super().state_dict(), "ref": self.ref, "step": self.step}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.ref = None if s["ref"] is None else float(s["ref"])
        self.step = int(s["step"])
