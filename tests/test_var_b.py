"""Wave-1 variants of helper var-b: hand-computed tests of each mechanism and a smoke run of each
reproduction (offpolicy_reinforce, llds, gtpo, disco, tw_grpo, reg_grpo, grpo_d, kdrl, aepo)."""

import json
import math
import shutil

import pytest
import torch

from grpo_core.advantages import compute_advantages_logged
from grpo_core.config import AdvantageCfg, LossCfg, SamplerCfg, load_config
from grpo_core.errors import UserError
from grpo_core.losses import (
    POLICY_LOSSES,
    REGULARISERS,
    TOKEN_WEIGHTS,
    LossContext,
    aggregate,
    row_groups,
)
from grpo_core.rewards import GroupContext
from grpo_core.samplers import SAMPLERS
from grpo_core.tasks import Problem

REPROS = [
    "offpolicy_reinforce",
    "llds",
    "gtpo",
    "disco",
    "tw_grpo",
    "reg_grpo",
    "grpo_d",
    "kdrl",
    "aepo",
]


def _gctx(sizes, mask, ids=None, fn=None):
    n = sum(sizes)
    probs = []
    for g, size in enumerate(sizes):
        probs += [Problem(id=f"p{g}", question="q", answer="0")] * size
    c = GroupContext(["x"] * n, probs, ["stop"] * n, [1] * n, sizes, 4, task=None)
    c.completion_mask = mask
    c.completion_ids = ids
    c.logprob_fn = fn
    return c


def _lctx(group_sizes):
    gid, gsz = row_groups(group_sizes)
    return LossContext(group_ids=gid, group_sizes=gsz)


# ------------------------------------------------------------------ shared helpers


def test_row_groups():
    gid, gsz = row_groups([3, 2])
    assert gid.tolist() == [0, 0, 0, 1, 1] and gsz.tolist() == [3, 3, 3, 2, 2]


# ------------------------------------------------------------------ offpolicy_reinforce


def test_reinforce_baseline_mean_asymre_and_opmd_logavgexp():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # mean baseline 0.5: A = r - 0.5
    a, logs = compute_advantages_logged(r, 4, AdvantageCfg(name="reinforce_baseline"))
    assert a.tolist() == [0.5, -0.5, -0.5, 0.5] and logs["adv/baseline"] == 0.5
    # AsymRE: delta = -0.1 lowers the baseline to 0.4: A = r - 0.4
    cfg = AdvantageCfg(name="reinforce_baseline", params={"delta": -0.1})
    a, _ = compute_advantages_logged(r, 4, cfg)
    assert torch.allclose(a, torch.tensor([0.6, -0.4, -0.4, 0.6]))
    # OPMD: b = tau log mean exp(r / tau), tau = 1: log((e + 1 + 1 + e) / 4) = log((e+1)/2)
    # = log(1.859141) = 0.620115; A = (r - b) / (1 + tau) = 0.5 * (r - 0.620115)
    cfg = AdvantageCfg(
        name="reinforce_baseline", params={"baseline": "logavgexp", "tau": 1.0, "scale": 0.5}
    )
    a, logs = compute_advantages_logged(r, 4, cfg)
    b = 0.620115
    assert torch.allclose(
        a, torch.tensor([0.5 * (1 - b), -0.5 * b, -0.5 * b, 0.5 * (1 - b)]), atol=1e-5
    )
    assert logs["adv/baseline"] == pytest.approx(b, abs=1e-5)
    with pytest.raises(
        UserError, match=r"unknown key 'advantage\.params\.tua'; did you mean 'tau'"
    ):
        compute_advantages_logged(r, 4, AdvantageCfg(name="reinforce_baseline", params={"tua": 1}))
    with pytest.raises(
        UserError, match=r"key 'advantage\.params\.baseline': Input should be 'mean' or 'logavgexp'"
    ):
        compute_advantages_logged(
            r, 4, AdvantageCfg(name="reinforce_baseline", params={"baseline": "max"})
        )


def test_reinforce_loss_is_minus_a_logp_without_ratio():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    old = torch.tensor([[-3.0, -3.0], [-3.0, -3.0]])  # stale: no ratio, no clip
    adv = torch.tensor([2.0, -1.0])
    loss, clipped = POLICY_LOSSES.get("reinforce")(logp, old, adv, torch.ones(2, 2), LossCfg())
    # -A * logp: [[2, 4], [-0.5, -0.1]]
    assert torch.allclose(loss, torch.tensor([[2.0, 4.0], [-0.5, -0.1]]))
    assert not clipped.any()
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[-2.0, -2.0], [1.0, 1.0]]))


# ------------------------------------------------------------------ disco


def _disco(params=None):
    return LossCfg(name="disco", params=params or {})


def test_disco_objective_and_gradient_hand_computed():
    # one group of 4: rows 0, 1 positive, rows 2, 3 negative; s = mean token log-prob
    s = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    logp = s[:, None].repeat(1, 2).clone().requires_grad_(True)
    mask = torch.ones(4, 2)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss_tok, clipped = POLICY_LOSSES.get("disco")(
        logp, logp.detach(), adv, mask, _disco(), ctx=_lctx([4])
    )
    # tau = 10: lme = 10 * (logsumexp(-0.05, -0.3) - log 2)
    #   exp(-0.05) = 0.951229, exp(-0.3) = 0.740818, mean 0.846024, log -> -0.167208, x10 -1.67208
    # J = mean_pos s - lme = -1.5 + 1.67208 = 0.17208; rows: pos -s * 4/2, neg lme * 4/2
    lme = -1.672078
    want_rows = torch.tensor([2.0, 4.0, 2 * lme, 2 * lme])
    assert torch.allclose(loss_tok[:, 0], want_rows, atol=1e-5)
    assert not clipped.any()  # KL(pi_old || pi_theta) = 0: the hinge is off
    total = aggregate(loss_tok, mask, "seq_mean_token_mean", 4, 8, 1.0)
    assert float(total.detach()) == pytest.approx(-0.172078, abs=1e-5)  # -J
    total.backward()
    # d(-J)/ds: pos -1/2 each; neg softmax(s/tau) = 0.951229 / 1.692047 = 0.562176, 0.437824;
    # each s is the mean of 2 tokens: per-token gradient / 2
    want = torch.tensor([-0.25, -0.25, 0.281088, 0.218912])  # 0.562177 / 2, 0.437823 / 2
    assert torch.allclose(logp.grad, want[:, None].expand(4, 2), atol=1e-5)


def test_disco_kl_hinge_one_sided_groups_and_split_groups():
    logp = torch.tensor([[-1.0, -1.0], [-2.0, -2.0]])
    mask = torch.ones(2, 2)
    adv = torch.tensor([1.0, -1.0])
    fn = POLICY_LOSSES.get("disco")
    # old log-probs 0.1 above: log rho = -0.1; KL k3 = e^-0.1 + 0.1 - 1 = 0.0048374;
    # hinge 1000/2 * (0.0048374 - 1e-4)^2 = 500 * 0.0047374^2 = 0.0112216 on every row
    base, _ = fn(logp, logp, adv, mask, _disco(), ctx=_lctx([2]))
    hinged, clipped = fn(logp, logp + 0.1, adv, mask, _disco(), ctx=_lctx([2]))
    assert torch.allclose(hinged - base, torch.full((2, 2), 0.0112216), atol=1e-6)
    assert clipped.all()
    # k1: KL = 0.1; 500 * 0.0999^2 = 4.990005
    k1, _ = fn(logp, logp + 0.1, adv, mask, _disco({"kl": "k1"}), ctx=_lctx([2]))
    assert torch.allclose(k1 - base, torch.full((2, 2), 4.990005), atol=1e-4)
    # a group with positives only gives no loss
    only_pos, _ = fn(logp, logp, torch.tensor([1.0, 1.0]), mask, _disco(), ctx=_lctx([2]))
    assert torch.equal(only_pos, torch.zeros(2, 2))
    # 2 rows of a group of 4 in this micro-batch: an error naming the fix
    ctx = LossContext(group_ids=torch.tensor([0, 0]), group_sizes=torch.tensor([4, 4]))
    with pytest.raises(UserError, match="whole in one micro-batch"):
        fn(logp, logp, adv, mask, _disco(), ctx=ctx)
    with pytest.raises(UserError, match=r"unknown key 'loss\.params\.taus'; did you mean 'tau'"):
        fn(logp, logp, adv, mask, _disco({"taus": 1}), ctx=_lctx([2]))


# ------------------------------------------------------------------ reg_grpo


def test_reg_grpo_regression_hand_computed():
    # rho = [0.2, 0, -0.1] (constant per token), A = [1, 0, -1]
    rho = torch.tensor([0.2, 0.0, -0.1])
    old = torch.zeros(3, 2)
    logp = rho[:, None].repeat(1, 2)
    adv = torch.tensor([1.0, 0.0, -1.0])
    fn = POLICY_LOSSES.get("reg_grpo")
    loss, _ = fn(logp, old, adv, torch.ones(3, 2), LossCfg(name="reg_grpo"), ctx=_lctx([3]))
    # mean rho = 1/30; centred [1/6, -1/30, -2/15]; unbiased std = sqrt((1/36 + 1/900 +
    # 4/225) / 2) = sqrt(0.023333) = 0.152753 (> min_std 0.1)
    sd = math.sqrt((1 / 36 + 1 / 900 + 4 / 225) / 2)
    a_hat = [(1 / 6) / sd, (-1 / 30) / sd, (-2 / 15) / sd]  # 1.09109, -0.21822, -0.87287
    want = torch.tensor([(1 - a_hat[0]) ** 2, (0 - a_hat[1]) ** 2, (-1 - a_hat[2]) ** 2])
    assert torch.allclose(loss[:, 0], want, atol=1e-5) and torch.allclose(loss[:, 1], want)


def test_reg_grpo_on_policy_gradient_is_scaled_reinforce():
    # on the first update rho = 0: A_hat = 0, loss = A^2, dL/drho_i = -2 A_i / s with s =
    # min_std = 0.1; seq_mean_token_mean over 3 rows and 2 tokens per row: / 3 / 2
    logp = torch.full((3, 2), -1.0, requires_grad=True)
    adv = torch.tensor([1.0, 0.0, -1.0])
    mask = torch.ones(3, 2)
    loss, _ = POLICY_LOSSES.get("reg_grpo")(
        logp, logp.detach(), adv, mask, LossCfg(name="reg_grpo"), ctx=_lctx([3])
    )
    assert torch.allclose(loss[:, 0], adv**2)
    aggregate(loss, mask, "seq_mean_token_mean", 3, 6, 1.0).backward()
    g = -2 * adv / 0.1 / 3 / 2  # [-3.333, 0, 3.333]
    assert torch.allclose(logp.grad, g[:, None].expand(3, 2), atol=1e-5)


# ------------------------------------------------------------------ llds


def test_llds_penalises_only_fallen_likelihood_of_nonnegative_responses():
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -2.0], [-1.0, -1.0], [-0.5, -0.5]])
    old = torch.tensor([[-0.5, -2.2], [-0.5, -2.2], [-1.0, -1.0], [-1.0, -1.0]])
    adv = torch.tensor([1.0, -1.0, 0.0, 0.5])
    term, logs = REGULARISERS.get("llds")(logp, old, adv, torch.ones(4, 2), LossContext())
    # row 0: A >= 0, summed change (-1 + 0.5) + (-2 + 2.2) = -0.3 < 0 -> max(0, old - logp)
    #        = [0.5, max(0, -0.2) = 0]; row 1: A < 0 -> 0; row 2: no change -> 0; row 3: rose -> 0
    want = torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(term, want)
    assert logs["active_frac"] == pytest.approx(2 / 8) and logs["penalty"] == pytest.approx(0.5 / 8)
    # a fall of float rounding (2e-7 per token, as a pass at another width gives) is no fall
    noise = torch.tensor([[-1.0, -2.0]]) - 2e-7
    term, _ = REGULARISERS.get("llds")(
        noise, torch.tensor([[-1.0, -2.0]]), torch.ones(1), torch.ones(1, 2), LossContext()
    )
    assert torch.equal(term, torch.zeros(1, 2))


def _grpo_step(smoke_cfg, tmp_path, extra):
    """One step of grpo (2 minibatches, so pi_theta != pi_old on the second) on the smoke
    task; its stats and the weights after it."""
    from grpo_core.trainer import Trainer

    cfg = smoke_cfg("grpo", ["train.steps=1", "train.minibatches=2", *extra])
    tr = Trainer(cfg, tmp_path)
    stats = tr.train_step(0)
    return stats, torch.cat([p.detach().flatten() for p in tr.model.parameters()])


def test_llds_at_weight_zero_is_a_probe_that_changes_nothing(smoke_cfg, tmp_path):
    """tiny_search_hot gives grpo llds's term at weight 0 to log the likelihood displacement
    (reg/llds/active_frac): the loss and the update are bitwise those of plain grpo."""
    s0, p0 = _grpo_step(smoke_cfg, tmp_path / "plain", [])
    s1, p1 = _grpo_step(
        smoke_cfg, tmp_path / "probe", ["loss.regularisers=[{name: llds, weight: 0.0}]"]
    )
    assert s0["reward_mean"] == s1["reward_mean"]  # the same rollouts
    assert s0["loss"] == s1["loss"] and torch.equal(p0, p1)
    assert "reg/llds/active_frac" not in s0
    assert 0.0 <= s1["reg/llds/active_frac"] <= 1.0 and s1["reg/llds/penalty"] >= 0.0


# ------------------------------------------------------------------ kdrl


def test_kd_reverse_kl_k2_and_no_kd_on_correct():
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0], [-1.5, -1.0]])
    ctx = LossContext(ref_logp=ref, rewards=torch.tensor([0.0, 1.0]))
    term, logs = REGULARISERS.get("kd_reverse_kl")(
        logp, logp, torch.zeros(2), torch.ones(2, 2), ctx
    )
    # d = log pi_T - log pi_theta = [-0.5, 1.0]; k2 = d^2 / 2 = [0.125, 0.5]; row 1 is correct
    assert torch.allclose(term, torch.tensor([[0.125, 0.5], [0.0, 0.0]]))
    assert logs["kd_frac"] == 0.5
    with pytest.raises(UserError, match="needs teacher log-probs"):
        REGULARISERS.get("kd_reverse_kl")(
            logp, logp, torch.zeros(2), torch.ones(2, 2), LossContext()
        )


# ------------------------------------------------------------------ gtpo


def test_gtpo_conflict_weights_two_short_completions():
    # group 0: row 0 positive "5 6 7 EOS", row 1 negative "5 6 8 9 EOS", row 2 (A = 0) like row 0
    # group 1: row 3 positive "5 5", row 4 negative "5 5 5"
    ids = torch.tensor(
        [[5, 6, 7, 2, 0], [5, 6, 8, 9, 2], [5, 6, 7, 2, 0], [5, 5, 0, 0, 0], [5, 5, 5, 0, 0]]
    )
    mask = (torch.arange(5)[None, :] < torch.tensor([4, 5, 4, 2, 3])[:, None]).long()
    adv = torch.tensor([1.0, -1.0, 0.0, 1.0, -1.0])
    ctx = _gctx([3, 2], mask, ids)
    fn = TOKEN_WEIGHTS.get("gtpo_conflict")
    w, logs = fn(ctx, adv, torch.zeros(5, 5), mask, norm_by_conflicts=False)
    # group 0: leading run "5 6" (positions 0, 1; "7" vs "8" ends it); trailing run aligned at the
    # ends: EOS only ("7" vs "9"). Positive conflicts x2, negative ones x0; row 2 (A = 0) is 1.
    # group 1: row 3's both tokens are in both runs: 2 * 2 = 4; row 4: leading run positions
    # 0, 1 and trailing run positions 2, 1 -> all 0
    want = torch.tensor(
        [
            [2.0, 2.0, 1.0, 2.0, 1.0],
            [0.0, 0.0, 1.0, 1.0, 0.0],
            [1.0, 1.0, 1.0, 1.0, 1.0],
            [4.0, 4.0, 1.0, 1.0, 1.0],
            [0.0, 0.0, 0.0, 1.0, 1.0],
        ]
    )
    assert torch.equal(w, want)
    # conflict tokens: 3 + 3 + 0 + 2 + 3 = 11 of 4 + 5 + 4 + 2 + 3 = 18
    assert logs["conflict_frac"] == pytest.approx(11 / 18)
    # the authors' loss divides each completion by its conflict count: their count is
    # max(forward run, backward run) (row 0: max(2, 1) = 2; row 3: max(2, 2) = 2)
    wn, _ = fn(ctx, adv, torch.zeros(5, 5), mask)
    assert torch.allclose(wn[0, :4], torch.tensor([1.0, 1.0, 0.5, 1.0]))
    assert torch.equal(wn[2], want[2]) and torch.allclose(wn[3, :2], torch.tensor([2.0, 2.0]))
    # count "union": |forward U backward| in forward positions (row 0: {0, 1, 3} = 3)
    wu, _ = fn(ctx, adv, torch.zeros(5, 5), mask, count="union")
    assert torch.allclose(wu[0, :4], torch.tensor([2 / 3, 2 / 3, 1 / 3, 2 / 3]))
    assert torch.allclose(wu[3, :2], torch.tensor([2.0, 2.0]))


def test_gtpo_advantage_entropy_filter():
    ent = torch.tensor([[0.4, 0.6], [0.9, 0.9]])  # mean entropies 0.5 and 0.9
    ctx = _gctx([2], torch.ones(2, 2), fn=lambda which: ent)
    cfg = AdvantageCfg(name="gtpo", params={"h_max": 0.7, "gamma": 0.1})
    a, logs = compute_advantages_logged(torch.tensor([1.0, 0.0]), 2, cfg, ctx)
    # GRPO: (1 - 0.5) / 0.707107 = 0.707107; row 0 kept: 0.707107 - 0.1 * 0.5 = 0.657107;
    # row 1 (H = 0.9 > 0.7) filtered: 0
    assert torch.allclose(a, torch.tensor([0.657107, 0.0]), atol=1e-5)
    assert logs == {"adv/filtered_frac": 0.5, "adv/seq_entropy": pytest.approx(0.7)}


# ------------------------------------------------------------------ tw_grpo


def test_tw_grpo_weights_from_group_distributions():
    # group of 2, V = 2, C = 3; row 1 ends after one token (uniform past its end)
    p0 = [[0.5, 0.5], [0.9, 0.1], [0.7, 0.3]]
    p1 = [[0.5, 0.5], [0.3, 0.7], [0.3, 0.7]]  # positions 1, 2 are masked -> uniform
    dist = torch.tensor([p0, p1]).log()
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    ctx = _gctx([2], mask, fn=lambda which: dist)
    w, logs = TOKEN_WEIGHTS.get("tw_grpo")(ctx, torch.zeros(2), torch.zeros(2, 3), mask, alpha=1.4)

    def k3(x):
        return math.exp(x) - x - 1

    def disp(p):
        # vs the uniform row: d_row0 = (log u - log p) / 2 per v, d_row1 = -d_row0;
        # D = mean over the 2 rows of sum_v k3(d)
        d = [(math.log(0.5) - math.log(a)) / 2 for a in p]
        return (sum(k3(x) for x in d) + sum(k3(-x) for x in d)) / 2

    # position 0: identical rows, D = 0
    # position 1: d_row0 = [-0.293893, 0.804719]: k3 = 0.039249 + 0.431349 = 0.470598;
    #   row 1: k3(0.293893) + k3(-0.804719) = 0.047748 + 0.251933 = 0.299681; D = 0.385139
    # position 2: d_row0 = [-0.168236, 0.255413]: 0.013390 + 0.035581; row 1: 0.014980 +
    #   0.030010; D = 0.046981. Min-max: 0, 1, 0.121984 -> w = 1 + 0.4 * (0, 1, 0.121984)
    d1, d2 = disp([0.9, 0.1]), disp([0.7, 0.3])
    assert d1 == pytest.approx(0.385139, abs=1e-5) and d2 == pytest.approx(0.046981, abs=1e-5)
    row = torch.tensor([1.0, 1.4, 1.048794])
    assert torch.allclose(w, row.expand(2, 3), atol=1e-5)
    assert logs["max"] == pytest.approx(1.4)


def test_group_context_rows_source_computes_only_those_rows():
    calls = []
    full = torch.arange(12.0).view(3, 4)

    def rows_fn(which, rows):
        calls.append((which, rows))
        return full[torch.tensor(rows)]

    ctx = _gctx([1, 2], torch.ones(3, 4), fn=lambda which: full)
    ctx.rows_fn = rows_fn
    assert torch.equal(ctx.logprobs_rows("dist", [1, 2]), full[1:])
    assert calls == [("dist", [1, 2])] and "logp/dist" not in ctx._cache
    sub = ctx.select([1, 2])  # rows of a sub-context map back to the parent's
    assert torch.equal(sub.logprobs_rows("dist", [1]), full[2:])
    assert calls[-1] == ("dist", [2])
    ctx.logprobs("policy")  # cached sources are sliced, not recomputed
    assert torch.equal(ctx.logprobs_rows("policy", [0]), full[:1]) and len(calls) == 2


# ------------------------------------------------------------------ aepo


def test_aepo_sampler_picks_the_temperature_from_the_last_entropy():
    cfg = SamplerCfg(name="aepo", params={"target": 0.85})
    s = SAMPLERS.get("aepo")(100, cfg, 0)
    assert s.extra_round(0) is None  # nothing measured yet
    assert s.update({"entropy": 0.5}) == {"entropy_gap": pytest.approx(-0.35)}
    assert s.extra_round(1)["temperature"] == 1.2  # at or below the target: hotter samples
    s.update({"entropy": 1.0})
    req = s.extra_round(2)
    # above the target: cooler samples, half the REINFORCE rows (min(60, candidates) // 2)
    assert req == {
        "temperature": 0.8,
        "frac": 0.25,
        "min_adv": 0.05,
        "max_rows": 60,
        "keep_frac": 0.5,
        "advantage": 1.0,
    }
    assert s.update({"entropy": float("nan")}) is None and s.entropy == 1.0
    s2 = SAMPLERS.get("aepo")(100, cfg, 0)
    s2.load_state_dict(s.state_dict())
    assert s2.entropy == 1.0
    with pytest.raises(UserError, match=r"unknown key 'sampler\.params\.targte'.*'target'"):
        SAMPLERS.get("aepo")(100, SamplerCfg(name="aepo", params={"targte": 1}), 0)


def test_aepo_extra_round_joins_the_batch_with_a_fixed_advantage(smoke_cfg):
    from grpo_core.trainer import Trainer

    cfg = smoke_cfg("aepo", ["sampler.params={target: 10.0, min_adv: -100.0, frac: 0.5}"])
    t = Trainer(cfg, None)
    batch, _ = t.collect(1)
    n0, sizes0 = len(batch.rollouts), list(batch.group_sizes)
    t.sampler.entropy = 0.3
    logs = t._extra_round(batch, 1)
    # half of the 4 prompts, G = 4 each, every completion kept (min_adv -100): 8 more rows
    assert logs == {"extra/temperature": 1.2, "extra/n_kept": 8.0}
    assert len(batch.rollouts) == n0 + 8 and batch.group_sizes == sizes0 + [4, 4]
    assert batch.indices[n0:] == [batch.indices[0]] * 4 + [batch.indices[4]] * 4
    assert torch.isnan(batch.adv_override[:n0]).all() and (batch.adv_override[n0:] == 1).all()
    # a cap on the rows: only the first 3 kept
    t.sampler.p["max_rows"] = 3
    batch, _ = t.collect(1)
    assert t._extra_round(batch, 1)["extra/n_kept"] == 3.0


# ------------------------------------------------------------------ the log-prob pass


def test_dist_option_of_the_logprob_pass(smoke_cfg):
    from grpo_core.trainer import Trainer, sequence_logprobs

    t = Trainer(smoke_cfg("grpo", ["train.steps=1"]), None)
    batch, _ = t.collect(0)
    ro = batch.rollouts
    args = (t.model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
    with torch.no_grad():
        lp, dist = sequence_logprobs(*args, with_entropy="dist")
        _, ent = sequence_logprobs(*args, with_entropy=True)
    assert dist.shape == (*lp.shape, t.model.config.vocab_size)
    assert torch.allclose(dist.logsumexp(-1), torch.zeros_like(lp), atol=1e-5)
    assert torch.allclose(dist.gather(-1, ro.completion_ids.unsqueeze(-1)).squeeze(-1), lp)
    assert torch.allclose(-(dist.exp() * dist).sum(-1), ent, atol=1e-5)


# ------------------------------------------------------------------ configs and smoke runs


@pytest.mark.parametrize("repro", REPROS)
def test_resolves_under_every_profile(repro):
    for profile in ("smoke", "tiny", "small", "paper"):
        cfg = load_config(repro, profile)
        assert cfg.meta.wave == 1 and cfg.meta.claims
    tiny, grpo = load_config(repro, "tiny"), load_config("grpo", "tiny")
    # the same budget as grpo on tiny
    assert (tiny.train.steps, tiny.rollout.group_size, tiny.rollout.prompts_per_step) == (
        grpo.train.steps,
        grpo.rollout.group_size,
        grpo.rollout.prompts_per_step,
    )
    assert tiny.train.lr == grpo.train.lr


SIGNALS = {
    "offpolicy_reinforce": ["adv/baseline"],
    "llds": ["reg/llds", "reg/llds/active_frac"],
    "gtpo": ["tw/conflict_frac", "adv/filtered_frac"],
    "disco": ["clip_frac"],
    "tw_grpo": ["tw/mean", "tw/max"],
    "reg_grpo": ["loss"],
    "grpo_d": ["kl_beta"],
    "kdrl": ["reg/kd_reverse_kl/kd"],
    "aepo": ["sampler/entropy_gap"],
}


@pytest.mark.parametrize("repro", REPROS)
def test_smoke_run(repro, smoke_cfg, tmp_path):
    from grpo_core.trainer import Trainer

    ov = ["train.steps=2"]
    if repro == "aepo":  # keep every extra completion so the REINFORCE rows are exercised
        ov.append("sampler.params={target: 10.0, min_adv: -100.0}")
    cfg = smoke_cfg(repro, ov)
    Trainer(cfg, tmp_path / repro).train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / repro / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"])
        for k in SIGNALS[repro]:
            assert k in r and math.isfinite(r[k]), (k, r)
    if repro == "grpo_d":  # linear 0.01 -> 0.07 over 2 steps
        assert [r["kl_beta"] for r in rows] == [pytest.approx(0.01), pytest.approx(0.07)]
    if repro == "aepo":
        assert "extra/temperature" not in rows[0] and rows[1]["extra/temperature"] == 1.2
        assert rows[1]["extra/n_kept"] == 4.0
    if repro == "llds":  # a one-sided penalty, on 4 minibatches per batch
        assert cfg.train.minibatches == 4 and all(r["reg/llds"] >= 0.0 for r in rows)


def test_group_losses_refuse_micro_batches_that_split_groups(smoke_cfg):
    from grpo_core.trainer import Trainer

    # smoke: groups of 4; micro-batches of 2 rows split every group
    t = Trainer(smoke_cfg("disco", ["train.steps=1", "train.micro_batch_size=2"]), None)
    with pytest.raises(UserError, match="whole in one micro-batch"):
        t.train_step(0)


def test_kdrl_teacher_is_another_run(smoke_cfg, smoke_results, tmp_path):
    """run:grpo/seed0 resolves to that run's checkpoint and is loaded as the teacher."""
    from grpo_core.trainer import Trainer

    res = tmp_path / "res"
    (res / "smoke").mkdir(parents=True)
    (res / "smoke" / "base").symlink_to(smoke_results / "smoke" / "base")
    teacher = res / "smoke" / "runs" / "grpo" / "seed0" / "checkpoint"
    shutil.copytree(smoke_results / "smoke" / "base" / "model", teacher)
    cfg = smoke_cfg(
        "kdrl", ["model.ref_name_or_path=run:grpo/seed0", f"run.results_dir={res}", "train.steps=1"]
    )
    t = Trainer(cfg, None)
    assert t.ref is not None and t.ref.model is not t.model and t.ref.kind == "frozen"
    stats = t.train_step(0)
    assert math.isfinite(stats["reg/kd_reverse_kl/kd"])
    with pytest.raises(UserError, match="train that run first"):
        Trainer(smoke_cfg("kdrl", ["model.ref_name_or_path=run:grpo/seed5"]), None)
