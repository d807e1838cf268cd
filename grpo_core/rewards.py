"""Reward functions. Each sees the whole batch, laid out in contiguous groups of G completions
of one prompt, so group-aware rewards (majority vote, format counts, ranks) fit the same shape::

    fn(ctx: RewardContext, **params) -> Tensor [N]

The total reward is the weighted sum of the configured terms; each term's mean is logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from evals.tasks import Problem, Task, extract_answer, is_well_formed
from grpo_core.config import RewardTerm
from grpo_core.errors import UserError
from grpo_core.registry import Registry

REWARDS: Registry = Registry("reward function")


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
    _cache: dict = field(default_factory=dict, repr=False)

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
                raise RuntimeError(f"this context has no log-probs ({which!r}) attached")
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


@REWARDS.register("correctness")
def correctness_reward(ctx: RewardContext) -> torch.Tensor:
    """The task's own grader on the extracted final answer (the same call evaluation makes)."""
    return torch.tensor(
        [ctx.task.grade(a, p) for a, p in zip(ctx.answers(), ctx.problems)], dtype=torch.float32
    )


@REWARDS.register("format")
def format_reward(ctx: RewardContext) -> torch.Tensor:
    """1 if the completion is just the answer and ended by itself (EOS / stop string), else 0."""
    return torch.tensor(
        [float(f == "stop" and is_well_formed(t)) for t, f in zip(ctx.texts, ctx.finish_reasons)]
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
        if r.shape != total.shape:
            raise RuntimeError(
                f"reward {term.name} returned shape {tuple(r.shape)}, want {tuple(total.shape)}"
            )
        total += term.weight * r
        logs[f"reward/{term.name}"] = float(r.mean())
    return total, logs
