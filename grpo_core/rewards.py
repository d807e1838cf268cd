"""Reward functions. Each sees the whole batch, laid out in contiguous groups of G completions
of one prompt, so group-aware rewards (majority vote, format counts, ranks) fit the same shape::

    fn(ctx: RewardContext, **params) -> Tensor [N]

The total reward is the weighted sum of the configured terms; each term's mean is logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evals.tasks import Problem, Task, extract_answer, is_well_formed
from grpo_core.config import RewardTerm
from grpo_core.errors import UserError
from grpo_core.registry import Registry

REWARDS: Registry = Registry("reward function")


@dataclass
class RewardContext:
    texts: list[str]  # [N] decoded completions
    problems: list[Problem]  # [N] the prompt of each completion
    finish_reasons: list[str]  # [N] "stop" | "length"
    lengths: list[int]  # [N] completion lengths in tokens
    group_size: int
    max_new_tokens: int
    task: Task

    def answers(self) -> list[str | None]:
        if not hasattr(self, "_answers"):
            self._answers = [extract_answer(t) for t in self.texts]
        return self._answers


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
