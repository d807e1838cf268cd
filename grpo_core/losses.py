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

from grpo_core import params as P
from grpo_core.errors import UserError
from grpo_core.registry import Registry
from grpo_core.schema import KLCfg, LossCfg, ScheduleCfg
from grpo_core.tasks import item_segments

POLICY_LOSSES: Registry = Registry("policy loss")
# fn(logp, old_logp, adv, mask, ctx: LossContext, **params) -> (term_tok [b,T], logs)
REGULARISERS: Registry = Registry("regulariser", leading_args=5)
# fn(ctx: GroupContext, advantages [N], old_logp [N,T], mask [N,T], **params) -> (w [N,T], logs)
TOKEN_WEIGHTS: Registry = Registry("token weighting", leading_args=4)
# the policy losses that take [b, T] advantages (a step-level estimator's per-turn values on
# the tokens); the others read one advantage per sequence
TOKEN_ADVANTAGE_LOSSES = ("ppo_clip", "gspo", "reinforce")


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
    # group structure (group-level losses): [b] index of each row's group in the step's batch
    # and [b] that group's size in the batch (see :func:`row_groups`)
    group_ids: torch.Tensor | None = None
    group_sizes: torch.Tensor | None = None
    # minibatch-global statistics (sums over all micro-batches and ranks of the minibatch, no
    # gradient) for a policy loss that declares ``minibatch_stats`` (see the trainer's optimize)
    minibatch: dict | None = None
    # [b] rows not sampled from the training prompt (a refinement round's): off-policy rows
    off_policy: torch.Tensor | None = None
    tokenizer: object = None  # the policy's tokenizer (token <-> text), for text-aware losses


def row_groups(group_sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous group sizes [3, 2] -> ([N] group id per row [0,0,0,1,1], [N] its group's size
    [3,3,3,2,2])."""
    ids = torch.repeat_interleave(torch.arange(len(group_sizes)), torch.tensor(group_sizes))
    return ids, torch.tensor(group_sizes)[ids]


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

    With d = log pi_ref - log pi_theta: k1 = -d, k2 = d^2 / 2 (neither clamped),
    k3 = clamp(exp(d') - d' - 1, +-cfg.clamp) with d' = clamp(d, +-20), as verl's kl_penalty
    (low_var_kl): the value is clamped after it is computed, so k1 / k2 keep their gradient on
    tokens where the two policies disagree most (|d| > 10; KDRL's teacher term).
    """
    d = ref_logp - logp
    if cfg.estimator == "k1":
        return -d
    if cfg.estimator == "k2":
        return 0.5 * d * d
    d = torch.clamp(d, -20.0, 20.0)  # exp overflow guard (verl)
    return torch.clamp(torch.exp(d) - d - 1.0, -cfg.clamp, cfg.clamp)


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


# the policy losses that need every group whole in one micro-batch (they call _whole_groups;
# train.micro_batches: by_length keeps their groups together; tests/test_micro_batches.py
# keeps this set in step with the code)
WHOLE_GROUP_LOSSES = frozenset({"disco", "reg_grpo", "grao", "p3o", "sft_easy"})


def _whole_groups(ctx: LossContext | None, b: int, name: str) -> list[torch.Tensor]:
    """Row indices of each group in this micro-batch; every group must be complete (group-level
    losses are not additive over rows)."""
    if ctx is None or ctx.group_ids is None:
        return [torch.arange(b)]
    out = []
    for g in torch.unique(ctx.group_ids):
        rows = torch.nonzero(ctx.group_ids == g).flatten()
        if len(rows) != int(ctx.group_sizes[rows[0]]):
            raise UserError(
                f"loss {name!r} needs every group whole in one micro-batch, but group {int(g)} "
                f"has {len(rows)} of {int(ctx.group_sizes[rows[0]])} rows here; use train.mu: 1, "
                "a train.micro_batch_size >= the minibatch size, and minibatches of whole groups"
            )
        out.append(rows)
    return out


def _seq_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1).clamp(min=1)


@POLICY_LOSSES.register("reinforce")
def reinforce_loss(logp, old_logp, adv, mask, cfg: LossCfg, ctx: LossContext | None = None):
    """REINFORCE without importance ratio or clip: l_t = -A * log pi_theta(o_t). Off-policy
    group-relative REINFORCE (OPMD, AsymRE: Yao et al. 2025, arXiv:2509.24203) keeps this loss
    on stale minibatches; the baseline is the advantage estimator's (``reinforce_baseline``)."""
    a = adv.unsqueeze(-1) if adv.dim() == 1 else adv
    return -a * logp, torch.zeros_like(logp, dtype=torch.bool)


@POLICY_LOSSES.register("disco", params=P.DiscoParams)
def disco_loss(logp, old_logp, adv, mask, cfg: LossCfg, ctx: LossContext | None = None):
    """DisCO (Li et al. 2025, arXiv:2505.12366): a discriminative objective per prompt with both
    positive (A > 0) and negative (A < 0) completions,

        J_g = mean_{i in pos} s_i - tau * log mean_{j in neg} exp(s_j / tau),

    score s = mean token log pi_theta ("logp", log-L) or mean ratio pi_theta/pi_old ("ratio",
    L-ratio); no clip, no reference. KL(pi_old || pi_theta), the token mean of the k3 estimate
    rho - 1 - log rho (``kl: k3``, the authors' low_var_kl; ``k1``: -log rho), is held by a
    squared hinge beta/2 * [KL - delta]_+^2. Every row of group g carries a share of -J_g (times
    |g|, so the rows add up to the mean of -J over all groups under seq_mean_token_mean).
    ``clipped`` marks rows where the hinge is active. Needs whole groups per micro-batch.

    ``hinge_on``: ``minibatch`` (default): one hinge on the KL of the whole minibatch (all its
    micro-batches and ranks: ``ctx.minibatch`` from :func:`disco_minibatch_stats`), so the
    update does not depend on train.micro_batch_size: each token carries the detached
    coefficient beta [KL_mb - delta]_+ times its KL share (the gradient of the squared hinge,
    as the authors' constraint = max(beta (kl - delta), 0).detach() * kl). ``micro_batch``:
    the hinge on each micro-batch's own KL (the authors' code applies it per all-gathered
    micro-batch, 32 sequences of a 256-sequence minibatch in their scripts)."""
    p = _disco_params(cfg)
    if p["score"] == "logp":
        s = _seq_mean(logp, mask)
    else:  # ratio
        s = _seq_mean(torch.exp(logp - old_logp), mask)
    tau = float(p["tau"])
    per_row = [s.new_zeros(()) for _ in range(len(s))]
    for rows in _whole_groups(ctx, len(s), "disco"):
        pos, neg = rows[adv[rows] > 0], rows[adv[rows] < 0]
        if len(pos) == 0 or len(neg) == 0:
            continue  # only prompts with both right and wrong answers
        size = len(rows)
        lme = tau * (torch.logsumexp(s[neg] / tau, 0) - math.log(len(neg)))
        for i in pos.tolist():
            per_row[i] = -s[i] * size / len(pos)
        for j in neg.tolist():
            per_row[j] = lme * size / len(neg)
    loss = torch.stack(per_row)
    kl_tok = _disco_kl_tok(logp, old_logp, p["kl"])
    m = mask.to(logp.dtype)
    beta, delta = float(p["beta"]), float(p["delta"])
    mb = ctx.minibatch if ctx is not None else None
    if p["hinge_on"] == "minibatch" and mb is not None:
        # value beta/2 h^2 on every row (they add up to it); gradient beta h * d KL_mb with
        # KL_mb = sum of the minibatch's token KLs / its token count: row i carries
        # beta h * sum_t kl_it * n_seqs / n_tokens (seq_mean_token_mean divides by n_seqs)
        h = max(mb["kl_sum"] / max(mb["tokens"], 1.0) - delta, 0.0)
        kl_row = (kl_tok * m).sum(-1)
        share = (kl_row - kl_row.detach()) * (mb["seqs"] / max(mb["tokens"], 1.0))
        loss = loss + 0.5 * beta * h**2 + beta * h * share
        active = h > 0
    else:
        kl = (kl_tok * m).sum() / m.sum().clamp(min=1)
        hinge = torch.clamp(kl - delta, min=0.0)
        loss = loss + 0.5 * beta * hinge**2
        active = bool(hinge.detach() > 0)
    return loss.unsqueeze(-1).expand_as(logp), torch.full_like(mask, active, dtype=torch.bool)


def _disco_params(cfg: LossCfg) -> dict:
    return POLICY_LOSSES.resolve_params("disco", cfg.params, "loss.params")


def _disco_kl_tok(logp, old_logp, kind: str) -> torch.Tensor:
    """KL(pi_old || pi_theta) per token from samples of pi_old: k3 rho - 1 - log rho or k1."""
    log_rho = logp - old_logp
    return torch.exp(log_rho) - 1.0 - log_rho if kind == "k3" else -log_rho


def disco_minibatch_stats(cfg: LossCfg):
    """None (no minibatch statistics needed) or fn(logp, old_logp, mask) -> sums of this share
    of the minibatch: {"kl_sum": summed token KL, "tokens": tokens, "seqs": sequences}."""
    p = _disco_params(cfg)
    if p["hinge_on"] != "minibatch":
        return None

    def stats(logp, old_logp, mask) -> dict:
        m = mask.to(logp.dtype)
        kl = float((_disco_kl_tok(logp, old_logp, p["kl"]) * m).sum())
        return {"kl_sum": kl, "tokens": float(m.sum()), "seqs": float(len(logp))}

    return stats


disco_loss.minibatch_stats = disco_minibatch_stats


@POLICY_LOSSES.register("reg_grpo", params=P.RegGrpoParams)
def reg_grpo_loss(logp, old_logp, adv, mask, cfg: LossCfg, ctx: LossContext | None = None):
    """Reg-GRPO (Park et al. 2025, DeepVideo-R1, arXiv:2506.07464): regress the advantage with
    the group-normalised sequence log-ratio, no clip, no min:

        rho_i = mean_t (log pi_theta - log pi_old),  A_hat_i = (rho_i - mean_g rho) / s_g,
        loss_i = (A_i - A_hat_i)^2,

    s_g = max(std_g(rho) without gradient, min_std) (params ``scale: std``, the default; on the
    first update after sampling rho = 0 and the raw std is 0) or s_g = ``beta`` (``scale:
    fixed``). Each token of row i carries loss_i (its mean over the row is loss_i)."""
    p = POLICY_LOSSES.resolve_params("reg_grpo", cfg.params, "loss.params")
    rho = _seq_mean(logp - old_logp, mask)
    per_row = [rho.new_zeros(()) for _ in range(len(rho))]
    for rows in _whole_groups(ctx, len(rho), "reg_grpo"):
        r = rho[rows]
        c = r - r.mean()
        if p["scale"] == "std":
            sd = r.detach().std(correction=1) if len(rows) > 1 else r.new_zeros(())
            scale = torch.clamp(sd, min=float(p["min_std"]))
        else:  # fixed
            scale = float(p["beta"])
        err = (adv[rows] - c / scale) ** 2
        for k, i in enumerate(rows.tolist()):
            per_row[i] = err[k]
    loss = torch.stack(per_row)
    return loss.unsqueeze(-1).expand_as(logp), torch.zeros_like(mask, dtype=torch.bool)


@POLICY_LOSSES.register("grao", params=P.GraoParams)
def grao_loss(logp, old_logp, adv, mask, cfg: LossCfg, ctx: LossContext | None = None):
    """GRAO (Wang et al. 2025, arXiv:2508.07750) group direct alignment loss, per group of G
    completions with advantages A_i and length-normalised log-likelihoods
    l_i = mean_t log pi_theta(o_it):

        J_g = 1/G sum_i [ A_i l_i  +  beta A_y l_y  +  lam (A_i - A_y)(l_i - l_y) ]

    (exploration, imitation of the reference completion y, alignment of each o_i against y).
    No importance ratio and no clip (a direct, likelihood-based objective). y is the group's
    off-policy row when it has one (``ctx.off_policy``: the reference answer joined by the
    sampler ``reference``, the paper's y; it is not one of the o_i and carries 0 itself, its
    log-likelihood gets its gradient through the others), else the group's sample of highest
    advantage (the first on ties; with a verifiable reward a correct one when the group has
    one). Row i carries -(A_i l_i + beta A_y l_y + lam (A_i - A_y)(l_i - l_y)) on each token,
    so the rows add up to -G J_g (G samples) and seq_mean_token_mean gives the mean of -J over
    groups of equal size (times G / (G + 1) with a reference row: it counts in the denominator).
    Needs whole groups per micro-batch."""
    p = POLICY_LOSSES.resolve_params("grao", cfg.params, "loss.params")
    beta, lam = float(p["beta"]), float(p["lam"])
    ell = _seq_mean(logp, mask)
    per_row = [ell.new_zeros(()) for _ in range(len(ell))]
    off = ctx.off_policy if ctx is not None and ctx.off_policy is not None else None
    for rows in _whole_groups(ctx, len(ell), "grao"):
        a, lg = adv[rows].to(ell.dtype), ell[rows]
        ref = torch.nonzero(off[rows]).flatten() if off is not None else rows[:0]
        k = int(ref[0]) if len(ref) else int(torch.argmax(a))
        a_y, l_y = a[k], lg[k]
        val = -(a * lg + beta * a_y * l_y + lam * (a - a_y) * (lg - l_y))
        for n, i in enumerate(rows.tolist()):
            if not (len(ref) and n == k):  # the reference row is y, not a sample
                per_row[i] = val[n]
    loss = torch.stack(per_row)
    return loss.unsqueeze(-1).expand_as(logp), torch.zeros_like(mask, dtype=torch.bool)


def _pair_surrogate(ratio, a, cfg: LossCfg):
    """-min(ratio a, clip(ratio) a) for scalars (one pair's side) and whether the clip binds."""
    unclipped = -a * ratio
    clipped = -a * torch.clamp(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    return torch.maximum(unclipped, clipped), bool(clipped.detach() > unclipped.detach())


@POLICY_LOSSES.register("p3o", params=P.P3oParams)
def p3o_loss(logp, old_logp, adv, mask, cfg: LossCfg, ctx: LossContext | None = None):
    """P3O (Wu et al. 2023, Pairwise Proximal Policy Optimization, arXiv:2310.00212): a
    trajectory-wise clipped objective on reward differences of pairs of completions of one
    prompt. Trajectory ratio rho_i = pi_theta(o_i) / pi_old(o_i) = exp(sum_t (logp - old_logp));
    for a pair (i, j) with d = (A_i - A_j) / 2 (= (r_i - r_j) / 2: the group baseline cancels;
    with KL in the reward, r includes -beta KL):

      separate clipping: L_ij = -min(rho_i d, clip(rho_i) d) - min(rho_j (-d), clip(rho_j) (-d))
      joint clipping:    L_ij = -min(rho_ij d, clip(rho_ij) d),  rho_ij = rho_i / rho_j

    (clip range loss.eps_low / eps_high). A group of G gives G(G-1)/2 pairs; their mean times G
    is spread over the rows (separate: each side to its own row; joint: half to each), so the
    rows add up to G times the pair mean and seq_mean_token_mean averages it over groups.
    ``clipped`` marks rows with a binding clip in some pair. Needs whole groups."""
    p = POLICY_LOSSES.resolve_params("p3o", cfg.params, "loss.params")
    m = mask.to(logp.dtype)
    log_rho = ((logp - old_logp) * m).sum(-1)  # [b]
    per_row = [log_rho.new_zeros(()) for _ in range(len(log_rho))]
    clip_row = [False] * len(log_rho)
    for rows in _whole_groups(ctx, len(log_rho), "p3o"):
        g = rows.tolist()
        if len(g) < 2:
            continue
        w = 2.0 / (len(g) - 1)  # G / (G (G-1) / 2)
        for u in range(len(g)):
            for v in range(u + 1, len(g)):
                i, j = g[u], g[v]
                d = (adv[i] - adv[j]).to(log_rho.dtype) / 2
                if p["clip"] == "separate":
                    li, ci = _pair_surrogate(torch.exp(log_rho[i]), d, cfg)
                    lj, cj = _pair_surrogate(torch.exp(log_rho[j]), -d, cfg)
                    per_row[i] = per_row[i] + w * li
                    per_row[j] = per_row[j] + w * lj
                else:  # joint
                    lij, ci = _pair_surrogate(torch.exp(log_rho[i] - log_rho[j]), d, cfg)
                    cj = ci
                    per_row[i] = per_row[i] + w * lij / 2
                    per_row[j] = per_row[j] + w * lij / 2
                clip_row[i] |= ci
                clip_row[j] |= cj
    loss = torch.stack(per_row)
    clipped = torch.tensor(clip_row, device=mask.device).unsqueeze(-1).expand_as(mask)
    return loss.unsqueeze(-1).expand_as(logp), clipped.clone()


@POLICY_LOSSES.register("sft_easy", params=P.SftEasyParams)
def sft_easy_loss(logp, old_logp, adv, mask, cfg: LossCfg, ctx: LossContext | None = None):
    """Psyche-R1 (2025, "Towards Reliable Psychological LLMs through Unified Empathy, Expertise,
    and Reasoning") hybrid split: hard prompts train with GRPO
    (the token-level PPO clip), easy ones with SFT. A prompt is easy when the share of its
    group's completions with reward >= ``correct_reward`` is >= ``easy_acc`` (the group's G
    samples do the cross-selection); its rows carry -sft_coef * log pi_theta(o_t) on the correct
    completions (its wrong ones: 0) and no policy-gradient term. Needs whole groups and
    ``ctx.rewards``."""
    p = POLICY_LOSSES.resolve_params("sft_easy", cfg.params, "loss.params")
    if ctx is None or ctx.rewards is None:
        raise UserError("loss 'sft_easy' needs each row's reward (LossContext.rewards)")
    pg, clipped = _clipped_surrogate(torch.exp(logp - old_logp), adv, cfg)
    correct = ctx.rewards >= float(p["correct_reward"])
    easy = torch.zeros(len(logp), dtype=torch.bool, device=logp.device)
    for rows in _whole_groups(ctx, len(logp), "sft_easy"):
        easy[rows] = float(correct[rows].float().mean()) >= float(p["easy_acc"])
    sft = -float(p["sft_coef"]) * logp * correct.to(logp.dtype).unsqueeze(-1)
    loss = torch.where(easy.unsqueeze(-1), sft, pg)
    return loss, clipped & ~easy.unsqueeze(-1)


@POLICY_LOSSES.register("rank_ratio", params=P.RankRatioParams)
def rank_ratio_loss(logp, old_logp, adv, mask, cfg: LossCfg, ctx: LossContext | None = None):
    """Rank-GRPO (Zhu et al. 2025; the authors' importance_sampling_level "item") clipped
    surrogate with a rank-level ratio: the completion is split into list entries at ``sep``
    (:func:`grpo_core.tasks.item_segments`), and every token of entry j takes the entry's ratio
    s_j = exp(mean_{t in j} (log pi_theta - log pi_old)) (the geometric mean of its token
    ratios, with the gradient of that mean, as the authors' scatter / gather); tokens outside
    every entry (EOS) keep their own ratio. Then -min(s A_t, clip(s) A_t) per token with the
    per-token (rank) advantages. On-policy (s = 1) its gradient summed over an entry equals
    ppo_clip's."""
    p = POLICY_LOSSES.resolve_params("rank_ratio", cfg.params, "loss.params")
    if ctx is None or ctx.tokenizer is None or ctx.completion_ids is None:
        raise UserError("loss 'rank_ratio' needs the completions' token ids and the tokenizer")
    seg = item_segments(ctx.completion_ids, mask, ctx.tokenizer, p["sep"]).to(logp.device)
    log_r = (logp - old_logp) * mask.to(logp.dtype)
    n_bins = int(seg.max()) + 2 if seg.numel() else 1
    idx = (seg + 1).clamp(min=0)  # bin 0: tokens outside every entry
    sums = torch.zeros(logp.shape[0], n_bins, dtype=logp.dtype, device=logp.device)
    cnts = torch.zeros_like(sums)
    inside = (seg >= 0).to(logp.dtype) * mask.to(logp.dtype)
    sums = sums.scatter_add(1, idx, log_r * inside)
    cnts = cnts.scatter_add(1, idx, inside)
    entry = (sums / cnts.clamp(min=1)).gather(1, idx)
    log_s = torch.where(seg >= 0, entry, logp - old_logp)
    return _clipped_surrogate(torch.exp(log_s), adv, cfg)


@POLICY_LOSSES.register("policy_shaping", params=P.PolicyShapingParams)
def policy_shaping_loss(logp, old_logp, adv, mask, cfg: LossCfg, ctx: LossContext | None = None):
    """Mixed on- / off-policy loss (Critique-GRPO, Zhang et al. 2025, arXiv:2506.03106; the
    authors' compute_token_on_off_policy_loss with off_policy_reshape p_div_p_0.1, as LUFFY):
    rows sampled from the training prompt take the token-level PPO clip; off-policy rows
    (``ctx.off_policy``, e.g. refinements written with a critique in the prompt) take

        l_t = -A * f(pi_theta(o_t)),  f(p) = p / (p + gamma),

    no ratio to the old policy and no clip: the shaping f lifts the gradient of low-probability
    tokens (grad f = gamma p / (p + gamma)^2 * grad log p). Without ``ctx.off_policy`` it is
    ppo_clip."""
    p = POLICY_LOSSES.resolve_params("policy_shaping", cfg.params, "loss.params")
    loss, clipped = _clipped_surrogate(torch.exp(logp - old_logp), adv, cfg)
    if ctx is None or ctx.off_policy is None or not bool(ctx.off_policy.any()):
        return loss, clipped
    a = adv.unsqueeze(-1) if adv.dim() == 1 else adv
    prob = torch.exp(logp)
    shaped = -a * prob / (prob + float(p["gamma"]))
    off = ctx.off_policy.unsqueeze(-1)
    return torch.where(off, shaped, loss), clipped & ~off


# LLDS: a mean per-token fall below this is float rounding, not a displacement
LLDS_FLOAT_TOL = 1e-5


@REGULARISERS.register("llds", params=P.LldsParams)
def llds_regulariser(logp, old_logp, adv, mask, ctx, min_adv: float = 0.0):
    """LLDS (lazy-likelihood-displacement regulariser, Search-R1 collapse paper): per token
    max(0, log pi_old - log pi_theta), only on responses with A >= ``min_adv`` whose summed
    log-likelihood fell (sum_t log pi_theta - log pi_old < 0). Zero on the first update after
    sampling (pi_theta = pi_old); active on later minibatches / epochs. "Fell" means by more
    than LLDS_FLOAT_TOL per token: a pass at another width or micro-batch (train.micro_batches:
    by_length, a sampler's log-probs) gives pi_old to ~1e-7, and a sign test at exactly 0 would
    switch the regulariser on for rows whose likelihood did not move."""
    m = mask.to(logp.dtype)
    drop = torch.clamp(old_logp - logp, min=0.0)
    fell = ((logp - old_logp).detach() * m).sum(-1) < -LLDS_FLOAT_TOL * m.sum(-1)
    on = ((adv >= min_adv) & fell).to(logp.dtype).unsqueeze(-1)
    term = drop * on
    n = m.sum().clamp(min=1)
    return term, {
        "active_frac": float((on * m).sum() / n),
        "penalty": float((term.detach() * m).sum() / n),
    }


@REGULARISERS.register("seagent_ai", params=P.SeagentAiParams)
def seagent_ai_regulariser(logp, old_logp, adv, mask, ctx, success: float = 0.5):
    """SEAgent's adversarial imitation of failure actions (Sun et al. 2025, arXiv:2508.04700;
    the authors' Qwen2VLGRPOTrainer.compute_loss on bad steps): per token of a failed row
    (reward < ``success``) -log sigmoid(-(log pi_theta - log pi_ref)), which falls as the
    policy puts less probability than the reference on the failed action; 0 on other rows.
    The authors take the token mean over the bad step's action and scale it by neg_gamma (here
    the regulariser's weight)."""
    if ctx.ref_logp is None or ctx.rewards is None:
        raise UserError(
            "regulariser seagent_ai needs reference log-probs and rewards: keep a reference "
            "(loss.kl.beta > 0 or train.log_kl: true)"
        )
    fail = (ctx.rewards < success).to(logp.dtype).unsqueeze(-1)
    term = -torch.nn.functional.logsigmoid(-(logp - ctx.ref_logp)) * fail
    m = mask.to(logp.dtype)
    n = m.sum().clamp(min=1)
    return term, {
        "fail_frac": float((fail * m).sum() / n),
        "penalty": float((term.detach() * m).sum() / n),
    }


@REGULARISERS.register("kd_reverse_kl", params=P.KdReverseKlParams)
def kd_reverse_kl_regulariser(
    logp,
    old_logp,
    adv,
    mask,
    ctx,
    estimator: str = "k2",
    skip_correct: bool = True,
    correct_reward: float = 1.0,
):
    """KDRL (Xu et al. 2025, arXiv:2506.02208): reverse KL(pi_theta || pi_teacher) on the
    student's own rollouts, per token with the k1/k2/k3 estimator of :func:`kl_estimate`
    (teacher = the reference slot, model.ref_name_or_path, e.g. run:grpo/seed0); with
    ``skip_correct`` responses whose reward >= ``correct_reward`` get no KD term (reward-guided
    KD). Weight and its annealing come from the regulariser's weight / schedule."""
    if ctx.ref_logp is None:
        raise UserError(
            "regulariser kd_reverse_kl needs teacher log-probs: set model.ref_name_or_path "
            "(e.g. run:grpo/seed0) and keep train.log_kl: true"
        )
    if estimator not in ("k1", "k2", "k3"):
        raise UserError(f"kd_reverse_kl estimator {estimator!r}: want k1, k2 or k3")
    term = kl_estimate(logp, ctx.ref_logp, KLCfg(estimator=estimator))
    m = mask.to(logp.dtype)
    keep = torch.ones(len(logp), dtype=logp.dtype, device=logp.device)
    if skip_correct and ctx.rewards is not None:
        keep = (ctx.rewards < correct_reward).to(logp.dtype)
    term = term * keep.unsqueeze(-1)
    n = m.sum().clamp(min=1)
    return term, {
        "kd": float((term.detach() * m).sum() / n),
        "kd_frac": float((keep.unsqueeze(-1) * m).sum() / n),
    }


def _conflict_run(ids: torch.Tensor, m: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
    """[g, C] leading runs of conflict tokens: position t of completion c is a conflict when its
    token there also occurs at position t in some positive and in some negative completion (the
    completion itself counts); the run stops at c's first non-conflict position."""
    eq = (ids[:, None, :] == ids[None, :, :]) & m[:, None, :] & m[None, :, :]  # [g, g, C]
    raw = (eq & pos[None, :, None]).any(1) & (eq & neg[None, :, None]).any(1) & m
    raw &= (pos | neg)[:, None]  # completions with A = 0 take no part
    return torch.cumprod(raw.long(), dim=1).bool()


@TOKEN_WEIGHTS.register("gtpo_conflict", params=P.GtpoConflictParams, needs={"policy"})
def gtpo_conflict_weights(
    ctx,
    advantages,
    old_logp,
    mask,
    pos_weight=2.0,
    neg_weight=0.0,
    norm_by_conflicts=True,
    count="max",
    on="policy",
):
    """GTPO (Simoni et al. 2025, arXiv:2508.03772; the authors' build_conflict_mask) conflict
    tokens: within a group, a token at position t is in conflict when the same token sits at t
    in a positive (A > 0) and a negative (A < 0) completion; only the leading run of such
    positions counts, once with positions from the start and once aligned at the ends. A
    conflict weighs ``pos_weight`` in a positive completion and ``neg_weight`` in a negative
    one, per run (a position in both runs of a positive completion weighs pos_weight^2);
    others 1. With ``norm_by_conflicts`` each completion's weights are divided by its number
    of conflict tokens (at least 1), as the authors' loss divides each completion's loss.
    That number (``count``): ``max`` (default) = max(forward run, backward run), what the
    authors' build_conflict_mask computes (it takes the union of the forward mask and the
    backward mask still in reversed coordinates, two leading runs: the longer one); ``union``
    = |forward run U backward run| with both in forward positions (the conflict tokens
    themselves; a token in both runs counts once). Params are checked by the trainer
    (:func:`token_weight_target` resolves them)."""
    ids, m = ctx.completion_ids, mask.bool()
    C = m.shape[1]
    w = torch.ones_like(old_logp)
    conflict = torch.zeros_like(m)
    steps = torch.arange(C).unsqueeze(0)
    for sl in ctx.groups():
        a, ig, mg = advantages[sl], ids[sl], m[sl]
        pos, neg = a > 0, a < 0
        if not (pos.any() and neg.any()):
            continue
        fwd = _conflict_run(ig, mg, pos, neg)
        lens = mg.sum(-1, keepdim=True)  # reversed, right-aligned: s = 0 is the last token
        idx = (lens - 1 - steps).clamp(min=0)
        bwd_rev = _conflict_run(ig.gather(1, idx), steps < lens, pos, neg)
        bwd = torch.zeros_like(mg)
        for r in range(len(a)):
            n = int(lens[r])
            bwd[r, :n] = bwd_rev[r, :n].flip(0)
        side = torch.where(pos, pos_weight, neg_weight).to(w.dtype).unsqueeze(-1)
        one = torch.ones_like(w[sl])
        delta = torch.where(fwd, side, one) * torch.where(bwd, side, one)
        both = (fwd | bwd) & mg
        if count == "max":  # the authors' count: the longer of the two leading runs
            n_conf = torch.maximum((fwd & mg).sum(-1), (bwd & mg).sum(-1))
        else:
            n_conf = both.sum(-1)
        if norm_by_conflicts:
            delta = delta / n_conf.unsqueeze(-1).clamp(min=1).to(w.dtype)
        w[sl] = delta
        conflict[sl] = both
    n = m.sum().clamp(min=1)
    return w, {"conflict_frac": float(conflict.sum() / n), "mean": float((w * m).sum() / n)}


def token_weight_target(fn, params: dict) -> str:
    """Which loss terms the ``loss.token_weights`` weights multiply: ``policy`` (the
    policy-gradient term only) or ``policy_kl`` (the policy term plus beta * KL, as TW-GRPO's
    code weights its per-token loss); ``params.on``, else the weighting's own default (policy
    for one without ``on``). ``params`` are validated by the weighting's params model."""
    name = TOKEN_WEIGHTS.name_of(fn)
    return TOKEN_WEIGHTS.resolve_params(name, params, "loss.token_weights.params").get(
        "on", "policy"
    )


@TOKEN_WEIGHTS.register("tw_grpo", params=P.TwGrpoParams, needs={"policy", "dist"})
def tw_grpo_weights(ctx, advantages, old_logp, mask, alpha=1.4, on="policy_kl"):
    """TW-GRPO (Dang et al. 2025, arXiv:2505.24718; the authors' code) token weights from the
    group's token distributions: per position t, with log p_i the sampling policy's
    log-distribution of completion i (uniform past its end), log q = mean_i log p_i and
    d = clamp(log q - log p_i, -11, 11),

        D_t = mean_i sum_v (exp(d) - d - 1)      (k3 terms summed over the vocabulary),

    min-max normalised over the batch width's positions (+1e-8), w_t = 1 + (alpha - 1) * D_t,
    the same for every completion of the group. The full distributions are computed one group
    at a time (ctx.logprobs_rows("dist", rows), [G, C, V]). ``on``: the weights multiply the
    policy term plus the KL term (``policy_kl``, the authors' grpo_trainer.py:
    (-(surrogate - beta KL)) * w) or the policy term only (``policy``)."""
    m = mask.bool()
    w = torch.ones_like(old_logp)
    for sl in ctx.groups():
        lp = ctx.logprobs_rows("dist", list(range(sl.start, sl.stop)))  # [G, C, V]
        V = lp.shape[-1]
        lp = torch.where(m[sl].unsqueeze(-1), lp, torch.full_like(lp, -math.log(V)))
        d = torch.clamp(lp.mean(0, keepdim=True) - lp, -11.0, 11.0)
        D = (torch.exp(d) - d - 1.0).sum(-1).mean(0)  # [C]
        Dn = (D - D.min()) / (D.max() - D.min() + 1e-8)
        w[sl] = (1.0 + (alpha - 1.0) * Dn).unsqueeze(0).expand(sl.stop - sl.start, -1)
    n = m.sum().clamp(min=1)
    return w, {"mean": float((w * m).sum() / n), "max": float(w[m].max()) if m.any() else 1.0}
