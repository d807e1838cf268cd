"""Bad component params on components built directly from cfg objects (no load_config): the
component's own params model checks them at run time (Registry.resolve_params), each a one-line
UserError naming the component, the key and what would be right; and the params a component
reads are its model's defaults (grpo_core.params) with the given keys over them."""

import pytest
import torch

from grpo_core import advantages, losses, samplers
from grpo_core.advantages import compute_advantages_logged, gtpo_advantage
from grpo_core.config import AdvantageCfg, LossCfg, SamplerCfg
from grpo_core.errors import UserError
from grpo_core.losses import (
    disco_minibatch_stats,
    gtpo_conflict_weights,
    reg_grpo_loss,
    token_weight_target,
    tw_grpo_weights,
)
from grpo_core.samplers import make_sampler

GE = "Input should be greater than or equal to"
GT = "Input should be greater than"
LE = "Input should be less than or equal to"
R = torch.tensor([1.0, 0.0, 0.0, 1.0])


def _sampler(name: str, params: dict):
    return make_sampler(SamplerCfg(name=name, params=params), 10, 0)


CASES = [
    # unknown keys: the closest valid names
    (
        lambda: compute_advantages_logged(
            R, 4, AdvantageCfg(name="reinforce_baseline", params={"tua": 1})
        ),
        "advantage estimator 'reinforce_baseline': unknown key 'advantage.params.tua'; "
        "did you mean 'tau' or 'delta'?",
    ),
    (
        lambda: disco_minibatch_stats(LossCfg(name="disco", params={"betta": 1.0})),
        "policy loss 'disco': unknown key 'loss.params.betta'; "
        "did you mean 'beta' or 'delta' or 'tau'?",
    ),
    (
        lambda: _sampler("aepo", {"pool": 4}),  # aepo takes no pool
        "sampler 'aepo': unknown key 'sampler.params.pool'; valid names: advantage, frac, "
        "max_rows, min_adv, t_high, t_low, target",
    ),
    (
        lambda: advantages.ADVANTAGES.resolve_params("grpo", {"eps": 1}, "advantage.params"),
        "advantage estimator 'grpo': key 'advantage.params.eps': takes no params",
    ),
    # a Literal param outside its choices
    (
        lambda: compute_advantages_logged(
            R, 4, AdvantageCfg(name="seed_grpo", params={"f": "cubic"})
        ),
        "advantage estimator 'seed_grpo': key 'advantage.params.f': Input should be 'linear', "
        "'exp' or 'inverse' (got 'cubic')",
    ),
    (
        lambda: reg_grpo_loss(
            None, None, None, None, LossCfg(name="reg_grpo", params={"scale": 1})
        ),
        "policy loss 'reg_grpo': key 'loss.params.scale': Input should be 'std' or 'fixed' (got 1)",
    ),
    (
        lambda: token_weight_target(gtpo_conflict_weights, {"count": "both"}),
        "token weighting 'gtpo_conflict': key 'loss.token_weights.params.count': Input should "
        "be 'max' or 'union' (got 'both')",
    ),
    (
        lambda: _sampler("dynamic", {"metric": "rewrd"}),
        "sampler 'dynamic': key 'sampler.params.metric': Input should be 'acc' or 'reward' "
        "(got 'rewrd')",
    ),
    # numbers out of range
    (
        lambda: compute_advantages_logged(
            R,
            4,
            AdvantageCfg(name="reinforce_baseline", params={"baseline": "logavgexp", "tau": 0}),
        ),
        f"advantage estimator 'reinforce_baseline': key 'advantage.params.tau': {GT} 0 (got 0)",
    ),
    (
        # the estimator's own name decides (the cfg here says grpo, the default)
        lambda: gtpo_advantage(R.view(1, 4), AdvantageCfg(params={"h_max": -0.5})),
        f"advantage estimator 'gtpo': key 'advantage.params.h_max': {GE} 0 (got -0.5)",
    ),
    (
        lambda: compute_advantages_logged(
            R, 4, AdvantageCfg(name="seed_grpo", params={"alpha": 1.5})
        ),
        "advantage estimator 'seed_grpo': key 'advantage.params': Value error, alpha 1.5: want "
        "it in [0, 1] with f linear (got {'alpha': 1.5})",
    ),
    (
        lambda: _sampler("aepo", {"frac": 1.5}),
        f"sampler 'aepo': key 'sampler.params.frac': {LE} 1 (got 1.5)",
    ),
    (
        lambda: _sampler("knapsack", {"min_n": 1}),
        f"sampler 'knapsack': key 'sampler.params.min_n': {GE} 2 (got 1)",
    ),
    (
        lambda: _sampler("vade", {"decay_fast": -0.1}),
        f"sampler 'vade': key 'sampler.params.decay_fast': {GE} 0 (got -0.1)",
    ),
    (
        lambda: _sampler("vas", {"update_every": 0}),
        f"sampler 'vas': key 'sampler.params.update_every': {GE} 1 (got 0)",
    ),
    (
        lambda: _sampler("uniform", {"pool": 0}),
        f"sampler 'uniform': key 'sampler.params.pool': {GE} 1 (got 0)",
    ),
    (
        lambda: _sampler("cures", {"pool": True}),  # a bool is no prompt count
        "sampler 'cures': key 'sampler.params.pool': Input should be a valid integer (got True)",
    ),
]


@pytest.mark.parametrize(
    "build,want", CASES, ids=[w.split(":")[0] + str(i) for i, (_, w) in enumerate(CASES)]
)
def test_bad_param_is_one_line_user_error(build, want):
    with pytest.raises(UserError) as e:
        build()
    assert str(e.value) == want
    assert "\n" not in str(e.value)


def test_alpha_above_one_is_fine_with_f_exp():
    # e^-x stays positive: alpha 1.5 is allowed off f linear
    p = advantages.ADVANTAGES.resolve_params("seed_grpo", {"alpha": 1.5, "f": "exp"}, "x")
    assert p == {"alpha": 1.5, "f": "exp", "mass": "likelihood"}


def test_resolved_params_are_the_models_defaults():
    # the numbers of grpo_core/params.py, the given keys over them
    assert _sampler("knapsack", {"max_n": 6}).p == {
        "min_n": 2, "max_n": 6, "success": 1.0, "base_value": "min_n",
    }  # fmt: skip
    assert _sampler("aepo", {}).p == {
        "target": 0.5, "t_high": 1.2, "t_low": 0.8, "frac": 0.25, "min_adv": 0.05,
        "max_rows": 60, "advantage": 1.0,
    }  # fmt: skip
    s = _sampler("vade", {"pool": 4})
    assert s.n == 4 and s.p == {
        "prior_a": 1.0, "prior_b": 1.0, "decay_slow": 0.99, "decay_fast": 0.5, "success": 1.0,
    }  # fmt: skip
    assert _sampler("dynamic", {}).metric == "acc"
    assert losses._disco_params(LossCfg(name="disco", params={"tau": 5})) == {
        "tau": 5.0, "beta": 1000.0, "delta": 1e-4, "score": "logp", "kl": "k3",
        "hinge_on": "minibatch",
    }  # fmt: skip
    assert advantages.ADVANTAGES.resolve_params("reinforce_baseline", None, "x") == {
        "baseline": "mean", "tau": 1.0, "delta": 0.0, "scale": 1.0,
    }  # fmt: skip
    assert losses.POLICY_LOSSES.resolve_params("reg_grpo", {}, "x") == {
        "scale": "std", "min_std": 0.1, "beta": 1.0,
    }  # fmt: skip
    # the token weightings' own defaults of `on`
    assert token_weight_target(tw_grpo_weights, {}) == "policy_kl"
    assert token_weight_target(gtpo_conflict_weights, {}) == "policy"
    assert token_weight_target(gtpo_conflict_weights, {"on": "policy_kl"}) == "policy_kl"
    # every explicit model's dump is what resolve_params gives for no params
    for reg in (advantages.ADVANTAGES, losses.POLICY_LOSSES, samplers.SAMPLERS):
        for name in reg.names():
            want = reg.params_model(name)().model_dump()
            assert reg.resolve_params(name, {}, "x") == want, (reg.kind, name)


def test_defaults_given_or_left_out_give_the_same_advantages():
    # reinforce_baseline, logavgexp with tau = 1 spelled out or left to the default:
    # b = log mean exp r = log((2e + 2) / 4) = 0.620115; A = 1 * (r - b - 0)
    r = R
    a0, _ = compute_advantages_logged(
        r, 4, AdvantageCfg(name="reinforce_baseline", params={"baseline": "logavgexp"})
    )
    full = {"baseline": "logavgexp", "tau": 1.0, "delta": 0.0, "scale": 1.0}
    a1, _ = compute_advantages_logged(r, 4, AdvantageCfg(name="reinforce_baseline", params=full))
    b = 0.620115
    assert torch.allclose(a0, torch.tensor([1 - b, -b, -b, 1 - b]), atol=1e-5)
    assert torch.equal(a0, a1)


def test_task_params_get_their_declared_defaults_and_ranges(tmp_path):
    """make_task fills a task's declared param defaults (guess_number without params used to
    raise KeyError 'lo') and checks ranges; the jsonl task's grader params are declared (a config
    naming them used to be refused at load)."""
    from grpo_core.config import load_config
    from grpo_core.schema import TaskCfg
    from grpo_core.tasks import make_task

    t = make_task(TaskCfg(name="guess_number", n_train=2, n_test=1))
    assert t.params == {"lo": 1, "hi": 9} and t.train()[0].meta == {"lo": 1, "hi": 9}
    with pytest.raises(UserError, match=r"task\.params\.cot_frac.*less than or equal to 1"):
        make_task(TaskCfg(name="arith_cot", params={"cot_frac": 2}))
    f = tmp_path / "m.jsonl"
    f.write_text('{"question": "1+1?", "answer": "2"}\n' * 3)
    cfg = load_config(
        "grpo",
        "smoke",
        [
            "task.name=jsonl",
            f"task.path={f}",
            "task.n_train=2",
            "task.n_test=1",
            "task.params={grader_workers: 1, grader_timeout_s: 2}",
        ],
    )
    assert make_task(cfg.task).params == {"grader_workers": 1, "grader_timeout_s": 2.0}
    with pytest.raises(UserError, match=r"task\.params\.grader_timout_s"):
        load_config("grpo", "smoke", ["task.name=jsonl", "task.params={grader_timout_s: 2}"])
