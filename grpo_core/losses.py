"""Policy losses, KL estimators, entropy and loss aggregation.

A policy loss is a pure function registered by name::

    fn(logp [b,T], old_logp [b,T], adv [b], mask [b,T], cfg, ctx: LossContext | None = None)
        -> (loss_tok [b,T], clipped [b,T])

returning the per-token loss (to be minimised) and a bool mask of tokens whose clip was active.
Two more registries add to it: REGULARISERS (per-token terms added to the loss, config
``loss.regularisers``) and TOKEN_WEIGHTS (per-token weights on the policy-loss term computed once
per step over the whole batch, config ``loss.token_weights``).
The trainer adds the KL and entropy terms per token and reduces with :func:`aggregate`, whose
denominators are fixed for the whole minibatch, so splitting it into micro-batches and summing
their contributions gives exactly the same loss and gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from grpo_core.config import KLCfg, LossCfg, ScheduleCfg
from grpo_core.registry import Registry

POLICY_LOSSES: Registry = Registry("policy loss")
# fn(logp, old_logp, adv, mask, ctx: LossContext, **params) -> (term_tok [b,T], logs)
REGULARISERS: Registry = Registry("regulariser")
# fn(ctx: GroupContext, advantages [N], old_logp [N,T], mask [N,T], **params) -> (w [N,T], logs)
TOKEN_WEIGHTS: Registry = Registry("token weighting")


@dataclass
class LossContext:
    """What a policy loss or regulariser sees beyond (logp, old_logp, adv, mask) for one
    micro-batch of b sequences."""

    entropy: torch.Tensor | None = None  # [b, T] per-token entropy (with grad)
    ref_logp: torch.Tensor | None = None  # [b, T] reference / teacher log-probs
    rewards: torch.Tensor | None = None  # [b] total rewards
    seq_index: torch.Tensor | None = None  # [b] rows of the step's batch
    token_weight: torch.Tensor | None = None  # [b, T] from loss.token_weights
    completion_ids: torch.Tensor | None = None  # [b, T]
    step: int = 0
    total_steps: int = 1


def schedule_value(start: float, sched: ScheduleCfg | None, step: int, total: int) -> float:
    """A coefficient at ``step`` of ``total`` moving from ``start`` to ``sched.end``:
    constant; linear; cosine (half cosine); exp (geometric); step (multiply by
    ``sched.factor`` every ``sched.every`` steps, no ``end``)."""
    if sched is None or sched.kind == "constant":
        return start
    if sched.kind == "step":
        return start * sched.factor ** (step // max(sched.every, 1))
    frac = min(max(step / max(total - 1, 1), 0.0), 1.0)
    end = sched.end
    if sched.kind == "linear":
        return start + (end - start) * frac
    if sched.kind == "cosine":
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * frac))
    if sched.kind == "exp":
        if start <= 0 or end <= 0:
            raise ValueError("an exp schedule needs start > 0 and end > 0")
        return start * (end / start) ** frac
    raise ValueError(f"unknown schedule kind {sched.kind!r}")


def _clipped_surrogate(
    ratio: torch.Tensor, adv: torch.Tensor, cfg: LossCfg
) -> tuple[torch.Tensor, torch.Tensor]:
    """-min(rho*A, clip(rho, 1-eps_low, 1+eps_high)*A), with optional dual clip for A < 0:
    loss = min(loss, -c*A) (Ye et al. 2020), c = cfg.dual_clip > 1."""
    a = adv.unsqueeze(-1) if adv.dim() == 1 else adv
    unclipped = -a * ratio
    clipped = -a * torch.clamp(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    loss = torch.maximum(unclipped, clipped)
    clip_active = clipped > unclipped
    if cfg.dual_clip is not None:
        if cfg.dual_clip <= 1.0:
            raise ValueError(f"loss.dual_clip must be > 1, got {cfg.dual_clip}")
        bound = -a * cfg.dual_clip  # only binds where A < 0
        dual = (a < 0) & (loss > bound)
        loss = torch.where(a < 0, torch.minimum(loss, bound), loss)
        clip_active = clip_active | dual
    return loss, clip_active


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip_loss(logp, old_logp, adv, mask, cfg: LossCfg, ctx: LossContext | None = None):
    """Token-level PPO clip (GRPO / DAPO): rho_t = exp(logp_t - old_logp_t)."""
    ratio = torch.exp(logp - old_logp)
    return _clipped_surrogate(ratio, adv, cfg)


@POLICY_LOSSES.register("gspo")
def gspo_loss(logp, old_logp, adv, mask, cfg: LossCfg, ctx: LossContext | None = None):
    """GSPO (Zheng et al. 2025): sequence ratio s_i = exp(mean_t (logp - old_logp)), applied per
    token as log s_it = sg(log s_i) + logp_t - sg(logp_t), so its value is s_i for every token
    (one clip decision per sequence) and its gradient is s_i * grad logp_t."""
    m = mask.to(logp.dtype)
    log_s = ((logp - old_logp) * m).sum(-1) / m.sum(-1).clamp(min=1)  # [b]
    log_s_tok = log_s.detach().unsqueeze(-1) + logp - logp.detach()
    return _clipped_surrogate(torch.exp(log_s_tok), adv, cfg)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, cfg: KLCfg) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta (Schulman 2020).

    With d = log pi_ref - log pi_theta (clamped to +-cfg.clamp):
    k1 = -d, k2 = d^2 / 2, k3 = exp(d) - d - 1.
    """
    d = torch.clamp(ref_logp - logp, -cfg.clamp, cfg.clamp)
    if cfg.estimator == "k1":
        return -d
    if cfg.estimator == "k2":
        return 0.5 * d * d
    return torch.exp(d) - d - 1.0


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy H = logsumexp(z) - sum softmax(z) * z.  [b,T,V] -> [b,T]."""
    logz = torch.logsumexp(logits, dim=-1)
    p = torch.softmax(logits, dim=-1)
    return logz - (p * logits).sum(-1)


def aggregate(
    loss_tok: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    n_seqs: int,
    n_tokens: int,
    norm_constant: float,
) -> torch.Tensor:
    """This micro-batch's share of the minibatch loss.

    ``n_seqs`` and ``n_tokens`` are the whole minibatch's sequence and token counts, so summing
    the shares of all micro-batches gives the minibatch loss:

    - token_mean:               sum_{i,t} l_it / n_tokens  (DAPO's token-level loss)
    - seq_mean_token_mean:      sum_i (sum_t l_it / |o_i|) / n_seqs  (original GRPO)
    - seq_mean_token_sum:       sum_i sum_t l_it / n_seqs
    - seq_mean_token_sum_norm:  sum_i sum_t l_it / (n_seqs * C)  (Dr. GRPO, C = generation budget)
    """
    m = mask.to(loss_tok.dtype)
    tok_sum = (loss_tok * m).sum(-1)  # [b]
    if mode == "token_mean":
        return tok_sum.sum() / max(n_tokens, 1)
    if mode == "seq_mean_token_mean":
        return (tok_sum / m.sum(-1).clamp(min=1)).sum() / max(n_seqs, 1)
    if mode == "seq_mean_token_sum":
        return tok_sum.sum() / max(n_seqs, 1)
    if mode == "seq_mean_token_sum_norm":
        return tok_sum.sum() / (max(n_seqs, 1) * norm_constant)
    raise ValueError(f"unknown loss aggregation {mode!r}")
