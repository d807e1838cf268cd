"""Advantage estimators: group rewards -> per-sequence advantages.

Every estimator is a pure function ``fn(rewards [n_groups, G], cfg) -> advantages [n_groups, G]``
registered by name. Rows are groups: the G completions of one prompt (the trainer asserts this
layout with :func:`assert_groups` before calling). Per-token advantages are the sequence value
broadcast over the completion's tokens.
"""

from __future__ import annotations

import torch

from grpo_core.config import AdvantageCfg
from grpo_core.registry import Registry

ADVANTAGES: Registry = Registry("advantage estimator")


def assert_groups(prompt_ids: list, group_size: int) -> None:
    """Assert that completions come in contiguous blocks of ``group_size`` sharing one prompt."""
    n = len(prompt_ids)
    if n % group_size != 0:
        raise AssertionError(f"{n} completions do not split into groups of {group_size}")
    for g in range(n // group_size):
        block = prompt_ids[g * group_size : (g + 1) * group_size]
        if any(p != block[0] for p in block):
            raise AssertionError(
                f"group {g} mixes prompts {sorted(set(map(str, block)))}: every group must hold "
                f"the {group_size} completions of one prompt"
            )


def _std(x: torch.Tensor, dim: int | None, unbiased: bool) -> torch.Tensor:
    """Std with the group-of-one convention: a single sample has std 0 (not NaN)."""
    n = x.numel() if dim is None else x.shape[dim]
    if unbiased and n < 2:
        return torch.zeros_like(x.mean() if dim is None else x.mean(dim, keepdim=True))
    if dim is None:
        return x.std(correction=int(unbiased))
    return x.std(dim=dim, keepdim=True, correction=int(unbiased))


@ADVANTAGES.register("grpo")
def grpo_advantage(rewards: torch.Tensor, cfg: AdvantageCfg) -> torch.Tensor:
    """GRPO (Shao et al. 2024, DeepSeekMath): A_i = (r_i - mean_g) / (std + eps).

    ``cfg.std`` picks the unbiased (n-1) or biased (n) std; ``cfg.scale`` divides by the group's
    std ("group"), the whole batch's std ("batch", as in REINFORCE++/Magistral) or nothing ("none",
    which is Dr. GRPO's estimator).
    """
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    unbiased = cfg.std == "unbiased"
    if cfg.scale == "group":
        return centered / (_std(rewards, 1, unbiased) + cfg.eps)
    if cfg.scale == "batch":
        return centered / (_std(rewards, None, unbiased) + cfg.eps)
    return centered


@ADVANTAGES.register("dr_grpo")
def dr_grpo_advantage(rewards: torch.Tensor, cfg: AdvantageCfg) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025): A_i = r_i - mean_g, no std scaling."""
    return rewards - rewards.mean(dim=1, keepdim=True)


@ADVANTAGES.register("rloo")
def rloo_advantage(rewards: torch.Tensor, cfg: AdvantageCfg) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_g).

    A group of one has no leave-one-out baseline: A = 0.
    """
    g = rewards.shape[1]
    if g < 2:
        return torch.zeros_like(rewards)
    loo_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (g - 1)
    return rewards - loo_mean


@ADVANTAGES.register("reinforce_pp_baseline")
def reinforce_pp_baseline_advantage(rewards: torch.Tensor, cfg: AdvantageCfg) -> torch.Tensor:
    """REINFORCE++-baseline (Hu et al. 2025): subtract the group mean, then whiten over the
    whole batch: A = (a - mean_batch(a)) / (std_batch(a) + eps), a = r - mean_g.

    Whitening is over sequences (verl whitens over tokens; with outcome rewards the two differ
    only by length weighting).
    """
    a = rewards - rewards.mean(dim=1, keepdim=True)
    return (a - a.mean()) / (_std(a, None, cfg.std == "unbiased") + cfg.eps)


def compute_advantages(rewards: torch.Tensor, group_size: int, cfg: AdvantageCfg) -> torch.Tensor:
    """[N] rewards in contiguous groups -> [N] advantages via the configured estimator."""
    fn = ADVANTAGES.get(cfg.name, "advantage.name")
    return fn(rewards.view(-1, group_size), cfg).reshape(-1)
