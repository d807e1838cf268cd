"""Wave-1 samplers that choose prompts or split the rollout budget from per-prompt statistics:
knapsack (Knapsack RL), cures (CurES), vade (VADE), vas (MMR1), xrpo (XRPO allocator) and the
xrpo_novelty advantage. Hand-computed values, exact resume of every sampler's state, and a smoke
run of each reproduction."""

import copy
import io
import json
import math

import pytest
import torch

from grpo_core.advantages import ADVANTAGES, compute_advantages_logged
from grpo_core.config import AdvantageCfg, SamplerCfg, load_config, validate_profile_overrides
from grpo_core.errors import UserError
from grpo_core.rewards import GroupContext
from grpo_core.samplers import (
    CuresSampler,
    KnapsackSampler,
    VadeSampler,
    VasSampler,
    XrpoSampler,
    ci_halfwidth,
    distinct_n,
    knapsack_allocate,
    knapsack_value,
    make_sampler,
    neyman_allocate,
    t_quantile,
    weighted_without_replacement,
)
from grpo_core.tasks import Problem

REPROS = ["knapsack_rl", "cures", "vade", "mmr1_vas", "xrpo"]


def _stats(groups, step=0):
    """update() stats from [(train index, [rewards], [texts] or None)]."""
    idx, r, sizes, texts = [], [], [], []
    for i, rew, tx in groups:
        idx += [i] * len(rew)
        r += list(rew)
        sizes.append(len(rew))
        texts += tx or ["0"] * len(rew)
    return {
        "indices": idx,
        "problems": [None] * len(r),
        "rewards": torch.tensor(r),
        "group_sizes": sizes,
        "texts": texts,
        "step": step,
    }


# ------------------------------------------------------------------ Knapsack RL


def test_knapsack_value_hand_computed():
    # (1 - p^N - (1-p)^N) * p * (1-p)^2
    assert knapsack_value(2, 0.5) == pytest.approx(0.5 * 0.125)  # (1-.25-.25) * .5 * .25
    assert knapsack_value(3, 0.1) == pytest.approx(0.27 * 0.081)  # (1-.001-.729) * .1 * .81
    assert knapsack_value(8, 0.0) == 0.0 and knapsack_value(8, 1.0) == 0.0


def test_knapsack_allocation_three_prompts():
    # G = 4, three prompts: budget 12; each starts at min_n = 2, 6 extra to place, at most 6 each.
    # Marginal values of one more rollout, (V(N+1) - V(N)):
    #   p = .5 (factor .5*.25 = .125): N 2->3 .03125, 3->4 .015625, 4->5 .0078125, 5->6 .0039
    #   p = .1 (factor .1*.81 = .081): 2->3 .00729, 3->4 .00611, 4->5 .00532, 5->6 .00478
    #   p = .9 (factor .9*.01 = .009): at most .0008
    # The marginals decrease, so the knapsack optimum takes the 6 largest: .03125 .015625
    # .0078125 (p=.5 to N=5), .00729 .00611 .00532 (p=.1 to N=5); p=.9 keeps 2.
    assert knapsack_allocate([0.5, 0.9, 0.1], 4, min_n=2, max_n=6) == [5, 2, 5]
    # unseen -> G = 4; success rate 0 and 1 -> min_n = 2; p = .5 -> 2 + 4 (its cap 6); the
    # 2 rollouts nobody can take go to the zero-success prompt (4 in all); sum 16 = 4 x 4
    assert knapsack_allocate([None, 0.0, 1.0, 0.5], 4, min_n=2, max_n=6) == [4, 4, 2, 6]
    # nothing seen: uniform, as grpo
    assert knapsack_allocate([None] * 3, 8) == [8, 8, 8]


def test_knapsack_sampler_uses_the_last_visit():
    s = KnapsackSampler(10, SamplerCfg(name="knapsack", params={"max_n": 6}), seed=0)
    # prompt 3: 2 of 4 correct (p = .5); prompt 7: 4 of 4 (p = 1)
    s.update(_stats([(3, [1, 0, 1, 0], None), (7, [1, 1, 1, 1], None)]))
    assert s.rate == {3: 0.5, 7: 1.0}
    # [unseen 1, p=.5, p=1]: 4 + 2 + 2 = 8, 4 left: p=.5 takes 4 (to its cap 6)
    assert s.group_sizes([1, 3, 7], 4) == [4, 6, 2]
    with pytest.raises(UserError, match="min_n"):
        KnapsackSampler(10, SamplerCfg(name="knapsack", params={"min_n": 1}), seed=0)
    with pytest.raises(UserError, match="did you mean 'max_n'"):
        KnapsackSampler(10, SamplerCfg(name="knapsack", params={"max_m": 4}), seed=0)


# ------------------------------------------------------------------ CurES


def test_cures_posterior_weights_and_allocation():
    s = CuresSampler(3, SamplerCfg(name="cures"), seed=0)
    # prompt 1: 7 of 8 correct -> p = (7+1)/(8+2) = .8; prompt 2: 8 of 8 -> 9/10 = .9;
    # prompt 0 unseen -> 1/2
    s.update(_stats([(1, [1] * 7 + [0], None), (2, [1] * 8, None)]))
    assert [s.posterior(i) for i in range(3)] == pytest.approx([0.5, 0.8, 0.9])
    # sampling weights p(1-p): .25, .16, .09
    assert s.weights() == pytest.approx([0.25, 0.16, 0.09])
    # rollouts ~ sqrt(p(1-p)) = .5 .4 .3 (sum 1.2); budget 3 x 4 = 12 -> 5, 4, 3
    assert s.group_sizes([0, 1, 2], 4) == [5, 4, 3]
    # largest remainders: x = 10 * (.5, .3, .2) = 5, 3, 2 -> clipped to min 3: 5, 3, 3 (11) -> the
    # largest x - n among those above min_n loses one: prompt 0 -> 4, 3, 3
    assert neyman_allocate([0.5, 0.3, 0.2], 10, min_n=3, max_n=8) == [4, 3, 3]
    assert neyman_allocate([0.0, 0.0], 8, 2, 8) == [4, 4]  # no information: uniform


def test_weighted_without_replacement_follows_the_weights():
    import random

    rng = random.Random(0)
    counts = [0, 0, 0]
    for _ in range(3000):
        counts[weighted_without_replacement(rng, [0.0, 1.0, 3.0], 1)[0]] += 1
    # P(pick 2) = 3/4, P(pick 1) = 1/4, a zero weight only when nothing else is left
    assert counts[0] == 0 and abs(counts[2] / 3000 - 0.75) < 0.03
    assert sorted(weighted_without_replacement(rng, [0.0, 1.0, 3.0], 3)) == [0, 1, 2]
    assert weighted_without_replacement(rng, [1.0, 1.0, 1.0], 2, exclude={0, 1}) == [2]


# ------------------------------------------------------------------ VADE


def test_vade_two_scale_decay_hand_computed():
    cfg = SamplerCfg(name="vade", params={"decay_slow": 0.5, "decay_fast": 0.5})
    s = VadeSampler(2, cfg, seed=0)
    # step 1: everything decays toward the prior (1, 1) -- nothing to decay yet; prompt 0's old
    # evidence (none) x .5, plus 3 successes and 1 failure: a = 1 + 3 = 4, b = 1 + 1 = 2
    s.update(_stats([(0, [1, 1, 1, 0], None)]))
    assert (s.a.tolist(), s.b.tolist()) == ([4.0, 1.0], [2.0, 1.0])
    # step 2, slow decay: a = 1 + .5 (4 - 1) = 2.5, b = 1 + .5 (2 - 1) = 1.5; prompt 0 visited
    # again (0 of 2): fast decay then counts: a = 1 + .5 (2.5 - 1) = 1.75, b = 1 + .5 (.5) + 2 = 3.25
    s.update(_stats([(0, [0, 0], None)], step=1))
    assert s.a.tolist() == pytest.approx([1.75, 1.0]) and s.b.tolist() == pytest.approx([3.25, 1.0])


def test_vade_thompson_picks_the_most_informative():
    s = VadeSampler(3, SamplerCfg(name="vade"), seed=0)
    # prompt 0 always solved, 2 never, 1 half the time: gain theta(1-theta) ~ .001, .25, .001
    s.a[:] = [1000.0, 500.0, 1.0]
    s.b[:] = [1.0, 500.0, 1000.0]
    assert all(s.next_prompts(1) == [1] for _ in range(20))
    assert sorted(s.next_prompts(3)) == [0, 1, 2]


# ------------------------------------------------------------------ MMR1 VAS


def test_vas_distinct_n_and_vps_hand_computed():
    assert distinct_n(["12", "13"], 2) == 1.0  # bigrams 12, 13: 2 distinct of 2
    assert distinct_n(["12", "12"], 2) == 0.5  # 1 distinct of 2
    assert distinct_n(["1", "2"], 2) == 0.0  # no bigram
    cfg = SamplerCfg(name="vas", params={"w_var": 1.0, "w_div": 1.0, "update_every": 1})
    s = VasSampler(3, cfg, seed=0)
    # prompt 0: p = .5, texts 12 12 -> div .5: VPS = .25 + .5 = .75
    # prompt 1: p = 1, texts 12 13 -> div 1: VPS = 0 + 1 = 1; prompt 2 unseen: mean .875
    # min-max over (.75, 1, .875): 0, 1, .5 (refreshed after the step: update_every 1)
    s.update(_stats([(0, [1, 0], ["12", "12"]), (1, [1, 1], ["12", "13"])]))
    assert s.weights == pytest.approx([0.0, 1.0, 0.5])
    # mix .5 of 2 prompts: one from the epoch order, one by VPS (never the zero-weight prompt 0
    # while a positive weight is left)
    for _ in range(10):
        got = s.next_prompts(2)
        assert len(set(got)) == 2 and got[1] != 0


def test_vas_refreshes_every_k_steps():
    s = VasSampler(4, SamplerCfg(name="vas", params={"update_every": 2}), seed=0)
    s.update(_stats([(0, [1, 0], None)], step=0))
    assert s.weights is None  # step 0: no refresh yet (every 2 steps)
    s.update(_stats([(1, [1, 1], None)], step=1))
    # p(1-p): prompt 0 .25, prompt 1 0, unseen 2, 3 -> mean .125; min-max -> 1, 0, .5, .5
    assert s.weights == pytest.approx([1.0, 0.0, 0.5, 0.5])


# ------------------------------------------------------------------ XRPO


def test_t_quantile_and_halfwidth():
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)  # tan(pi * .475)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-3)  # .95 / sqrt(2 * .975 * .025)
    assert t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-3)  # table value
    assert t_quantile(0.975, 1000) == pytest.approx(1.9623, abs=1e-3)
    # h = t_{.975, 3} * s / sqrt(4) = 3.1824 * .5 / 2 (the expansion is 0.004 low at df 3)
    assert ci_halfwidth(0.5, 4) == pytest.approx(0.7956, abs=2e-3)


def test_xrpo_allocation_hand_computed():
    cfg = SamplerCfg(name="xrpo", params={"base": 2, "c": 0.0})
    s = XrpoSampler(10, cfg, seed=0)
    s.std = {0: 0.5, 1: 0.25}
    # G = 3: base 2 each, 2 extra. Drops of the half-width at n = 2:
    #   A: .5 (t1/sqrt2 - t2/sqrt3) = .5 (12.706/1.414 - 4.303/1.732) = .5 (8.985 - 2.484) = 3.25
    #   B: .25 (...) = 1.63  -> A first (n = 3). A at n = 3: .5 (2.484 - 3.182/2) = .447 < 1.63
    #   -> B second. Sizes 3, 3.
    assert s.group_sizes([0, 1], 3) == [3, 3]
    # a prompt whose last group was all equal (s = 0) gains nothing: all 4 extra go to the other
    s.std = {0: 0.5, 1: 0.0}
    assert s.group_sizes([0, 1], 4) == [6, 2]
    # the exploration bonus c sqrt(ln(1 + T) / (1 + N_i + n)) prefers the less-sampled prompt
    s = XrpoSampler(10, SamplerCfg(name="xrpo", params={"base": 2, "c": 1.0}), seed=0)
    s.std, s.count, s.total = {0: 0.0, 1: 0.0}, {0: 100, 1: 0}, 100
    assert s.group_sizes([0, 1], 3) == [2, 4]
    s.update(_stats([(5, [1, 0, 0, 0], None)]))
    # unbiased std of (1, 0, 0, 0) = sqrt(.75 / 3) = .5
    assert s.std[5] == pytest.approx(0.5) and s.count[5] == 4 and s.total == 104


def _ctx(logp_rows, n_per_group):
    n = len(logp_rows)
    lp = torch.tensor(logp_rows)
    probs = []
    for g in range(n // n_per_group):
        probs += [Problem(id=f"p{g}", question="q", answer="0")] * n_per_group
    c = GroupContext(["a"] * n, probs, ["stop"] * n, [lp.shape[1]] * n, n_per_group, 4, None)
    c.logprob_fn = lambda which: lp
    c.completion_mask = torch.ones_like(lp, dtype=torch.long)
    return c


def test_xrpo_novelty_advantage_hand_computed():
    # one group, rewards 1 1 0 0: GRPO A = +-.5 / sqrt(1/3) = +-.866025
    # mean token log-probs s = -1, -.2, -.5, -.5 (two tokens each); group mean -.55
    # response 0 (correct, unlikely): lam (1 - exp(-1 + .55)) = 1 - exp(-.45) = .362372,
    #   capped at kappa A = .5 * .866025 = .433013 -> bonus .362372
    # response 1 (correct, likelier than the mean): 1 - exp(.35) < 0 -> 0; wrong ones: unchanged
    ctx = _ctx([[-1.5, -0.5], [-0.2, -0.2], [-0.5, -0.5], [-0.7, -0.3]], 4)
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    cfg = AdvantageCfg(name="xrpo_novelty", eps=0.0, params={"lam": 1.0, "kappa": 0.5})
    a, logs = compute_advantages_logged(r, 4, cfg, ctx)
    base = 0.5 / math.sqrt(1 / 3)
    want = [base + 1 - math.exp(-0.45), base, -base, -base]
    assert torch.allclose(a, torch.tensor(want), atol=1e-5)
    assert logs["adv/novelty_bonus"] == pytest.approx((1 - math.exp(-0.45)) / 2, abs=1e-5)
    # kappa .2: the cap .2 * .866025 = .173205 binds
    cfg = AdvantageCfg(name="xrpo_novelty", eps=0.0, params={"kappa": 0.2})
    a = compute_advantages_logged(r, 4, cfg, ctx)[0]
    assert float(a[0]) == pytest.approx(base * 1.2, abs=1e-5)
    # per-prompt group sizes: called per group with the selected context, same result
    a2 = compute_advantages_logged(r, [4], cfg, ctx)[0]
    assert torch.allclose(a, a2)
    with pytest.raises(
        UserError, match=r"unknown key 'advantage\.params\.lamb'; did you mean 'lam'"
    ):
        ADVANTAGES.get("xrpo_novelty", "x")(r.view(1, 4), AdvantageCfg(params={"lamb": 1}), ctx)


# ------------------------------------------------------------------ exact resume of the state


@pytest.mark.parametrize(
    "name,params",
    [
        ("knapsack", {"max_n": 8}),
        ("cures", {}),
        ("vade", {}),
        ("vas", {"w_div": 1.0, "update_every": 2}),
        ("xrpo", {"base": 2}),
    ],
)
def test_sampler_state_resumes_exactly(name, params):
    """Run 3 fake steps, save (through torch.save, as checkpoints do), load into a fresh sampler
    with another seed: the next steps' prompts, allocations and logs are identical."""

    def step(s, t):
        idx = s.next_prompts(3)
        sizes = s.group_sizes(idx, 4)
        gen = torch.Generator().manual_seed(t)
        groups = [
            (
                i,
                (torch.rand(g, generator=gen) > 0.5).float().tolist(),
                [f"{i}{k}" for k in range(g)],
            )
            for i, g in zip(idx, sizes)
        ]
        return idx, sizes, s.update(_stats(groups, step=t))

    cfg = SamplerCfg(name=name, params={**params, "pool": 6})
    a = make_sampler(cfg, 50, seed=1)
    assert a.n == 6  # the pool: only the first 6 train prompts
    for t in range(3):
        idx, _, _ = step(a, t)
        assert all(i < 6 for i in idx)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make_sampler(cfg, 50, seed=99)
    b.load_state_dict(torch.load(buf, weights_only=False))
    for t in range(3, 7):
        assert step(a, t) == step(b, t)


def test_pool_must_be_positive():
    with pytest.raises(UserError, match="pool"):
        make_sampler(SamplerCfg(name="uniform", params={"pool": 0}), 10, 0)


# ------------------------------------------------------------------ configs and smoke runs


@pytest.mark.parametrize("repro", REPROS)
def test_configs_resolve_and_samplers_build_under_every_profile(repro):
    for profile in ("smoke", "tiny", "small", "paper"):
        cfg = load_config(repro, profile)
        s = make_sampler(cfg.sampler, 1000, 0)
        idx = s.next_prompts(cfg.rollout.prompts_per_step)
        sizes = s.group_sizes(idx, cfg.rollout.group_size)
        assert sum(sizes) == cfg.rollout.prompts_per_step * cfg.rollout.group_size
        # two claims on the tiny task (plus one on the video task, judged under tiny_video)
        assert cfg.meta.wave == 1
        assert len([c for c in cfg.meta.claims if c.benchmark != "video_mc"]) == 2
    validate_profile_overrides(repro)


SMOKE_KEYS = {
    "knapsack_rl": ["sampler/n_max", "sampler/frac_effective"],
    "cures": ["sampler/n_max", "sampler/posterior_mean"],
    "vade": ["sampler/gain_mean", "sampler/frac_seen"],
    "mmr1_vas": ["sampler/frac_scored"],
    "xrpo": ["sampler/n_max", "adv/novelty_bonus", "adv/frac_boosted"],
}


@pytest.mark.parametrize("repro", REPROS)
def test_smoke_run(repro, smoke_cfg, tmp_path):
    """3 steps of the smoke profile on a pool of 4 prompts (one step's worth: from step 1 on every
    prompt has statistics, so the allocation / selection is exercised)."""
    from grpo_core.trainer import Trainer

    cfg = load_config(repro, "smoke")
    params = {**cfg.sampler.params, "pool": 4}
    ov = ["train.steps=3", f"sampler.params={json.dumps(params)}"]
    if repro == "mmr1_vas":
        ov.append("sampler.params.update_every=1")
    t = Trainer(smoke_cfg(repro, ov), tmp_path / "run")
    t.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert 0.0 <= r["frac_nonzero_adv"] <= 1.0
        assert r["n_train_seqs"] == 16  # the budget is prompts x G whatever the allocation
    for k in SMOKE_KEYS[repro]:
        vals = [r[k] for r in rows if k in r]
        assert vals and all(math.isfinite(v) for v in vals), k
    assert (tmp_path / "run" / "checkpoint" / "training_state" / "state.json").exists()


def test_update_stats_carry_texts_and_vas_diversity(smoke_cfg):
    from grpo_core.trainer import Trainer

    ov = [
        "train.steps=1",
        "sampler={name: vas, params: {w_div: 1.0, update_every: 1, pool: 4}}",
    ]
    t = Trainer(smoke_cfg("grpo", ov), None)
    seen = {}
    orig = t.sampler.update

    def spy(stats):
        seen.update(stats)
        return orig(stats)

    t.sampler.update = spy
    stats = t.train_step(0)
    assert len(seen["texts"]) == len(seen["rewards"]) == sum(seen["group_sizes"])
    assert all(isinstance(x, str) for x in seen["texts"])
    # diversity per prompt from its group's texts, exactly as distinct_n computes it
    s, want = 0, {}
    for g in seen["group_sizes"]:
        want[seen["indices"][s]] = distinct_n(seen["texts"][s : s + g], 2)
        s += g
    assert t.sampler.div == pytest.approx(want)
    assert t.sampler.weights is not None and "frac_nonzero_adv" in stats


def test_trainer_resume_with_a_history_sampler(smoke_cfg, tmp_path, monkeypatch):
    """A VADE run (numpy RNG and Beta state in the checkpoint) interrupted after step 2 and
    resumed equals an uninterrupted 4-step run."""
    from grpo_core.trainer import TIMING_FIELDS, Trainer

    ov = ["train.steps=4", "train.checkpoint_every=2", "sampler.params.pool=8"]
    cfg = smoke_cfg("vade", ov)
    Trainer(cfg, tmp_path / "full").train(progress=False)
    t = Trainer(cfg, tmp_path / "crash")
    orig = t.train_step

    def crashing(step):
        if step == 3:
            raise RuntimeError("simulated crash")
        return orig(step)

    monkeypatch.setattr(t, "train_step", crashing)
    with pytest.raises(RuntimeError):
        t.train(progress=False)
    monkeypatch.undo()
    t2 = Trainer(cfg, tmp_path / "crash")
    assert t2.step == 2
    t2.train(progress=False)

    def rows(d):
        lines = (d / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in TIMING_FIELDS} for x in lines]

    assert rows(tmp_path / "crash") == rows(tmp_path / "full")
    assert (
        copy.deepcopy(t2.sampler.a).tolist() == Trainer(cfg, tmp_path / "full").sampler.a.tolist()
    )


def _gather_worker(rank, path, out):
    import torch.distributed as tdist

    from grpo_core import distributed as dist

    tdist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    try:
        got = dist.gather_list([f"r{rank}a", f"r{rank}b"][: rank + 1])
        torch.save(got, f"{out}.{rank}")
    finally:
        tdist.destroy_process_group()


def test_gather_list_concatenates_ranks_in_order(tmp_path):
    """Texts for the sampler: rank 0 holds 1 text, rank 1 holds 2; both get all 3 in rank order
    (two gloo processes)."""
    import torch.multiprocessing as mp

    from grpo_core import distributed as dist

    assert dist.gather_list(("a", "b")) == ["a", "b"]  # one process: a copy as a list
    mp.spawn(_gather_worker, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    for r in range(2):
        assert torch.load(tmp_path / f"out.{r}") == ["r0a", "r1a", "r1b"]
