"""Advantage estimators: group rewards -> per-sequence advantages.

Every estimator is a function registered by name::

    fn(rewards [n_groups, G], cfg, ctx: GroupContext | None = None) -> advantages [n_groups, G]
                                                               (or (advantages, {name: value}))

Rows are groups: the G completions of one prompt (the trainer asserts this layout with
:func:`assert_groups` before calling). ``ctx`` (grpo_core.rewards.GroupContext) gives estimators
that need more than rewards the completions' texts, answers and log-probs; parameters come from
``cfg.params``. When a sampler allocates different group sizes, the estimator is called once per
group. Per-token advantages are the sequence value broadcast over the completion's tokens.

Step-level estimators (multi-turn episodes) instead return a :class:`TurnAdvantages`: one
advantage per policy turn of each episode, [N, max_turns]; the trainer gives every policy
token of turn t of episode i the value A[i, t] (through ``Rollouts.turn_ids``; observation
tokens are outside the loss mask). They read the episodes from ``ctx.episodes``
(grpo_core.episodes.Episodes: per-turn env rewards, each turn's action and the observation it
was taken in).
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass

import torch

from grpo_core import distributed as dist
from grpo_core import params as P
from grpo_core.errors import UserError
from grpo_core.registry import Registry
from grpo_core.schema import AdvantageCfg
from grpo_core.tasks import item_segments

ADVANTAGES: Registry = Registry("advantage estimator")
# the estimators that return per-turn advantages (TurnAdvantages)
STEP_LEVEL = ("gigpo", "salt", "m_grpo", "hrpo")


def assert_groups(prompt_ids: list, group_size: int | list[int]) -> None:
    """Assert that completions come in contiguous blocks (of ``group_size`` each, or of the
    listed sizes) sharing one prompt."""
    n = len(prompt_ids)
    if isinstance(group_size, int):
        if n % group_size != 0:
            raise AssertionError(f"{n} completions do not split into groups of {group_size}")
        sizes = [group_size] * (n // group_size)
    else:
        sizes = list(group_size)
        if sum(sizes) != n:
            raise AssertionError(f"group sizes {sizes} do not add up to {n} completions")
    s = 0
    for g, size in enumerate(sizes):
        block = prompt_ids[s : s + size]
        s += size
        if any(p != block[0] for p in block):
            raise AssertionError(
                f"group {g} mixes prompts {sorted(set(map(str, block)))}: every group must hold "
                f"the {size} completions of one prompt"
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
    reward std ("group"), the std of all the step's rewards, over every data-parallel rank
    ("batch": TRL's scale_rewards="batch", which gathers the rewards first; REINFORCE++ and
    Magistral instead divide by the std of the group-centred advantages, the
    ``reinforce_pp_baseline`` estimator) or nothing ("none", which is Dr. GRPO's estimator).
    """
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    unbiased = cfg.std == "unbiased"
    if cfg.scale == "group":
        return centered / (_std(rewards, 1, unbiased) + cfg.eps)
    if cfg.scale == "batch":
        return centered / (_std(dist.gather_cat(rewards.reshape(-1)), None, unbiased) + cfg.eps)
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
    whole batch: A = (a - mean_batch(a)) / (std_batch(a) + eps), a = r - mean_g; the batch is
    the step's, over every data-parallel rank (gathered first).

    Whitening is over sequences (verl whitens over tokens; with outcome rewards the two differ
    only by length weighting).
    """
    a = rewards - rewards.mean(dim=1, keepdim=True)
    a_all = dist.gather_cat(a.reshape(-1))
    return (a - a_all.mean()) / (_std(a_all, None, cfg.std == "unbiased") + cfg.eps)


@ADVANTAGES.register("xrpo_novelty", params=P.XrpoNoveltyParams, needs={"policy"})
def xrpo_novelty_advantage(rewards: torch.Tensor, cfg: AdvantageCfg, ctx=None):
    """XRPO novelty-aware advantage sharpening (Bamba et al. 2025, arXiv:2510.06672).

    A_i is GRPO's group advantage (``cfg.std`` / ``cfg.eps`` as for grpo); a response with A_i > 0
    (better than its group) that the sampling policy found unlikely gets a bonus
        A_i + min(max(lam * (1 - exp(s_i - mean_g s)), 0), kappa * A_i),
    s_i = mean token log-prob of the response under the sampling policy (ctx.seq_logp_mean()).
    Responses at or above the group's mean likelihood, and those with A_i <= 0, are unchanged.
    Params: lam (1.0), kappa (0.5).
    """
    p = ADVANTAGES.resolve_params("xrpo_novelty", cfg.params, "advantage.params")
    if ctx is None:
        raise UserError("advantage xrpo_novelty needs the group context (sequence log-probs)")
    adv = grpo_advantage(rewards, cfg)
    s = ctx.seq_logp_mean().to(rewards.dtype).view_as(rewards)
    novelty = (float(p["lam"]) * (1 - torch.exp(s - s.mean(dim=1, keepdim=True)))).clamp(min=0)
    bonus = torch.where(adv > 0, torch.minimum(novelty, float(p["kappa"]) * adv), 0.0)
    pos = adv > 0
    logs = {
        "novelty_bonus": float(bonus[pos].mean()) if pos.any() else 0.0,
        "frac_boosted": float((bonus > 0).float().mean()),
    }
    return adv + bonus, logs


@ADVANTAGES.register("reinforce_baseline", params=P.ReinforceBaselineParams)
def reinforce_baseline_advantage(rewards: torch.Tensor, cfg: AdvantageCfg):
    """Group-relative REINFORCE baselines (Yao et al. 2025, "Group-Relative REINFORCE Is Secretly
    an Off-Policy Algorithm", arXiv:2509.24203): A = scale * (r - b - delta) with

    - baseline "mean": b = mean_g r (AsymRE: delta = -0.1 lowers the baseline, A = r - mean +
      0.1; OPMD's default);
    - baseline "logavgexp": b = tau * log mean_g exp(r / tau) (OPMD's alternative).

    OPMD divides its loss by 1 + tau: ``scale: 0.5`` for tau = 1.

    No std scaling. Pair with loss.name: reinforce."""
    p = ADVANTAGES.resolve_params("reinforce_baseline", cfg.params, "advantage.params")
    if p["baseline"] == "mean":
        b = rewards.mean(dim=1, keepdim=True)
    else:  # logavgexp
        tau = float(p["tau"])
        g = rewards.shape[1]
        b = tau * (
            torch.logsumexp(rewards / tau, dim=1, keepdim=True) - torch.log(torch.tensor(float(g)))
        )
    adv = float(p["scale"]) * (rewards - b - float(p["delta"]))
    return adv, {"baseline": float(b.mean())}


def tempsamp_shape(r: torch.Tensor, threshold: float, alpha: float, plateau: float):
    """TempSamp-R1's non-linear reward shaping (Li et al. 2025, arXiv:2509.18056; the
    authors' transform_rewards), for rewards in [0, 1] (a temporal IoU):

        f(r) = tau + plateau * log(r - tau + 1)                          r >= tau
        f(r) = tau - (exp(alpha (tau - r)) - 1) / (exp(alpha) - 1)       r <  tau

    continuous at tau; above it a near-flat plateau (tau = 0.8: f(1) = 0.8018), below it an
    exponential ramp (f(0) = 0.0868 at tau 0.8, alpha 1)."""
    hi = threshold + plateau * torch.log((r - threshold).clamp(min=0) + 1.0)
    lo = threshold - torch.expm1(alpha * (threshold - r)) / math.expm1(alpha)
    return torch.where(r >= threshold, hi, lo)


@ADVANTAGES.register("tempsamp", params=P.TempsampParams)
def tempsamp_advantage(rewards: torch.Tensor, cfg: AdvantageCfg):
    """TempSamp-R1's soft advantage: GRPO's group advantage (``cfg.std`` / ``scale`` / ``eps``
    as for grpo) of the shaped rewards :func:`tempsamp_shape` (threshold, alpha, plateau).
    The shaping is monotone, so it changes the advantages only where a group's rewards take
    more than two values: on 0/1 rewards it is affine and the group-normalised advantage is
    grpo's up to eps. Logs the shaped mean and the share of rewards on the plateau."""
    p = ADVANTAGES.resolve_params("tempsamp", cfg.params, "advantage.params")
    shaped = tempsamp_shape(rewards, float(p["threshold"]), float(p["alpha"]), float(p["plateau"]))
    logs = {
        "shaped_mean": float(shaped.mean()),
        "frac_plateau": float((rewards >= float(p["threshold"])).float().mean()),
    }
    return grpo_advantage(shaped, cfg), logs


@ADVANTAGES.register("gtpo", params=P.GtpoParams, needs={"entropy"})
def gtpo_advantage(rewards: torch.Tensor, cfg: AdvantageCfg, ctx=None):
    """GTPO (Simoni et al. 2025, arXiv:2508.03772) entropy filter on top of the GRPO advantage:
    with H_i the mean token entropy of completion i under the sampling policy, completions with
    H_i > h_max get A = 0 (filtered), the others A_i - gamma * H_i."""
    p = ADVANTAGES.resolve_params("gtpo", cfg.params, "advantage.params")
    adv = grpo_advantage(rewards, cfg)
    if ctx is None:
        raise UserError("advantage gtpo needs the group context (per-token entropies)")
    ent = ctx.entropies()
    m = ctx.completion_mask.to(ent.dtype)
    h = ((ent * m).sum(-1) / m.sum(-1).clamp(min=1)).view_as(adv)
    out = torch.where(h > float(p["h_max"]), torch.zeros_like(adv), adv - float(p["gamma"]) * h)
    return out, {
        "filtered_frac": float((h > float(p["h_max"])).float().mean()),
        "seq_entropy": float(h.mean()),
    }


@ADVANTAGES.register("seagent", params=P.SeagentAdvParams)
def seagent_advantage(rewards: torch.Tensor, cfg: AdvantageCfg, ctx=None):
    """SEAgent (Sun et al. 2025, arXiv:2508.04700): GRPO on the successful trajectories only.
    A_i = (r_i - mean_g) / (std_g + eps) (the grpo estimator with cfg's std / scale) where the
    judge's reward r_i >= ``success``, else 0: failed trajectories get no policy-gradient
    signal here; the regulariser ``seagent_ai`` (adversarial imitation) handles them."""
    p = ADVANTAGES.resolve_params("seagent", cfg.params, "advantage.params")
    adv = grpo_advantage(rewards, cfg)
    ok = rewards >= float(p["success"])
    out = torch.where(ok, adv, torch.zeros_like(adv))
    return out, {"success_rows": float(ok.float().mean())}


@ADVANTAGES.register("rank_grpo", params=P.RankGrpoParams)
def rank_grpo_advantage(rewards: torch.Tensor, cfg: AdvantageCfg, ctx=None):
    """Rank-GRPO (Zhu et al. 2025, ConvRec-R1, github.com/yaochenzhu/Rank-GRPO) rank-level
    advantages for ranked-list completions: per rank k of a list of K, a reward r_ik
    (``individual``: the gain g_ik of the entry at rank k; ``log_decay``: sum_{j >= k} g_ij
    d_j with d_j = 1 / log2(j + 2), no credit from earlier ranks), divided by the user's ideal
    DCG, normalised across the group at the same rank, A_ik = (r_ik - mean_g r_k) /
    (std_g r_k + eps) (``scale: none``: not divided), and given to every token of entry k
    (its separator included); tokens past the K-th entry and the EOS token get 0. Returns
    [groups, G, C] per-token advantages. The task must rank (``rank_gains``, e.g. rec_rank);
    ``rewards`` (the sequence reward) is not used."""
    p = ADVANTAGES.resolve_params("rank_grpo", cfg.params, "advantage.params")
    task = getattr(ctx, "task", None)
    if ctx is None or not hasattr(task, "rank_gains"):
        raise UserError(
            "advantage rank_grpo needs a task with ranked-list answers (task.name: rec_rank, "
            f"e.g. profile tiny_rec); task {getattr(task, 'name', None)!r} has none"
        )
    if ctx.tokenizer is None or ctx.completion_ids is None:
        raise UserError("advantage rank_grpo needs the completions' token ids and tokenizer")
    gains = torch.tensor(
        [task.rank_gains(t, pb) for t, pb in zip(ctx.texts, ctx.problems)], dtype=torch.float32
    )  # [N, K]
    K = gains.shape[1]
    disc = torch.tensor([1.0 / math.log2(j + 2) for j in range(K)])
    idcg = torch.tensor([task.idcg(pb) for pb in ctx.problems]).clamp(min=1e-8).unsqueeze(-1)
    if p["reward"] == "individual":
        r = gains / idcg
    else:  # log_decay: reward-to-go of the discounted gains
        r = (gains * disc).flip(-1).cumsum(-1).flip(-1) / idcg
    g, G = rewards.shape
    r = r.view(g, G, K)
    adv = r - r.mean(dim=1, keepdim=True)
    if cfg.scale == "group":
        adv = adv / (_std(r, 1, cfg.std == "unbiased") + cfg.eps)
    elif cfg.scale == "batch":
        raise UserError(
            "advantage rank_grpo normalises per rank within the group: scale group / none"
        )
    seg = item_segments(ctx.completion_ids, ctx.completion_mask, ctx.tokenizer, task.sep)
    flat = adv.reshape(g * G, K)
    tok = flat.gather(1, seg.clamp(min=0, max=K - 1))
    tok = torch.where((seg >= 0) & (seg < K), tok, torch.zeros_like(tok))
    return tok.view(g, G, -1), {
        "rank_reward_first": float(r[..., 0].mean()),
        "rank_reward_last": float(r[..., -1].mean()),
    }


SEED_SCALES = {
    "linear": lambda x: 1.0 - x,
    "exp": lambda x: torch.exp(-x),
    "inverse": lambda x: 1.0 / (1.0 + x),
}


def semantic_entropy(answers: list, logp: torch.Tensor | None = None) -> float:
    """Entropy of one group's answers clustered by meaning (here: equal normalised final
    answer; completions without an answer form one cluster). Cluster mass p(C_k) is the sum of
    the members' likelihoods exp(logp_i) normalised over the group (``logp`` [G], e.g. mean
    per-token log-probs), or the members' share of the group when ``logp`` is None.
    SE = -sum_k p(C_k) ln p(C_k), in [0, ln G]."""
    g = len(answers)
    w = torch.ones(g) if logp is None else torch.softmax(logp.double(), 0).float()
    mass: dict = {}
    for a, wi in zip(answers, w.tolist()):
        mass[a] = mass.get(a, 0.0) + wi
    total = sum(mass.values())
    return -sum((m / total) * math.log(m / total) for m in mass.values() if m > 0)


@ADVANTAGES.register(
    "seed_grpo",
    params=P.SeedGrpoParams,
    needs=lambda p: {"policy"} if p["mass"] == "likelihood" else set(),
)
def seed_grpo_advantage(
    rewards: torch.Tensor, cfg: AdvantageCfg, ctx=None
) -> tuple[torch.Tensor, dict]:
    """SEED-GRPO (Chen et al. 2025, arXiv:2505.12346): the GRPO advantage scaled down on
    prompts whose sampled answers disagree. Per group, with SE the semantic entropy of the
    group's final answers (:func:`semantic_entropy`) and SE_max = ln G,

        A_i = A_i^grpo * f(alpha * SE / SE_max),  f = "linear" 1 - x | "exp" e^-x | "inverse" 1/(1+x)

    Params (``advantage.params``): alpha (default 0.5), f (default "linear"), mass
    ("likelihood": cluster mass from the sampling policy's length-normalised sequence
    likelihoods, exp(mean log-prob); "count": the members' share). The normalisation
    (std, eps, scale) is the grpo estimator's. Logs ``se_scale`` (mean factor over groups) and
    ``semantic_entropy`` (mean SE / SE_max)."""
    from grpo_core.tasks import normalise_answer

    p = ADVANTAGES.resolve_params("seed_grpo", cfg.params, "advantage.params")
    alpha, fname, mass = float(p["alpha"]), p["f"], p["mass"]
    if ctx is None:
        raise UserError("advantage seed_grpo needs the group context (answers, log-probs)")
    n_groups, g = rewards.shape
    answers = [normalise_answer(a) for a in ctx.answers()]
    lp = ctx.seq_logp_mean() if mass == "likelihood" else None
    se = torch.zeros(n_groups)
    if g > 1:
        for k in range(n_groups):
            sl = slice(k * g, (k + 1) * g)
            se[k] = semantic_entropy(answers[sl], None if lp is None else lp[sl]) / math.log(g)
    scale = SEED_SCALES[fname](alpha * se.clamp(0.0, 1.0))
    adv = grpo_advantage(rewards, cfg) * scale[:, None]
    return adv, {"se_scale": float(scale.mean()), "semantic_entropy": float(se.mean())}


@dataclass
class TurnAdvantages:
    """Per-turn advantages of N episodes: ``values[i, t]`` is the advantage of episode i's turn
    t (0 past its ``n_turns[i]`` turns), rows in the order of the estimator's rewards."""

    values: torch.Tensor  # [N, T]
    n_turns: list[int]  # [N]

    def seq(self) -> torch.Tensor:
        """[N] each episode's mean advantage over its turns (a per-sequence summary, for logs
        and for the parts that read one value per sequence: regularisers, token weights)."""
        n = torch.tensor(self.n_turns, dtype=self.values.dtype).clamp(min=1)
        return self.values.sum(-1) / n

    def to_tokens(self, turn_ids: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """[N, C] the advantage of each completion token: A[i, turn_ids[i, c]] on policy tokens
        (turn id >= 0), 0 elsewhere. Without turn ids (every episode one turn) the turn-0 value
        on the tokens of ``mask``."""
        if turn_ids is None:
            return self.values[:, :1].expand(mask.shape) * mask.to(self.values.dtype)
        t = turn_ids.clamp(min=0)
        if t.numel() and int(t.max()) >= self.values.shape[1]:
            raise ValueError(
                f"turn id {int(t.max())} past the {self.values.shape[1]} per-turn advantages"
            )
        tok = self.values.gather(1, t)
        return torch.where(turn_ids >= 0, tok, torch.zeros_like(tok))

    @staticmethod
    def concat(parts: list[TurnAdvantages]) -> TurnAdvantages:
        width = max(p.values.shape[1] for p in parts)
        vals = [torch.nn.functional.pad(p.values, (0, width - p.values.shape[1])) for p in parts]
        return TurnAdvantages(torch.cat(vals), [n for p in parts for n in p.n_turns])


def _episodes_of(ctx, name: str, n: int):
    """The context's episodes (N rows) for step-level estimator ``name``."""
    ep = None if ctx is None else ctx.episodes
    if ep is None or len(ep.n_turns) != n:
        raise UserError(
            f"advantage {name} needs the episodes of the batch (per-turn rewards and "
            "observations); the trainer attaches them to its group context"
        )
    if len(ep.obs_texts) != n or any(len(o) != k for o, k in zip(ep.obs_texts, ep.n_turns)):
        raise UserError(
            f"advantage {name}: episodes without one observation text per turn "
            "(grpo_core.episodes.run_episodes records them)"
        )
    return ep


def discounted_returns(rewards: list[float | None], gamma: float) -> list[float]:
    """G_t = r_t + gamma * G_{t+1} over one episode's turn rewards (None: 0)."""
    out, run = [0.0] * len(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        run = float(rewards[t] or 0.0) + gamma * run
        out[t] = run
    return out


def _norm(vals: list[float], eps: float, with_std: bool, unbiased: bool) -> tuple[float, float]:
    """(mean, divisor) of a group of values (in float64: equal values give exactly 0 after
    centring, which a divisor of eps would otherwise blow up from rounding noise)."""
    x = torch.tensor(vals, dtype=torch.float64)
    mean = float(x.mean())
    if not with_std:
        return mean, 1.0
    return mean, float(_std(x, None, unbiased)) + eps


@ADVANTAGES.register("gigpo", params=P.GigpoParams)
def gigpo_advantage(rewards: torch.Tensor, cfg: AdvantageCfg, ctx=None):
    """GiGPO (Feng et al. 2025, "Group-in-Group Policy Optimization for LLM Agent Training",
    arXiv:2505.10978; verl-agent's gigpo/core_gigpo.py): A[i, t] = A_E[i] + w * A_S[i, t].

    Episode level (Eq. 3): the episode return R_i (the configured reward) normalised within its
    group: (R_i - mean) / (std + eps) (``mode: mean_std_norm``) or R_i - mean (``mean_norm``),
    the statistics over the group's steps (each episode once per turn, the code's default
    ``episode_stats: steps``) or its trajectories (``trajectories``, the paper's Eq. 3); a
    group of one value has mean 0, std 1 (the code's convention).
    Step level (Eqs. 5-7): the turns of one group whose observation texts are identical (the
    anchor states, exact text as the code's ``to_hashable``) form a step group; each turn's
    discounted return G_t = sum_k gamma^k r_{t+k} of the env's turn rewards is normalised
    within its step group the same way; a step group of one gets mean = its value, std 1
    (A_S = 0). ``cfg.eps`` / ``cfg.std`` as for grpo. Params: gamma (0.95), step_weight w
    (1.0), mode, episode_stats."""
    p = ADVANTAGES.resolve_params("gigpo", cfg.params, "advantage.params")
    n_groups, g = rewards.shape
    ep = _episodes_of(ctx, "gigpo", n_groups * g)
    with_std, unbiased = p["mode"] == "mean_std_norm", cfg.std == "unbiased"
    r = rewards.reshape(-1).tolist()
    width = max(1, max(ep.n_turns))
    a_e = torch.zeros(n_groups * g)
    a_s = torch.zeros(n_groups * g, width)
    sizes: list[int] = []
    for k in range(n_groups):
        rows = list(range(k * g, (k + 1) * g))
        if p["episode_stats"] == "steps":
            vals = [r[i] for i in rows for _ in range(ep.n_turns[i])]
        else:
            vals = [r[i] for i in rows]
        mean, div = (0.0, 1.0) if len(vals) == 1 else _norm(vals, cfg.eps, with_std, unbiased)
        for i in rows:
            a_e[i] = (r[i] - mean) / div
        anchors: dict[str, list[tuple[int, int, float]]] = {}
        for i in rows:
            ret = discounted_returns(ep.turn_rewards[i], float(p["gamma"]))
            for t, obs in enumerate(ep.obs_texts[i]):
                anchors.setdefault(obs, []).append((i, t, ret[t]))
        for members in anchors.values():
            sizes.append(len(members))
            vals = [v for _, _, v in members]
            if len(vals) == 1:
                mean, div = vals[0], 1.0
            else:
                mean, div = _norm(vals, cfg.eps, with_std, unbiased)
            for i, t, v in members:
                a_s[i, t] = (v - mean) / div
    on = torch.zeros(n_groups * g, width)
    for i, n in enumerate(ep.n_turns):
        on[i, :n] = 1.0
    vals = (a_e[:, None] + float(p["step_weight"]) * a_s) * on
    n_steps = max(int(on.sum()), 1)
    logs = {
        "step_group_size": sum(sizes) / max(len(sizes), 1),
        "step_singleton_frac": sum(s == 1 for s in sizes) / max(len(sizes), 1),
        "episode_abs": float(a_e.abs().mean()),
        "step_abs": float((a_s.abs() * on).sum()) / n_steps,
    }
    return TurnAdvantages(vals, list(ep.n_turns)), logs


@ADVANTAGES.register("salt", params=P.SaltParams)
def salt_advantage(rewards: torch.Tensor, cfg: AdvantageCfg, ctx=None):
    """SALT (Li et al. 2025, "SALT: Step-level Advantage Assignment for Long-horizon Agents via
    Trajectory Graph", arXiv:2510.20022): the group's trajectories as one graph whose edges are
    steps (state -> action); identical (state, action) steps of different trajectories merge
    into one edge. Each step's advantage is the mean of the trajectory-level advantages
    (``base``: grpo with ``cfg.std`` / ``cfg.eps`` / ``cfg.scale``, or rloo) of the distinct
    trajectories through its edge: a step every trajectory shares gets the group mean (0 under
    grpo: neutral), a step only one trajectory took keeps that trajectory's advantage. The
    state (``state``): the observation text the action was taken in (``observation``) or the
    whole history before it (``history``: merging only common prefixes). Actions: the turn's
    exact text."""
    p = ADVANTAGES.resolve_params("salt", cfg.params, "advantage.params")
    n_groups, g = rewards.shape
    ep = _episodes_of(ctx, "salt", n_groups * g)
    base = grpo_advantage(rewards, cfg) if p["base"] == "grpo" else rloo_advantage(rewards, cfg)
    a = base.reshape(-1).tolist()
    width = max(1, max(ep.n_turns))
    vals = torch.zeros(n_groups * g, width)
    n_edges, n_steps, n_merged = 0, 0, 0
    for k in range(n_groups):
        edges: dict[tuple, set[int]] = {}
        keys: dict[tuple[int, int], tuple] = {}
        for i in range(k * g, (k + 1) * g):
            hist: tuple = ()
            for t in range(ep.n_turns[i]):
                obs, act = ep.obs_texts[i][t], ep.turn_texts[i][t]
                state = obs if p["state"] == "observation" else (*hist, obs)
                key = (state, act)
                edges.setdefault(key, set()).add(i)
                keys[(i, t)] = key
                hist = (*hist, obs, act)
        n_edges += len(edges)
        for (i, t), key in keys.items():
            through = edges[key]
            vals[i, t] = sum(a[j] for j in through) / len(through)
            n_steps += 1
            n_merged += len(through) > 1
    logs = {
        "edges_per_step": n_edges / max(n_steps, 1),
        "merged_step_frac": n_merged / max(n_steps, 1),
    }
    return TurnAdvantages(vals, list(ep.n_turns)), logs


@ADVANTAGES.register("m_grpo", params=P.MGrpoParams)
def m_grpo_advantage(rewards: torch.Tensor, cfg: AdvantageCfg, ctx=None):
    """M-GRPO (Hong et al. 2025, "Multi-Agent Deep Research: Training Multi-Agent Systems with
    M-GRPO", arXiv:2511.13288): group-relative advantages computed separately for the main
    agent and the sub-agents of a vertical two-role system, sub-agent calls aligned to a fixed
    number of slots per trajectory.

    Roles on one policy: an episode's last turn is the main agent's (the answer), every earlier
    turn a sub-agent call (a tool call / search turn: d_i = n_turns[i] - 1 calls).
    Main: A_M[i] = (R_i - mean_G R) / (std_G R + eps) over the group's G episodes (grpo, with
    ``cfg.std``), on the last turn. Sub: each call's reward is its trajectory's outcome R_i (the
    shared-fate term of the paper's sub-agent reward); trajectory alignment gives every episode
    with d_i >= 1 exactly D slots (``sub_slots``, default the group's max d_i): d_i < D is
    padded with copies of its calls, d_i > D keeps its first D calls (the rest get 0). The
    statistics run over the m * D slots of the m episodes with calls: A_S[i, t] = (R_i - mean_S)
    / (std_S + eps); fewer than two such episodes: A_S = 0 (no group)."""
    p = ADVANTAGES.resolve_params("m_grpo", cfg.params, "advantage.params")
    n_groups, g = rewards.shape
    ep = _episodes_of(ctx, "m_grpo", n_groups * g)
    unbiased = cfg.std == "unbiased"
    main = grpo_advantage(rewards, cfg).reshape(-1).tolist()
    r = rewards.reshape(-1).tolist()
    width = max(1, max(ep.n_turns))
    vals = torch.zeros(n_groups * g, width)
    n_calls, n_kept, n_pad, a_sub = 0, 0, 0, []
    for k in range(n_groups):
        rows = list(range(k * g, (k + 1) * g))
        calls = {i: max(ep.n_turns[i] - 1, 0) for i in rows}
        with_calls = [i for i in rows if calls[i] > 0]
        d = p["sub_slots"] or max([calls[i] for i in rows] + [1])
        if len(with_calls) >= 2:
            mean, div = _norm([r[i] for i in with_calls for _ in range(d)], cfg.eps, True, unbiased)
        for i in rows:
            if ep.n_turns[i] >= 1:
                vals[i, ep.n_turns[i] - 1] = main[i]
            for t in range(min(calls[i], d)):
                a = (r[i] - mean) / div if len(with_calls) >= 2 else 0.0
                vals[i, t] = a
                a_sub.append(abs(a))
            n_calls += calls[i]
            n_kept += min(calls[i], d)
            n_pad += d - calls[i] if 0 < calls[i] < d else 0
    logs = {
        "sub_calls_mean": n_calls / max(n_groups * g, 1),
        "sub_dropped_frac": (n_calls - n_kept) / max(n_calls, 1),
        "sub_padded_slots": n_pad / max(n_groups * g, 1),
        "main_abs": sum(abs(x) for x in main) / max(len(main), 1),
        "sub_abs": sum(a_sub) / max(len(a_sub), 1),
    }
    return TurnAdvantages(vals, list(ep.n_turns)), logs


_RESULT = re.compile(r"^\s*<result>(.*)</result>\s*$", re.DOTALL)


def rational_calls(
    turn_texts: list[str], obs_texts: list[str], answered: bool
) -> list[bool | None]:
    """Per turn of one tool-use episode: None for the answer turn (the last, when the episode
    ended with an answer), else whether the turn was a *rational* component of the system: a
    tool call (grpo_core.tools.parse_action) whose observation is a ``<result>`` (not an
    ``<error>``), not an exact repeat of an earlier call of the episode, and whose result is
    the episode's final answer (compared as answers are: grpo_core.tasks.normalise_answer).
    A bad action, a failed tool, a repeat, a call whose result the answer does not use, and
    any call of an episode that never answered are not rational."""
    from grpo_core.tasks import extract_answer, normalise_answer
    from grpo_core.tools import Call, parse_action

    n = len(turn_texts)
    final = normalise_answer(extract_answer(turn_texts[-1])) if answered and n else None
    out: list[bool | None] = []
    seen: set[tuple[str, str]] = set()
    for t in range(n):
        if answered and t == n - 1:
            out.append(None)
            continue
        call = parse_action(turn_texts[t])
        if not isinstance(call, Call):
            out.append(False)
            continue
        key = (call.tool, call.text)
        repeat = key in seen
        seen.add(key)
        m = _RESULT.match(obs_texts[t + 1]) if t + 1 < len(obs_texts) else None
        used = m is not None and final is not None and normalise_answer(m.group(1).strip()) == final
        out.append(bool(used and not repeat))
    return out


@ADVANTAGES.register("hrpo", params=P.HrpoParams)
def hrpo_advantage(rewards: torch.Tensor, cfg: AdvantageCfg, ctx=None):
    """HRPO, MasHost's optimiser (Yang et al. 2025, "MasHost Builds It All: Autonomous
    Multi-Agent System Directed by Reinforcement Learning", arXiv:2506.08507; no public code:
    this is our reading of its abstract, see reproductions/mashost/README.md), on tool-use
    episodes where each non-answer turn adds a component (a tool agent) to the system and the
    answer turn is its exit: group-relative advantages of whole constructions plus action-wise
    rewards.

    Trajectory level (quality and resource efficiency): R'_i = R_i - lambda * c_i, c_i the
    episode's non-answer turns, normalised within the group as grpo does (``cfg.std`` /
    ``cfg.eps`` / ``cfg.scale``): A_G[i] on every turn of episode i. Action level (component
    rationality): each non-answer turn gets r[i, t] = +a when it is rational
    (:func:`rational_calls`), -a when not; the answer turn 0. A[i, t] = A_G[i] + w * r[i, t]
    (``action_norm: none``), or with r normalised over the group's non-answer turns
    (``group``: mean / std + eps; fewer than two such turns: 0). Params: call_cost lambda
    (0.1), action_reward a (1.0), action_weight w (0.5), action_norm."""
    p = ADVANTAGES.resolve_params("hrpo", cfg.params, "advantage.params")
    n_groups, g = rewards.shape
    ep = _episodes_of(ctx, "hrpo", n_groups * g)
    n = n_groups * g
    if any("tool_calls" not in (inf or {}) for inf in ep.infos):
        raise UserError(
            "advantage hrpo: its components are tool calls, and these episodes report none "
            "(info 'tool_calls'); use env tools (the tiny_tools profile)"
        )
    answered = [r == "done" for r in ep.end_reasons]  # the last turn answered
    costs = [k - int(done) for k, done in zip(ep.n_turns, answered)]
    shaped = rewards - float(p["call_cost"]) * torch.tensor(costs, dtype=rewards.dtype).view_as(
        rewards
    )
    a_g = grpo_advantage(shaped, cfg).reshape(-1)
    width = max(1, max(ep.n_turns))
    vals = torch.zeros(n, width)
    act = torch.zeros(n, width)
    a = float(p["action_reward"])
    n_rational = n_components = 0
    for k in range(n_groups):
        turns: list[tuple[int, int]] = []
        for i in range(k * g, (k + 1) * g):
            vals[i, : ep.n_turns[i]] = a_g[i]
            flags = rational_calls(ep.turn_texts[i], ep.obs_texts[i], answered[i])
            for t, f in enumerate(flags):
                if f is None:
                    continue
                act[i, t] = a if f else -a
                turns.append((i, t))
                n_rational += bool(f)
        n_components += len(turns)
        if p["action_norm"] == "group" and turns:
            if len(turns) < 2:
                mean, div = act[turns[0]].item(), 1.0
            else:
                mean, div = _norm(
                    [float(act[x]) for x in turns], cfg.eps, True, cfg.std == "unbiased"
                )
            for x in turns:
                act[x] = (act[x] - mean) / div
    vals = vals + float(p["action_weight"]) * act
    logs = {
        "components_mean": n_components / max(n, 1),
        "rational_frac": n_rational / max(n_components, 1),
        "traj_abs": float(a_g.abs().mean()),
    }
    return TurnAdvantages(vals, list(ep.n_turns)), logs


def _call(fn, rewards: torch.Tensor, cfg: AdvantageCfg, ctx) -> tuple[torch.Tensor, dict]:
    if "ctx" in inspect.signature(fn).parameters:
        out = fn(rewards, cfg, ctx=ctx)
    else:
        out = fn(rewards, cfg)
    return out if isinstance(out, tuple) else (out, {})


def compute_advantages_logged(
    rewards: torch.Tensor, group_sizes: int | list[int], cfg: AdvantageCfg, ctx=None
) -> tuple[torch.Tensor, dict]:
    """[N] rewards in contiguous groups -> ([N] advantages, {"adv/<key>": value}), or, from a
    step-level estimator, (:class:`TurnAdvantages` [N, max_turns], logs).

    ``group_sizes``: the uniform G, or one size per group (then the estimator runs per group,
    with ``ctx.select`` of that group, and its logs are averaged over groups)."""
    fn = ADVANTAGES.get(cfg.name, "advantage.name")
    if isinstance(group_sizes, int) or len(set(group_sizes)) == 1:
        g = group_sizes if isinstance(group_sizes, int) else group_sizes[0]
        adv, logs = _call(fn, rewards.view(-1, g), cfg, ctx)
        logs = {f"adv/{k}": float(v) for k, v in logs.items()}
        if isinstance(adv, TurnAdvantages):
            return adv, logs
        # [groups, G] -> [N]; per-token advantages [groups, G, C] -> [N, C]
        return adv.reshape(-1, *adv.shape[2:]), logs
    if cfg.scale == "batch" or cfg.name == "reinforce_pp_baseline":
        raise UserError(
            f"advantage {cfg.name!r} (scale {cfg.scale!r}) whitens over the batch and cannot run "
            "per group; with per-prompt rollout allocation use scale: group or none"
        )
    out, acc, s = [], {}, 0
    for g in group_sizes:
        sub = ctx.select(list(range(s, s + g))) if ctx is not None else None
        a, logs = _call(fn, rewards[s : s + g].view(1, g), cfg, sub)
        out.append(a if isinstance(a, TurnAdvantages) else a.reshape(-1, *a.shape[2:]))
        for k, v in logs.items():
            acc.setdefault(k, []).append(float(v))
        s += g
    logs = {f"adv/{k}": sum(v) / len(v) for k, v in acc.items()}
    if isinstance(out[0], TurnAdvantages):
        return TurnAdvantages.concat(out), logs
    return torch.cat(out), logs


def compute_advantages(
    rewards: torch.Tensor, group_size: int | list[int], cfg: AdvantageCfg, ctx=None
) -> torch.Tensor:
    """[N] rewards in contiguous groups -> [N] advantages via the configured estimator."""
    return compute_advantages_logged(rewards, group_size, cfg, ctx)[0]
