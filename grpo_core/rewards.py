"""Reward functions. Each sees the whole batch, laid out in contiguous groups of G completions
of one prompt, so group-aware rewards (majority vote, format counts, ranks) fit the same shape::

    fn(ctx: RewardContext, **params) -> Tensor [N]   (or (Tensor [N], {name: value}))

The total reward is the weighted sum of the configured terms; each term's mean is logged as
``reward/<name>``, and a term's own diagnostics (the optional dict) as ``reward/<name>/<key>``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from grpo_core import params as P
from grpo_core.errors import UserError
from grpo_core.registry import Registry
from grpo_core.schema import RewardTerm
from grpo_core.tasks import (
    Problem,
    Task,
    extract_answer,
    grade_texts,
    is_well_formed,
    normalise_answer,
)

REWARDS: Registry = Registry("reward function", leading_args=1)  # fn(ctx, **params)


@dataclass
class GroupContext:
    """What group-aware components see about the step's completions: rewards and advantage
    estimators get the same object. Completions come in contiguous groups, one per prompt;
    ``group_sizes`` lists their sizes (all ``rollout.group_size`` unless a sampler allocates
    rollouts per prompt)."""

    texts: list[str]  # [N] decoded completions
    problems: list[Problem]  # [N] the prompt of each completion
    finish_reasons: list[str]  # [N] "stop" | "length"
    lengths: list[int]  # [N] completion lengths in tokens
    group_sizes: list[int]
    max_new_tokens: int
    task: Task
    step: int = 0  # 0-based training step
    total_steps: int = 1
    indices: list[int] | None = None  # [N] train-set index of each completion's prompt
    completion_ids: torch.Tensor | None = None  # [N, C]
    completion_mask: torch.Tensor | None = None  # [N, C]
    # which ("policy" | "ref") -> [N, C] per-token log-probs of the completions, no grad
    logprob_fn: Callable[[str], torch.Tensor] | None = None
    # optional (which, rows) -> the same for those rows only, computed without caching the whole
    # batch (for large sources such as the [N, C, V] "dist"); see :meth:`logprobs_rows`
    rows_fn: Callable[[str, list[int]], torch.Tensor] | None = None
    tokenizer: Any = None  # the policy's tokenizer (token <-> text positions), when attached
    seed: int = 0  # the run seed (run.seed): components that draw random numbers seed from it
    # [N] the sum of each episode's env rewards (grpo_core.episodes; reward function ``env``),
    # None when no episode was run through an env that rewards
    env_rewards: torch.Tensor | None = None
    # the N episodes (grpo_core.episodes.Episodes: per-turn env rewards, turn counts, each
    # turn's action and the observation it was taken in, each episode's last env info), set
    # by the trainer for every context of a step; None for a hand-built context without them
    episodes: Any = None
    # <results>/<profile>/rm: where the workflow's reward models are (the reward
    # ``reward_model`` with a name); set by the trainer, None for a hand-built context
    rm_root: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def infos(self) -> list[dict] | None:
        """[N] each episode's last env info (success, the env's counts), None without episodes."""
        return None if self.episodes is None else list(self.episodes.infos)

    @property
    def turn_texts(self) -> list[list[str]] | None:
        """[N] the policy's text of every turn of each episode, None without episodes."""
        return None if self.episodes is None else self.episodes.turn_texts

    def __post_init__(self) -> None:
        if isinstance(self.group_sizes, int):  # a uniform group size
            n, g = len(self.texts), self.group_sizes
            if g <= 0 or n % g:
                raise ValueError(f"{n} completions do not split into groups of {g}")
            self.group_sizes = [g] * (n // g)
        if sum(self.group_sizes) != len(self.texts):
            raise ValueError(f"group sizes {self.group_sizes} do not add up to {len(self.texts)}")

    @property
    def group_size(self) -> int:
        """The uniform group size G (an error when an allocator made sizes differ)."""
        if len(set(self.group_sizes)) > 1:
            raise UserError(
                "this component needs equal group sizes, but the sampler allocated "
                f"{sorted(set(self.group_sizes))} rollouts per prompt; use a uniform sampler"
            )
        return self.group_sizes[0]

    def groups(self) -> list[slice]:
        out, s = [], 0
        for g in self.group_sizes:
            out.append(slice(s, s + g))
            s += g
        return out

    def answers(self) -> list[str | None]:
        if "answers" not in self._cache:
            self._cache["answers"] = [extract_answer(t) for t in self.texts]
        return self._cache["answers"]

    def logprobs(self, which: str = "policy") -> torch.Tensor:
        """[N, C] per-token log-probs under the sampling policy ("policy") or the reference /
        teacher model ("ref") (or "entropy": per-token entropies of the sampling policy; "dist":
        its full log-distributions [N, C, V], better taken per group with
        :meth:`logprobs_rows`), computed once by the trainer on first use."""
        key = f"logp/{which}"
        if key not in self._cache:
            if self.logprob_fn is None:
                raise UserError(
                    f"a component read {which!r} log-probs that were not computed for it: "
                    f"declare needs={{{which!r}}} where it is registered (grpo_core.registry.NEEDS)"
                )
            self._cache[key] = self.logprob_fn(which)
        return self._cache[key]

    def logprobs_rows(self, which: str, rows: list[int]) -> torch.Tensor:
        """``logprobs(which)`` of ``rows`` only. With a rows source (the trainer attaches one)
        and nothing cached, only those rows are computed and nothing is kept: e.g. the sampling
        policy's full log-distributions ("dist", [len(rows), C, V]) one group at a time."""
        if self.rows_fn is None or f"logp/{which}" in self._cache:
            return self.logprobs(which)[torch.tensor(list(rows), dtype=torch.long)]
        return self.rows_fn(which, list(rows))

    def entropies(self) -> torch.Tensor:
        """[N, C] per-token entropy of the sampling policy's distribution (no grad)."""
        return self.logprobs("entropy")

    def seq_logp_mean(self, which: str = "policy") -> torch.Tensor:
        """[N] mean per-token log-prob over each completion's tokens."""
        lp = self.logprobs(which)
        m = self.completion_mask.to(lp.dtype)
        return (lp * m).sum(-1) / m.sum(-1).clamp(min=1)

    def select(self, idx: list[int]) -> GroupContext:
        """The sub-context of completions ``idx`` (whole groups keep their structure; other
        selections become one group)."""
        idx = list(idx)
        sizes, pos = [], 0
        for sl in self.groups():
            members = [i for i in idx[pos:] if sl.start <= i < sl.stop]
            if members:
                sizes.append(len(members))
                pos += len(members)
        if sum(sizes) != len(idx):
            sizes = [len(idx)]
        ix = torch.tensor(idx, dtype=torch.long)
        sub = GroupContext(
            texts=[self.texts[i] for i in idx],
            problems=[self.problems[i] for i in idx],
            finish_reasons=[self.finish_reasons[i] for i in idx],
            lengths=[self.lengths[i] for i in idx],
            group_sizes=sizes,
            max_new_tokens=self.max_new_tokens,
            task=self.task,
            step=self.step,
            total_steps=self.total_steps,
            indices=None if self.indices is None else [self.indices[i] for i in idx],
            completion_ids=None if self.completion_ids is None else self.completion_ids[ix],
            completion_mask=None if self.completion_mask is None else self.completion_mask[ix],
            tokenizer=self.tokenizer,
            seed=self.seed,
            env_rewards=None if self.env_rewards is None else self.env_rewards[ix],
            episodes=None if self.episodes is None else self.episodes.select(idx),
            rm_root=self.rm_root,
        )
        for k, v in self._cache.items():
            sub._cache[k] = [v[i] for i in idx] if isinstance(v, list) else v[ix]
        if self.logprob_fn is not None:
            parent = self
            sub.logprob_fn = lambda which: parent.logprobs(which)[ix]
        if self.rows_fn is not None:
            sub.rows_fn = lambda which, rows: self.logprobs_rows(which, [idx[r] for r in rows])
        return sub


RewardContext = GroupContext  # the name reward functions were written against


def task_grades(ctx: RewardContext) -> list:
    """[N] the task's :class:`~grpo_core.grader.Grade` of each completion: its one grading function
    (grpo_core.tasks.grade_texts), the same call evaluation makes; computed once per context."""
    if "grades" not in ctx._cache:
        ctx._cache["grades"] = grade_texts(ctx.task, ctx.texts, ctx.problems)
    return ctx._cache["grades"]


@REWARDS.register("correctness")
def correctness_reward(ctx: RewardContext, choice: str = "exact") -> torch.Tensor:
    """The task's own grade of each completion (the same call evaluation makes): exact match of
    the extracted answer on the arithmetic tasks, math-verify on the math task.

    ``choice: soft``: TW-GRPO's soft multiple-choice credit (longmalongma/TW-GRPO grpo.py
    accuracy_reward), for answers that are comma-separated option sets: where the task's grade
    is 0, r = |S| / |G| if the answer's set S is a subset of the gold set G, else 0 (gold "A,C":
    "A" 0.5, "A,C" 1, "A,B" 0); on one-letter gold answers it is the task's grade."""
    if choice not in ("exact", "soft"):
        raise UserError(f"rewards correctness: choice must be exact or soft, got {choice!r}")
    r = [g.score for g in task_grades(ctx)]
    if choice == "soft":
        from grpo_core.grader import last_answer_tag

        for i, (t, p) in enumerate(zip(ctx.texts, ctx.problems)):
            if r[i] > 0:
                continue
            ans = last_answer_tag(t)
            if ans is None:
                continue
            s = {o.strip() for o in ans.replace(" ", "").split(",")}
            g = {o.strip() for o in str(p.answer).replace(" ", "").split(",")}
            if s <= g:
                r[i] = len(s) / len(g)
    return torch.tensor(r, dtype=torch.float32)


@REWARDS.register("env")
def env_reward(ctx: RewardContext) -> torch.Tensor:
    """The env's own rewards (grpo_core.episodes): the sum over each episode's turns."""
    if ctx.env_rewards is None:
        raise UserError(
            "reward 'env' needs episodes run through an env that rewards (env.name, e.g. "
            "guess_number); env single_turn gives none: use the reward 'correctness'"
        )
    return ctx.env_rewards.to(torch.float32)


@REWARDS.register("format")
def format_reward(ctx: RewardContext) -> torch.Tensor:
    """1 if the completion is just the answer and ended by itself (EOS / stop string), else 0."""
    return torch.tensor(
        [float(f == "stop" and is_well_formed(t)) for t, f in zip(ctx.texts, ctx.finish_reasons)]
    )


@REWARDS.register("mc_consistency")
def mc_consistency_reward(ctx: RewardContext) -> torch.Tensor:
    """1 where a multiple-choice completion's rationale names the option its answer chose and
    no other (grpo_core.tasks.mc_consistent: "<think>red moves left</think><answer>B</answer>"
    with option B "left"), else 0; right or wrong alike (add correctness for that)."""
    from grpo_core.tasks import mc_consistent

    bad = [p.id for p in ctx.problems if "options" not in p.meta]
    if bad:
        raise UserError(
            f"reward 'mc_consistency' needs multiple-choice problems (meta options, task "
            f"video_mc); problem {bad[0]} has none"
        )
    return torch.tensor(
        [float(mc_consistent(t, p)) for t, p in zip(ctx.texts, ctx.problems)], dtype=torch.float32
    )


@REWARDS.register("overlong")
def overlong_reward(
    ctx: RewardContext, buffer: int = 4, max_len: int | None = None
) -> torch.Tensor:
    """DAPO soft overlong punishment: with L_max the budget and L_buf the buffer,
    r = 0 if L <= L_max - L_buf, (L_max - L_buf - L) / L_buf if L <= L_max, else -1."""
    lmax = max_len or ctx.max_new_tokens
    if not 0 < buffer <= lmax:
        raise UserError(f"rewards overlong: buffer must be in (0, {lmax}], got {buffer}")
    L = torch.tensor(ctx.lengths, dtype=torch.float32)
    r = torch.clamp((lmax - buffer - L) / buffer, max=0.0)
    return torch.where(L > lmax, torch.full_like(L, -1.0), r)


# --------------------------------------------------------------------------------------------
# helpers shared by the group-aware rewards below


def _correct(ctx: RewardContext) -> torch.Tensor:
    """[N] the task's grade of each completion (cached: several terms may need it)."""
    if "correct" not in ctx._cache:
        ctx._cache["correct"] = correctness_reward(ctx)
    return ctx._cache["correct"]


def _group_answers(ctx: RewardContext, sl: slice) -> list[str | None]:
    return [normalise_answer(a) for a in ctx.answers()[sl]]


def answer_distribution(answers: list[str | None]) -> dict[str, float]:
    """Empirical distribution of the non-empty answers of one group: answer -> count / G,
    where G counts every completion (a completion without an answer is mass on no answer)."""
    counts = Counter(a for a in answers if a is not None)
    return {a: c / len(answers) for a, c in counts.items()}


# --------------------------------------------------------------------------------------------
# label-free rewards (no gold answer)


@REWARDS.register("majority_vote")
def majority_vote_reward(ctx: RewardContext) -> tuple[torch.Tensor, dict]:
    """MM-UPT (Wei et al. 2025, arXiv:2505.22453): self-reward by majority vote, no gold label.
    r_i = 1 if answer_i equals the most frequent answer of its group, else 0. Ties go to the
    answer seen first; completions without an answer never vote and get 0.

    Logs ``label_acc``: the fraction of groups whose majority answer is right under the gold
    (a diagnostic of the pseudo-label; it does not enter the reward)."""
    r = torch.zeros(len(ctx.texts))
    right = []
    for sl in ctx.groups():
        ans = _group_answers(ctx, sl)
        counts = Counter(a for a in ans if a is not None)
        if not counts:
            right.append(0.0)
            continue
        top = max(counts.values())
        major = next(a for a in ans if a is not None and counts[a] == top)  # first of the tied
        for j, a in enumerate(ans):
            r[sl.start + j] = float(a == major)
        if ctx.task is not None:
            right.append(float(ctx.task.grade(major, ctx.problems[sl.start]) >= 1.0))
    return r, {"label_acc": sum(right) / max(len(right), 1)}


@REWARDS.register("answer_frequency")
def answer_frequency_reward(
    ctx: RewardContext, entropy_weight: float = 0.0
) -> tuple[torch.Tensor, dict]:
    """TTRV (Singh et al. 2025, arXiv:2510.06783): label-free rewards from the group's answers.
    Frequency reward r1_i = p(answer_i), the empirical frequency of completion i's answer among
    the G completions (0 without an answer); diversity control r2 = -H(p) / ln G, the negative
    normalised entropy of that empirical distribution (the same for every member of a group).
    r_i = r1_i + entropy_weight * r2.

    Note: r2 is constant within a group, so group-centred advantages (grpo, dr_grpo, rloo)
    cancel it; it changes the update only with a batch-level baseline. Logged: ``entropy``
    (mean normalised H over groups)."""
    r = torch.zeros(len(ctx.texts))
    ents = []
    for sl in ctx.groups():
        ans = _group_answers(ctx, sl)
        p = answer_distribution(ans)
        g = len(ans)
        h = -sum(q * math.log(q) for q in p.values())
        h_norm = h / math.log(g) if g > 1 else 0.0
        ents.append(h_norm)
        for j, a in enumerate(ans):
            r[sl.start + j] = p.get(a, 0.0) - entropy_weight * h_norm
    return r, {"entropy": sum(ents) / max(len(ents), 1)}


# --------------------------------------------------------------------------------------------
# rewards that reshape correctness within a group


@REWARDS.register("unlikeliness", needs={"policy"})
def unlikeliness_reward(
    ctx: RewardContext, beta: float = 0.25, rank_among: str = "group", logp: str = "mean"
) -> tuple[torch.Tensor, dict]:
    """Unlikeliness reward (He, Fried, Welleck 2025, arXiv:2506.02355): correct samples that
    the policy already finds likely are rewarded less, lifting rare correct ones.

    Rank the group's completions by their log-likelihood under the sampling policy (``logp``:
    "mean" per-token log-prob, or "sum"), least likely rank 0, ties by position; with r the
    correctness, the shaped reward is r' = r * (1 - beta * rank_i / G). This term returns the
    difference, -beta * r_i * rank_i / G, so ``rewards: [correctness, unlikeliness]`` (both
    weight 1) sum to r'. ``rank_among``: "group" ranks all G completions (the authors' code),
    "correct" ranks only the correct ones (ranks 0..k-1, still divided by G)."""
    if rank_among not in ("group", "correct"):
        raise UserError(
            f"rewards unlikeliness: rank_among must be group or correct, got {rank_among!r}"
        )
    if logp not in ("mean", "sum"):
        raise UserError(f"rewards unlikeliness: logp must be mean or sum, got {logp!r}")
    if not 0.0 <= beta <= 1.0:
        raise UserError(f"rewards unlikeliness: beta must be in [0, 1], got {beta}")
    r = _correct(ctx)
    if logp == "mean":
        lp = ctx.seq_logp_mean()
    else:
        m = ctx.completion_mask.to(torch.float32)
        lp = (ctx.logprobs("policy") * m).sum(-1)
    out = torch.zeros(len(ctx.texts))
    for sl in ctx.groups():
        g = sl.stop - sl.start
        members = [i for i in range(sl.start, sl.stop) if rank_among == "group" or r[i] > 0]
        order = sorted(members, key=lambda i: (float(lp[i]), i))  # least likely first
        for rank, i in enumerate(order):
            out[i] = -beta * float(r[i]) * rank / g
    n_pos = int((r > 0).sum())
    return out, {"penalty_correct": float(out[r > 0].mean()) if n_pos else 0.0}


def completion_format(text: str, formats: dict[str, str] | None = None) -> str:
    """The reasoning format of a completion: the first name in ``formats`` (name -> regex)
    whose pattern occurs in the text, else "direct". Default: {"scratchpad": "="} - on arith_cot
    a scratchpad ("5+8=13,4+3+1=8,83") has "=", a direct answer ("83") has not."""
    for name, pattern in (formats or {"scratchpad": "="}).items():
        if re.search(pattern, text):
            return name
    return "direct"


@REWARDS.register("format_diversity")
def format_diversity_reward(
    ctx: RewardContext, formats: dict[str, str] | None = None
) -> tuple[torch.Tensor, dict]:
    """Ada-GRPO (ARM, Wu et al. 2025, arXiv:2505.20258): scale correctness by a format-rarity
    factor that decays over training, so a rare format is not lost to format collapse early on.

    With F(o_i) the number of completions of the group in o_i's format, t the step, T the
    number of steps: decay_i(t) = F/G + 0.5 * (1 - F/G) * (1 + cos(pi t / T)) and
    alpha_i(t) = G / F(o_i) * decay_i(t) = 1 + 0.5 * (G / F - 1) * (1 + cos(pi t / T)):
    G/F at t = 0, 1 at t = T. The shaped reward is r' = alpha_i * r_i; this term returns
    (alpha_i - 1) * r_i, so ``rewards: [correctness, format_diversity]`` sum to r'.
    Formats: :func:`completion_format`. Logs ``alpha_mean`` and ``frac_direct``."""
    r = _correct(ctx)
    t, T = ctx.step, max(ctx.total_steps, 1)
    cos = 1.0 + math.cos(math.pi * min(t, T) / T)
    fmts = [completion_format(x, formats) for x in ctx.texts]
    alpha = torch.ones(len(ctx.texts))
    for sl in ctx.groups():
        g = sl.stop - sl.start
        counts = Counter(fmts[sl])
        for i in range(sl.start, sl.stop):
            alpha[i] = 1.0 + 0.5 * (g / counts[fmts[i]] - 1.0) * cos
    return (alpha - 1.0) * r, {
        "alpha_mean": float(alpha.mean()),
        "frac_direct": sum(f == "direct" for f in fmts) / len(fmts),
    }


def answer_token_mask(ctx: RewardContext) -> torch.Tensor:
    """[N, C] the completion tokens that spell the extracted final answer (its last occurrence
    in the text), found by decoding token by token with ``ctx.tokenizer``. A completion
    without an answer has none."""
    if ctx.tokenizer is None or ctx.completion_ids is None:
        raise RuntimeError("answer_token_mask needs ctx.tokenizer and ctx.completion_ids")
    ids, m = ctx.completion_ids, ctx.completion_mask.bool()
    out = torch.zeros_like(m)
    for i, ans in enumerate(ctx.answers()):
        if ans is None:
            continue
        pos = torch.nonzero(m[i]).flatten().tolist()
        pieces = [ctx.tokenizer.decode([int(ids[i, p])], skip_special_tokens=True) for p in pos]
        text = "".join(pieces)
        start = text.rfind(ans)
        if start < 0:
            continue
        end, c = start + len(ans), 0
        for p, piece in zip(pos, pieces):
            if piece and c < end and c + len(piece) > start:
                out[i, p] = True
            c += len(piece)
    return out


@REWARDS.register("care_consistency", needs={"ref"})
def care_consistency_reward(
    ctx: RewardContext, bonus: float = 0.5, margin: float = 0.01, conf_cap: float = 0.95
) -> tuple[torch.Tensor, dict]:
    """GRPO-CARE (Chen et al. 2025, arXiv:2506.16141) consistency bonus, from the authors'
    trainer (TencentARC/GRPO-CARE): a slowly moving reference (``model.ref_ema``) scores how
    likely the answer is given the completion's own reasoning.

    p_i = min(exp(mean over the answer tokens of log pi_ref), conf_cap). In each group the
    high-accuracy completions are those with r_i > 0.1 and r_i >= mean_g(r); with p_bar their
    mean p, a high-accuracy completion with p_i >= p_bar - margin gets bonus * r_i, others 0.
    Added to correctness (``rewards: [correctness, care_consistency]``). Logs ``bonus_frac``
    (share of completions that got the bonus) and ``answer_conf`` (mean p of correct ones)."""
    r = _correct(ctx)
    mask = answer_token_mask(ctx).to(torch.float32)
    ref = ctx.logprobs("ref")
    n_ans = mask.sum(-1)
    mean_lp = (ref * mask).sum(-1) / n_ans.clamp(min=1)
    p = torch.where(n_ans > 0, mean_lp.exp(), torch.zeros_like(mean_lp)).clamp(max=conf_cap)
    out = torch.zeros(len(ctx.texts))
    for sl in ctx.groups():
        rg, pg = r[sl], p[sl]
        acc = (rg > 0.1) & (rg >= rg.mean())
        if not bool(acc.any()):
            continue
        got = acc & (pg >= pg[acc].mean() - margin)
        out[sl] = torch.where(got, bonus * rg, torch.zeros_like(rg))
    pos = r > 0
    return out, {
        "bonus_frac": float((out > 0).float().mean()),
        "answer_conf": float(p[pos].mean()) if bool(pos.any()) else 0.0,
    }


# --------------------------------------------------------------------------------------------
# length rewards


@REWARDS.register("concise_length")
def concise_length_reward(
    ctx: RewardContext, start_frac: float = 0.5, max_len: int | None = None
) -> tuple[torch.Tensor, dict]:
    """ConciseR's L-GRPO length reward (Song & Zheng 2025, arXiv:2505.21178), second stage:
    from step start_frac * T on, in groups whose G completions are all correct,
    r_i = (L_max - L_i) / L_max; 0 otherwise ("walk before you run": length is optimised only
    once every rollout of a prompt is right). Before the switch the run is stage 1 (GRPO++).
    Logs ``stage`` (1 or 2) and ``frac_all_correct`` (share of groups all correct)."""
    if not 0.0 <= start_frac <= 1.0:
        raise UserError(f"rewards concise_length: start_frac must be in [0, 1], got {start_frac}")
    lmax = max_len or ctx.max_new_tokens
    r = _correct(ctx)
    L = torch.tensor(ctx.lengths, dtype=torch.float32)
    stage2 = ctx.step >= start_frac * ctx.total_steps
    out = torch.zeros(len(ctx.texts))
    n_all = 0
    for sl in ctx.groups():
        if bool((r[sl] >= 1.0).all()):
            n_all += 1
            if stage2:
                out[sl] = ((lmax - L[sl]) / lmax).clamp(min=0.0)
    return out, {"stage": 2.0 if stage2 else 1.0, "frac_all_correct": n_all / len(ctx.groups())}


def budget_at(step: int, b0: float, gamma: float, every: int, b_min: float = 1.0) -> float:
    """TLTS token budget B(t) = max(b_min, b0 * gamma^floor(t / every))."""
    return max(b_min, b0 * gamma ** (step // every))


@REWARDS.register("budget_length")
def budget_length_reward(
    ctx: RewardContext,
    b0: float | None = None,
    gamma: float = 0.7,
    every: int = 20,
    b_min: float = 1.0,
    only_correct: bool = True,
) -> tuple[torch.Tensor, dict]:
    """Train Long, Think Short (Hammoud et al. 2025, arXiv:2508.08940): a token budget that
    tightens on a schedule, B(t) = max(b_min, b0 * gamma^floor(t / every)) (b0 default: the
    generation budget), and a length reward for staying within it:
    r_i = 1 if L_i <= B(t), else max(0, 1 - (L_i - B(t)) / B(t)) (linear to 0 at 2B);
    with ``only_correct`` the reward is paid only to correct completions (so a short wrong
    answer earns nothing). Added to correctness. Logs ``budget`` and ``frac_within``."""
    if every < 1 or not 0.0 < gamma <= 1.0:
        raise UserError(
            f"rewards budget_length: want every >= 1 and gamma in (0, 1], got {every}, {gamma}"
        )
    b = budget_at(ctx.step, float(b0 or ctx.max_new_tokens), gamma, every, b_min)
    L = torch.tensor(ctx.lengths, dtype=torch.float32)
    r = torch.where(L <= b, torch.ones_like(L), (1.0 - (L - b) / b).clamp(min=0.0))
    if only_correct:
        r = r * (_correct(ctx) >= 1.0).float()
    return r, {"budget": b, "frac_within": float((L <= b).float().mean())}


@REWARDS.register("serial_decay")
def serial_decay_reward(ctx: RewardContext) -> tuple[torch.Tensor, dict]:
    """S-GRPO's decaying reward (Dai et al. 2025, arXiv:2505.07686), applied to the group's
    completions ordered by length as stand-ins for exit positions along one chain: walking from
    the shortest completion to the longest, the k-th correct one gets 1 / 2^(k-1), wrong ones 0.
    Completions of equal length share a rank (k = 1 + number of correct strictly shorter ones).
    The paper's serial group (one chain cut at several positions, answers forced after each
    cut) is not built; see reproductions/s_grpo/README.md. Logs ``len_correct`` (mean length
    of the correct completions)."""
    c = _correct(ctx) >= 1.0
    L = ctx.lengths
    out = torch.zeros(len(ctx.texts))
    for sl in ctx.groups():
        ok = [i for i in range(sl.start, sl.stop) if c[i]]
        for i in ok:
            k = 1 + sum(L[j] < L[i] for j in ok)
            out[i] = 0.5 ** (k - 1)
    lens = [L[i] for i in range(len(L)) if c[i]]
    return out, {"len_correct": sum(lens) / len(lens) if lens else 0.0}


# --------------------------------------------------------------------------------------------
# difficulty scaling and diversity shaping (wave 2)


def char_ngrams(text: str, n: int = 2) -> Counter:
    """Counts of the character n-grams of ``text`` (a text shorter than n: the text itself)."""
    if len(text) < n:
        return Counter([text]) if text else Counter()
    return Counter(text[k : k + n] for k in range(len(text) - n + 1))


def ngram_cosine(a: str, b: str, n: int = 2) -> float:
    """Cosine similarity of the character n-gram count vectors of two texts (0 if either is
    empty): the text-encoder similarity's stand-in where no encoder is loaded."""
    ca, cb = char_ngrams(a, n), char_ngrams(b, n)
    na = math.sqrt(sum(v * v for v in ca.values()))
    nb = math.sqrt(sum(v * v for v in cb.values()))
    if na == 0 or nb == 0:
        return 0.0
    return sum(v * cb[k] for k, v in ca.items()) / (na * nb)


@REWARDS.register("difficulty_scale")
def difficulty_scale_reward(
    ctx: RewardContext,
    w_model: float = 1.0,
    w_data: float = 0.0,
    r_max: float = 1.0,
    ngram: int = 2,
) -> tuple[torch.Tensor, dict]:
    """GRPO-S (DR-IRL, Cheng et al. 2025, arXiv:2503.18991): the reward scaled by the task's
    difficulty, r'_i = (1 + d_g) r_i, with one difficulty per prompt g:
    d_g = w_model * gap_g + w_data * h_g, where gap_g = r_max - mean_g(r) is the model-level
    responsiveness (the group's reward gap to the best reward: large where the policy still
    fails) and h_g = 1 - cos(question, gold answer) the data-level hardness (the paper's text
    encoder cosine similarity; here of character n-gram count vectors, :func:`ngram_cosine`).
    r is the task's correctness. This term returns d_g * r_i, so ``rewards: [correctness,
    difficulty_scale]`` (both weight 1) sum to r'. d_g is constant within a group, so a group
    std normalisation cancels it: use ``advantage.scale: batch`` (or none). Logs ``d_mean``,
    ``gap_mean``, ``hardness_mean`` (over groups)."""
    if r_max <= 0 or ngram < 1 or w_model < 0 or w_data < 0:
        raise UserError(
            "rewards difficulty_scale: want r_max > 0, ngram >= 1, w_model >= 0, w_data >= 0; "
            f"got r_max={r_max}, ngram={ngram}, w_model={w_model}, w_data={w_data}"
        )
    r = _correct(ctx)
    out = torch.zeros(len(ctx.texts))
    ds, gaps, hs = [], [], []
    for sl in ctx.groups():
        gap = max(0.0, r_max - float(r[sl].mean()))
        p = ctx.problems[sl.start]
        h = 1.0 - ngram_cosine(p.question, p.answer, ngram) if w_data > 0 else 0.0
        d = w_model * gap + w_data * h
        out[sl] = d * r[sl]
        ds.append(d)
        gaps.append(gap)
        hs.append(h)
    k = max(len(ds), 1)
    return out, {"d_mean": sum(ds) / k, "gap_mean": sum(gaps) / k, "hardness_mean": sum(hs) / k}


# a role perspective named in a completion: "As a teacher, ...", "From the perspective of a
# parent", "Role: engineer" (the role word is captured)
ROLE_PATTERN = (
    r"(?i)(?:\bas an?|\bfrom the (?:perspective|viewpoint|point of view) of(?: an?| the)?"
    r"|\brole:)\s+([a-z][a-z-]*)"
)


@REWARDS.register("multirole_diversity")
def multirole_diversity_reward(
    ctx: RewardContext,
    w_perspective: float = 0.5,
    w_lexical: float = 0.5,
    max_roles: int = 3,
    ngram: int = 2,
    role_pattern: str = ROLE_PATTERN,
    only_correct: bool = False,
) -> tuple[torch.Tensor, dict]:
    """MultiRole-R1 (Wang et al. 2025, arXiv:2507.20187): a diversity reward added to the
    verifiable reward, d_i = w_perspective * P_i + w_lexical * L_i.

    Perspective diversity P_i = min(k_i, max_roles) / max_roles, k_i the number of distinct
    role perspectives the completion takes (distinct lower-cased captures of ``role_pattern``).
    Lexical diversity L_i = 1 - mean_{j != i in the group} cos(o_i, o_j), the completion's
    novelty against the rest of its group (character n-gram count vectors,
    :func:`ngram_cosine`; 0 in a group of one). With ``only_correct`` only correct completions
    are paid. Added to correctness (``rewards: [correctness, multirole_diversity]``). Logs
    ``perspective`` and ``lexical`` (means)."""
    if max_roles < 1 or ngram < 1:
        raise UserError(
            f"rewards multirole_diversity: want max_roles >= 1 and ngram >= 1, got {max_roles}, "
            f"{ngram}"
        )
    try:
        pat = re.compile(role_pattern)
    except re.error as e:
        raise UserError(f"rewards multirole_diversity: role_pattern is not a regex: {e}") from None
    persp = torch.tensor(
        [min(len({m.lower() for m in pat.findall(t)}), max_roles) / max_roles for t in ctx.texts]
    )
    lex = torch.zeros(len(ctx.texts))
    for sl in ctx.groups():
        idx = list(range(sl.start, sl.stop))
        if len(idx) < 2:
            continue
        for i in idx:
            sims = [ngram_cosine(ctx.texts[i], ctx.texts[j], ngram) for j in idx if j != i]
            lex[i] = 1.0 - sum(sims) / len(sims)
    d = w_perspective * persp + w_lexical * lex
    if only_correct:
        d = d * (_correct(ctx) >= 1.0).float()
    return d, {"perspective": float(persp.mean()), "lexical": float(lex.mean())}


# tool-call efficiency


def otc_tool_score(m: int, n: int | None, c: float = 1.0) -> float:
    """OTC-GRPO's tool reward r_tool(m, n) (Wang et al. 2025, arXiv:2504.14870) of a trajectory
    with m tool calls when the group's correct trajectories needed at least n (None: no correct
    one, treated as n = 0). With f(m, n) = 2nm / (m + n) (0 when m = n = 0):
    r_tool = 1 if m = n = 0; cos(m pi / (2m + c)) if n = 0; sin(f(m, n) pi / (2n)) otherwise.
    So m = n scores 1; more calls (or fewer, which no correct trajectory has) score less."""
    n = n or 0
    if n == 0:
        return 1.0 if m == 0 else math.cos(m * math.pi / (2 * m + c))
    f = 2.0 * n * m / (m + n)
    return math.sin(f * math.pi / (2 * n))


@REWARDS.register("otc_tool")
def otc_tool_reward(
    ctx: RewardContext, alpha: float = 1.0, c: float = 1.0
) -> tuple[torch.Tensor, dict]:
    """OTC-GRPO (Wang et al. 2025, Acting Less is Reasoning More! Teaching Model to Act
    Efficiently, arXiv:2504.14870): correctness weighed by tool-call efficiency,
    r_i = alpha * r_tool(m_i, n_g) * r_phi_i, with m_i the tool calls of episode i (the env's
    info ``tool_calls``: env tools), r_phi_i its correctness (the env's ``success`` when the
    episodes report it, else the task's grade) and n_g the fewest tool calls among the correct
    episodes of its group (:func:`otc_tool_score`). Used instead of correctness
    (``rewards: [{name: otc_tool}]``). Logs ``tool_calls`` (mean m), ``n_opt`` (mean n_g over
    groups with a correct episode) and ``r_tool`` (mean r_tool of the correct episodes)."""
    if c <= 0:
        raise UserError(f"rewards otc_tool: c must be > 0, got {c}")
    infos = ctx.infos
    if infos is None or any("tool_calls" not in i for i in infos):
        raise UserError(
            "reward otc_tool needs episodes of an env that counts tool calls (info "
            "'tool_calls'): set env.name: tools"
        )
    m = [int(i["tool_calls"]) for i in infos]
    if all(i.get("success") is not None for i in infos):
        r_phi = torch.tensor([float(bool(i["success"])) for i in infos])
    else:
        r_phi = _correct(ctx)
    out = torch.zeros(len(ctx.texts))
    n_opt, r_tool = [], []
    for sl in ctx.groups():
        ok = [m[i] for i in range(sl.start, sl.stop) if r_phi[i] >= 1.0]
        n = min(ok) if ok else None
        if n is not None:
            n_opt.append(n)
        for i in range(sl.start, sl.stop):
            rt = otc_tool_score(m[i], n, c)
            out[i] = alpha * rt * float(r_phi[i])
            if r_phi[i] >= 1.0:
                r_tool.append(rt)
    return out, {
        "tool_calls": sum(m) / max(len(m), 1),
        "n_opt": sum(n_opt) / len(n_opt) if n_opt else 0.0,
        "r_tool": sum(r_tool) / len(r_tool) if r_tool else 0.0,
    }


def compute_rewards(terms: list[RewardTerm], ctx: RewardContext) -> tuple[torch.Tensor, dict]:
    """Weighted sum of reward terms -> (total [N], {"reward/<name>": mean of the term})."""
    total = torch.zeros(len(ctx.texts))
    logs = {}
    for i, term in enumerate(terms):
        fn = REWARDS.get(term.name, f"rewards[{i}].name")
        try:
            r = fn(ctx, **term.params)
        except TypeError as e:
            raise UserError(f"rewards[{i}] ({term.name}): bad params {term.params}: {e}") from None
        r, term_logs = r if isinstance(r, tuple) else (r, {})
        if r.shape != total.shape:
            raise RuntimeError(
                f"reward {term.name} returned shape {tuple(r.shape)}, want {tuple(total.shape)}"
            )
        total += term.weight * r
        logs[f"reward/{term.name}"] = float(r.mean())
        logs.update({f"reward/{term.name}/{k}": float(v) for k, v in term_logs.items()})
    return total, logs


# --------------------------------------------------------------------------------------------
# learned reward models (grpo_core.reward_models)


def reward_model_dir(ctx: RewardContext, name: str | None, path: str | None) -> str:
    """The checkpoint directory of the reward ``reward_model``: ``path``, or the workflow's
    <rm_root>/<name>/seed<run seed>."""
    if path is not None:
        return path
    if ctx.rm_root is None:
        raise UserError(
            f"rewards reward_model: name {name!r} needs the run's results directory (the "
            "trainer sets it); give params.path for a hand-built context"
        )
    from pathlib import Path

    return str(Path(ctx.rm_root) / name / f"seed{ctx.seed}")


@REWARDS.register("reward_model", params=P.RewardModelParams)
def reward_model_reward(
    ctx: RewardContext,
    name: str | None = None,
    path: str | None = None,
    heads: list[str] | None = None,
    weights: dict[str, float] | None = None,
    members: list[int] | None = None,
    combine: str = "mean",
    lam: float = 0.5,
) -> tuple[torch.Tensor, dict]:
    """A learned reward model's score of each completion, no grad (grpo_core.reward_models):
    with v[k, i, h] member k's (normalised) head h, s[k, i] = sum_h w_h v[k, i, h] and the
    reward combine_k s[k, i]: mean, min (worst case, Coste et al.'s WCO), mean - lam * std or
    mean - lam * var (uncertainty-weighted, UWO; population std / variance over members).

    Logs ``<head>_mean`` (the members' mean of each head), ``proxy_mean`` (the members' mean
    of s), with several members ``std_mean`` (their std of s), and beside them the rule-based
    truth: ``gold_mean`` (the spec's gold reward) and ``true_<head>_mean`` for a head that is an
    objective (grpo_core.reward_models.OBJECTIVES)."""
    from grpo_core import reward_models as RM

    d = reward_model_dir(ctx, name, path)
    how = (
        f"the workflow trains it (grpo rm-train {name} --profile P --seed {ctx.seed})"
        if name
        else ""
    )
    model, meta = RM.load_rm(d, how)
    all_heads = meta["heads"]
    w = RM.head_weights(all_heads, heads, weights, "rewards reward_model")
    fin = [f == "stop" for f in ctx.finish_reasons]
    v = RM.score(model, meta, ctx.texts, fin, ctx.problems)  # [K, N, H]
    if members is not None:
        bad = [m for m in members if m >= v.shape[0]]
        if bad:
            raise UserError(
                f"rewards reward_model: member {bad[0]} does not exist ({d} has {v.shape[0]})"
            )
        v = v[torch.tensor(members)]
    r, s = RM.combine(v, w, combine, lam)
    logs = {f"{h}_mean": float(v[:, :, j].mean()) for j, h in enumerate(all_heads)}
    logs["proxy_mean"] = float(s.mean())
    if v.shape[0] > 1:
        logs["std_mean"] = float(s.std(0, unbiased=False).mean())
    objs = [h for h in all_heads if h in RM.OBJECTIVES]
    if objs:
        tv = RM.objective_values(objs, ctx.texts, fin, ctx.problems, ctx.task)
        logs.update({f"true_{h}_mean": float(tv[:, j].mean()) for j, h in enumerate(objs)})
    g = RM.gold_values(meta, ctx.texts, fin, ctx.problems, ctx.task)
    if g is not None:
        logs["gold_mean"] = float(g.mean())
    return r, logs


# --------------------------------------------------------------------------------------------
# controls


def _draw_seed(ctx: RewardContext, salt: str) -> int:
    """A 63-bit seed from the run seed, the step and the batch itself (its prompts' train-set
    indices and completions): stateless, so a resumed run draws exactly what an uninterrupted
    one does, and two generation rounds (or two ranks) of one step draw differently."""
    import hashlib

    h = hashlib.sha256(f"{salt}|{ctx.seed}|{ctx.step}|{ctx.indices}".encode())
    for t in ctx.texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    return int.from_bytes(h.digest()[:8], "little") >> 1


@REWARDS.register("random_reward")
def random_reward(ctx: RewardContext) -> tuple[torch.Tensor, dict]:
    """The spurious-reward control (Shao et al. 2025, Spurious Rewards: Rethinking Training
    Signals in RLVR, arXiv:2506.10947, their "random" reward): r_i ~ Bernoulli(p), drawn
    independently of the completion, with p the batch's success rate (the mean of the
    correctness term over this batch), so the reward has the correctness reward's mean and
    carries no information about which completion is right. Drawn from a generator seeded by
    the run seed, the step and the batch (:func:`_draw_seed`): runs are deterministic and
    resume-exact. Logs ``p`` and ``agree`` (fraction of completions whose random reward equals
    their correctness)."""
    correct = _correct(ctx).float()
    p = float(correct.mean().clamp(0.0, 1.0)) if len(correct) else 0.0
    gen = torch.Generator().manual_seed(_draw_seed(ctx, "random_reward"))
    r = (torch.rand(len(ctx.texts), generator=gen) < p).float()
    agree = float((r == (correct >= 0.5).float()).float().mean()) if len(r) else 1.0
    return r, {"p": p, "agree": agree}


# --------------------------------------------------------------------------------------------
# search agents (env search, task search_qa)


def _episode_texts(ctx: RewardContext) -> list[str]:
    """[N] the policy's whole text of each episode (every turn joined; single-turn: the
    completion)."""
    if ctx.turn_texts is None:
        return list(ctx.texts)
    return ["\n".join(ts) for ts in ctx.turn_texts]


def entity_match_rate(text: str, entities: list[str]) -> float:
    """Share of ``entities`` that the text names: as whole words, case-insensitively, anything
    but letters and digits (tags, punctuation) a word boundary; 0 when there are none."""
    if not entities:
        return 0.0

    def words(s: str) -> str:
        return " " + " ".join(re.sub(r"[\W_]+", " ", s.lower()).split()) + " "

    have = words(text)
    return sum(words(e) in have for e in entities) / len(entities)


@REWARDS.register("e_grpo", params=P.EGrpoParams)
def e_grpo_reward(
    ctx: RewardContext, alpha: float = 0.3, normalise: bool = True
) -> tuple[torch.Tensor, dict]:
    """E-GRPO's entity-aware reward (Zhao et al. 2025, Repurposing Synthetic Data for
    Fine-grained Search Agent Supervision, arXiv:2510.24694): 1 for a right answer; a wrong
    answer earns ``alpha`` x its entity match rate gamma_i (the share of the problem's gold
    entities, ``meta["entities"]``, that the policy's own text names over all its turns),
    divided by the largest gamma of the group's completions when ``normalise``; no answer at
    all (a format failure, or an episode that never answered) earns 0. Right: the env's
    success when the episodes report it (env search: EM 1), else the task's grade. Logs
    ``match_rate`` (mean gamma) and ``partial`` (share of completions with a partial reward)."""
    infos = ctx.infos if ctx.infos and all("success" in i for i in ctx.infos) else None
    if infos is not None:
        right = [bool(i["success"]) for i in infos]
        answered = [i.get("answer", "") is not None for i in infos]
    else:
        grades = task_grades(ctx)
        right = [g.score >= 1.0 for g in grades]
        answered = [g.pred is not None for g in grades]
    texts = _episode_texts(ctx)
    gamma = [
        entity_match_rate(t, list(p.meta.get("entities", []))) for t, p in zip(texts, ctx.problems)
    ]
    out = torch.zeros(len(texts))
    for sl in ctx.groups():
        top = max(gamma[sl]) if sl.stop > sl.start else 0.0
        for i in range(sl.start, sl.stop):
            if right[i]:
                out[i] = 1.0
            elif answered[i]:
                g = gamma[i] / top if normalise and top > 0 else gamma[i]
                out[i] = alpha * g
    partial = sum(1 for i in range(len(out)) if 0 < out[i] < 1) / max(len(out), 1)
    return out, {"match_rate": sum(gamma) / max(len(gamma), 1), "partial": partial}


def token_f1(pred: str, gold: str) -> float:
    """Word-level F1 of two texts after Search-R1's answer normalisation (0 when either is
    empty)."""
    from grpo_core.tasks import em_normalise

    p, g = em_normalise(pred).split(), em_normalise(gold).split()
    same = sum((Counter(p) & Counter(g)).values())
    if not p or not g or same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def judge_world_state(goal: dict, diff: list, done: bool, trace: list) -> tuple[bool, list[str]]:
    """SEAgent's world-state judgement, rule-based (the paper's World State Model is a
    fine-tuned VLM reading the screenshots): success when the agent called ``done`` and the
    state after the episode, read from the diff (``[key, before, after]`` per changed key),
    holds every goal value; per step a label: ``bad`` (a refused action, or a step that
    changed a key to a value the goal does not ask for), ``progress`` (it changed a goal key to
    its goal value), ``neutral`` (anything else: a scroll, opening a folder, ``done``)."""
    after = {k: a for k, _, a in diff}
    ok = bool(done) and all(after.get(k) == v for k, v in goal.items())
    labels = []
    for kind, keys in trace:
        mine = [k for k in keys if k in goal]
        other = [k for k in keys if k not in goal and k != "folder"]  # navigation is no change
        if kind not in ("click", "type", "scroll", "done"):
            labels.append("bad")
        elif other or any(after.get(k) != goal[k] for k in mine):
            labels.append("bad")
        elif mine:
            labels.append("progress")
        else:
            labels.append("neutral")
    return ok, labels


@REWARDS.register("seagent_judge")
def seagent_judge_reward(ctx: RewardContext, reward: float = 1.0) -> tuple[torch.Tensor, dict]:
    """SEAgent's world-state model as the reward (rule-based on tiny:
    :func:`judge_world_state` on each episode's last info from env gui: diff, done, trace, and
    the task's goal from the problem's meta): ``reward`` for a judged success, else 0. Logs
    ``judge_success`` (share judged successful), ``judge_agree`` (share where the judgement
    equals the env's own success check) and ``bad_step_frac`` (share of steps judged bad)."""
    infos = ctx.infos
    if not infos or any("diff" not in i or "trace" not in i for i in infos):
        raise UserError(
            "reward seagent_judge reads the world-state diff of env gui (info diff / trace); "
            "use it with env.name: gui"
        )
    out = torch.zeros(len(infos))
    agree = bad = steps = 0
    for j, (info, prob) in enumerate(zip(infos, ctx.problems)):
        ok, labels = judge_world_state(
            prob.meta["goal"], info["diff"], bool(info.get("done")), info["trace"]
        )
        out[j] = reward if ok else 0.0
        agree += int(ok == bool(info.get("success")))
        bad += labels.count("bad")
        steps += len(labels)
    n = max(len(infos), 1)
    return out, {
        "judge_success": float((out > 0).float().mean()),
        "judge_agree": agree / n,
        "bad_step_frac": bad / max(steps, 1),
    }


@REWARDS.register("r1_router", params=P.R1RouterParams)
def r1_router_reward(
    ctx: RewardContext, w_query: float = 0.5, w_kb: float = 0.5
) -> tuple[torch.Tensor, dict]:
    """R1-Router's step-wise rewards (Peng et al. 2025, Learning to Route Queries Across
    Knowledge Bases for Step-wise Retrieval-Augmented Reasoning, Step-GRPO), one per step of
    an env search episode (``info["trace"]``): the t-th search earns ``w_query`` x the word F1
    of its query with the t-th gold query (the t-th supporting entity's name) + ``w_kb`` x [its
    kb is that entity's kb]; a search past the gold chain, or a bad action, earns 0; the answer
    step earns its EM (an episode that never answered gets one answer step of 0). The episode's
    reward is the mean of its step rewards (Step-GRPO trains each step as its own sample; here
    one trajectory is one sample). Without search episodes (a single-turn task) a completion
    is one answer step: the task's grade. Logs ``query_sim`` and ``kb_acc`` (means over search
    steps with a gold hop) and ``answer_em``."""
    if ctx.infos is None or not all("trace" in i for i in ctx.infos):
        # no search steps (a single-turn task): each completion is one answer step
        grade = torch.tensor([g.score for g in task_grades(ctx)], dtype=torch.float32)
        return grade, {"query_sim": 0.0, "kb_acc": 0.0, "answer_em": float(grade.mean())}
    out = torch.zeros(len(ctx.texts))
    sims, kbs, ems = [], [], []
    for n, (info, p) in enumerate(zip(ctx.infos, ctx.problems)):
        support, support_kbs = p.meta.get("support", []), p.meta.get("support_kbs", [])
        steps, t, answered = [], 0, False
        for kind, kb, text in info["trace"]:
            if kind == "search":
                if t < len(support):
                    sim, ok = token_f1(text, support[t]), float(kb == support_kbs[t])
                    sims.append(sim)
                    kbs.append(ok)
                    steps.append(w_query * sim + w_kb * ok)
                else:
                    steps.append(0.0)
                t += 1
            elif kind == "answer":
                answered = True
                em = float(info.get("em", 0.0))
                ems.append(em)
                steps.append(em)
            else:
                steps.append(0.0)
        if not answered:
            ems.append(0.0)
            steps.append(0.0)
        out[n] = sum(steps) / len(steps)
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return out, {"query_sim": mean(sims), "kb_acc": mean(kbs), "answer_em": mean(ems)}


@REWARDS.register("video_com")
def video_com_reward(
    ctx: RewardContext, w_answer: float = 1.0, w_steps: float = 1.0
) -> tuple[torch.Tensor, dict]:
    """Video-CoM's reasoning-aware reward (Rasheed et al. 2025, Video-CoM: Interactive Video
    Reasoning via Chain of Manipulations; mbzuai-oryx/Video-CoM src/train/reward_funcs.py
    ``reasoning_reward``, its GRPO's one reward at weight 1): r = ``w_answer`` x the task's
    grade of the final answer (the episode's last turn; 0 when it never answered) +
    ``w_steps`` x the reasoning score of its chain of manipulations, correct / scored steps
    (grpo_core.tasks.com_reasoning_score over ``info["trace"]`` of env video_com: a frame that
    shows a queried shape, each distinct frame once; a crop with IoU >= env.params.iou with a
    queried shape's box), 0 without a scored step. The step part is not gated by the answer
    (as theirs). Logs reasoning_score, frame_acc / crop_acc (over scored frames / crops;
    0 when none), manipulations and bad_actions (per episode), answer_acc."""
    from grpo_core.tasks import com_reasoning_score

    if ctx.infos is None or not all("trace" in i and "manipulations" in i for i in ctx.infos):
        raise UserError(
            "reward 'video_com' reads the chain of manipulations of env video_com "
            "(info trace); set env.name: video_com (profile tiny_video_com)"
        )
    grade = torch.tensor([g.score for g in task_grades(ctx)], dtype=torch.float32)
    score = torch.zeros(len(ctx.texts))
    frames, crops = [], []
    for n, info in enumerate(ctx.infos):
        score[n] = com_reasoning_score(info["trace"])[0]
        seen = set()
        for kind, arg, correct, _ in info["trace"]:
            if correct is None:
                continue
            if kind == "frame" and arg not in seen:
                seen.add(arg)
                frames.append(float(correct))
            elif kind == "crop":
                crops.append(float(correct))
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    logs = {
        "reasoning_score": float(score.mean()),
        "frame_acc": mean(frames),
        "crop_acc": mean(crops),
        "manipulations": mean([float(i["manipulations"]) for i in ctx.infos]),
        "bad_actions": mean([float(i["bad_actions"]) for i in ctx.infos]),
        "answer_acc": float(grade.mean()),
    }
    return float(w_answer) * grade + float(w_steps) * score, logs


@REWARDS.register("code_process", params=P.CodeProcessParams)
def code_process_reward(
    ctx: RewardContext, gate: str = "success", hack_at: float = 1.0
) -> tuple[torch.Tensor, dict]:
    """Posterior-GRPO (Fan et al. 2025, Posterior-GRPO: Rewarding Reasoning Processes in Code
    Generation): a process reward counted only on successful outcomes. With R_o = 1 when every
    unit test of the completion passed (the task's grade reason ``pass``), else 0, and R_t the
    rule-based process score of its code (grpo_core.codeexec.process_score: the mean of six
    0/1 checks: parses, signature, clean, uses_args, constants, concise), this term is
    R_o * R_t (``gate: success``), so ``rewards: [correctness, code_process]`` give the paper's
    R_o + R_o * R_t; ``gate: none`` gives R_t on every completion (the control whose process
    reward can be hacked: structure without passing tests).

    Logs: ``process_mean`` (R_t over all completions), ``process_on_fail`` (R_t where a test
    failed; 0 when none failed), ``hack_rate`` (the fraction of completions with
    R_t >= ``hack_at`` whose tests fail: the reward-hacking signal), ``success`` (mean R_o)."""
    from grpo_core.codeexec import process_score

    bad = [p.id for p in ctx.problems if "entry" not in p.meta or "args" not in p.meta]
    if bad:
        raise UserError(
            f"reward 'code_process' needs code_fn problems (meta entry, args, constants); "
            f"problem {bad[0]} has none: use task code_fn"
        )
    ok = torch.tensor([float(g.reason == "pass") for g in task_grades(ctx)])
    rt = torch.tensor(
        [
            process_score(t, p.meta["entry"], p.meta["args"], p.meta.get("constants", []))
            for t, p in zip(ctx.texts, ctx.problems)
        ],
        dtype=torch.float32,
    )
    fail = ok == 0
    logs = {
        "process_mean": float(rt.mean()),
        "process_on_fail": float(rt[fail].mean()) if bool(fail.any()) else 0.0,
        "hack_rate": float(((rt >= hack_at) & fail).float().mean()),
        "success": float(ok.mean()),
    }
    return (ok * rt if gate == "success" else rt), logs


@REWARDS.register("gcpo", params=P.GcpoParams)
def gcpo_reward(
    ctx: RewardContext,
    eta: float = 0.0,
    w_aux: float = 0.2,
    w_len: float = 0.2,
    len_target: int = 0,
    len_on: str = "correct",
    open_tag: str = "<aux>",
    close_tag: str = "</aux>",
) -> tuple[torch.Tensor, dict]:
    """GeometryZero's GCPO rewards (Wang et al. 2025, arXiv:2506.07160) besides correctness:

    - group contrastive masking of the auxiliary-construction reward: in each group, acc+ /
      acc- are the mean task grades of the completions with / without an auxiliary
      construction (a non-empty ``open_tag`` ... ``close_tag`` span, grpo_core.tasks.has_aux);
      the group's mask m is +1 when acc+ - acc- > eta, -1 when acc- - acc+ > eta, else 0 (also
      0 when either side is empty: nothing to contrast); each completion earns
      ``w_aux`` x m x [it constructs];
    - the length reward ``w_len`` x min(1, L_i / len_target) (L_i its tokens; len_target 0:
      rollout.max_new_tokens), on right completions only (``len_on: correct``) or all.

    Logs the share of groups with mask +1 / -1 (``mask_pos`` / ``mask_neg``), the share of
    completions that construct (``aux_rate``) and the mean length term (``len``)."""
    from grpo_core.tasks import has_aux

    right = [g.score for g in task_grades(ctx)]
    aux = [has_aux(t, open_tag, close_tag) for t in ctx.texts]
    target = len_target or ctx.max_new_tokens
    out = torch.zeros(len(ctx.texts))
    lens = torch.zeros(len(ctx.texts))
    pos = neg = 0
    for sl in ctx.groups():
        a = [right[i] for i in range(sl.start, sl.stop) if aux[i]]
        b = [right[i] for i in range(sl.start, sl.stop) if not aux[i]]
        m = 0.0
        if a and b:
            gap = sum(a) / len(a) - sum(b) / len(b)
            m = 1.0 if gap > eta else -1.0 if -gap > eta else 0.0
        pos += m > 0
        neg += m < 0
        for i in range(sl.start, sl.stop):
            if len_on == "all" or right[i] >= 1.0:
                lens[i] = min(1.0, ctx.lengths[i] / max(target, 1))
            out[i] = w_aux * m * float(aux[i]) + w_len * lens[i]
    n_groups = max(len(ctx.group_sizes), 1)
    logs = {
        "mask_pos": pos / n_groups,
        "mask_neg": neg / n_groups,
        "aux_rate": sum(aux) / max(len(aux), 1),
        "len": float(lens.mean()) if len(lens) else 0.0,
    }
    return out, logs


@REWARDS.register("oncoreason", params=P.OncoReasonParams)
def oncoreason_reward(
    ctx: RewardContext, w_rationale: float = 0.5, w_format: float = 0.25
) -> tuple[torch.Tensor, dict]:
    """OncoReason's rationale terms (Hemadri et al. 2025, arXiv:2510.17532: GRPO aligning the
    outputs with expert-derived reasoning), added to the task's correctness term:
    ``w_rationale`` x the word F1 of the completion's rationale (``<why>...</why>``) with the
    problem's expert rationale (``meta["rationale"]``; the stand-in for their BLEU / ROUGE /
    BERTScore alignment) + ``w_format`` x [the completion is "<why>rationale</why>label" and
    ended by itself]. Logs ``rationale_f1`` and ``format`` (means)."""
    from grpo_core.tasks import clinic_parts, rationale_f1

    bad = [p.id for p in ctx.problems if "rationale" not in p.meta]
    if bad:
        raise UserError(
            f"reward 'oncoreason' needs problems with an expert rationale (meta rationale, task "
            f"clinic_mix); problem {bad[0]} has none"
        )
    f1, fmt = [], []
    for t, p, fin in zip(ctx.texts, ctx.problems, ctx.finish_reasons):
        why, ans = clinic_parts(t)
        f1.append(rationale_f1(why, p.meta["rationale"]))
        fmt.append(float(why is not None and bool(ans) and fin == "stop"))
    f, m = torch.tensor(f1), torch.tensor(fmt)
    out = w_rationale * f + w_format * m
    return out, {"rationale_f1": float(f.mean()), "format": float(m.mean())}


def plan_parts(text: str, open_tag: str, close_tag: str) -> tuple[str | None, str]:
    """(plan, the rest) of a completion that opens with ``open_tag`` plan ``close_tag``
    (whitespace around it ignored); (None, text) when it does not."""
    t = text.strip()
    if not t.startswith(open_tag):
        return None, text
    j = t.find(close_tag, len(open_tag))
    if j < 0:
        return None, text
    return " ".join(t[len(open_tag) : j].split()), t[j + len(close_tag) :].strip()


@REWARDS.register("pta_plan", params=P.PtaPlanParams)
def pta_plan_reward(
    ctx: RewardContext,
    w_plan: float = 0.5,
    w_format: float = 0.25,
    open_tag: str = "<why>",
    close_tag: str = "</why>",
) -> tuple[torch.Tensor, dict]:
    """PTA-GRPO's guidance-aware reward terms (Dou et al. 2025, Plan Then Action,
    arXiv:2510.01833), added to correctness: the plan is the completion's leading ``open_tag``
    ... ``close_tag`` span (whitespace-normalised); its quality is how well it tends to yield a
    right answer: the mean task grade of the group's completions that wrote the same plan (the
    paper samples several responses under each plan; here the group's completions sharing a
    plan are those samples). ``w_plan`` x that rate + ``w_format`` x [a plan, then an answer,
    ended by itself]; no plan earns 0. Logs ``plan_success`` (mean plan term before the weight),
    ``plans_per_group`` (distinct plans) and ``format``."""
    right = [g.score for g in task_grades(ctx)]
    parts = [plan_parts(t, open_tag, close_tag) for t in ctx.texts]
    q = torch.zeros(len(ctx.texts))
    fmt = torch.zeros(len(ctx.texts))
    distinct = []
    for sl in ctx.groups():
        by_plan: dict[str, list[float]] = {}
        for i in range(sl.start, sl.stop):
            if parts[i][0] is not None:
                by_plan.setdefault(parts[i][0], []).append(right[i])
        distinct.append(len(by_plan))
        for i in range(sl.start, sl.stop):
            plan, rest = parts[i]
            if plan is None:
                continue
            q[i] = sum(by_plan[plan]) / len(by_plan[plan])
            fmt[i] = float(bool(rest) and ctx.finish_reasons[i] == "stop")
    out = w_plan * q + w_format * fmt
    logs = {
        "plan_success": float(q.mean()) if len(q) else 0.0,
        "plans_per_group": sum(distinct) / max(len(distinct), 1),
        "format": float(fmt.mean()) if len(fmt) else 0.0,
    }
    return out, logs
