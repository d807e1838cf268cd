"""Policy losses, KL estimators, entropy and loss aggregation.

A policy loss is a pure function registered by name::

    fn(logp [b,T], old_logp [b,T], adv [b], mask [b,T], cfg) -> (loss_tok [b,T], clipped [b,T])

returning the per-token loss (to be minimised) and a bool mask of tokens whose clip was active.
The trainer adds the KL and entropy terms per token and reduces with :func:`aggregate`, whose
denominators are fixed for the whole minibatch, so splitting it into micro-batches and summing
their contributions gives exactly the same loss and gradients.
"""

from __future__ import annotations

import torch

from grpo_core.config import KLCfg, LossCfg
from grpo_core.registry import Registry

POLICY_LOSSES: Registry = Registry("policy loss")


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
def ppo_clip_loss(logp, old_logp, adv, mask, cfg: LossCfg):
    """Token-level PPO clip (GRPO / DAPO): rho_t = exp(logp_t - old_logp_t)."""
    ratio = torch.exp(logp - old_logp)
    return _clipped_surrogate(ratio, adv, cfg)


@POLICY_LOSSES.register("gspo")
def gspo_loss(logp, old_logp, adv, mask, cfg: LossCfg):
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
