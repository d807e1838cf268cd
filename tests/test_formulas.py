"""Every mechanism's math on small hand-computed tensors."""

import math

import pytest
import torch

from grpo_core.advantages import assert_groups, compute_advantages
from grpo_core.config import AdvantageCfg, KLCfg, LossCfg
from grpo_core.losses import aggregate, entropy_from_logits, gspo_loss, kl_estimate, ppo_clip_loss


def close(t: torch.Tensor, expected, atol: float) -> bool:
    return torch.allclose(
        t.detach().float(), torch.tensor(expected, dtype=torch.float32), atol=atol
    )


R = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0])  # two groups of 4


# ------------------------------------------------------------------ advantages


def test_grpo_unbiased_group_std():
    # group 1: mean 0.5, unbiased std sqrt(1/3) = 0.57735; group 2: mean 0.75, std 0.5
    a = compute_advantages(R, 4, AdvantageCfg(name="grpo", eps=0.0))
    s1 = math.sqrt(1 / 3)
    exp = [0.5 / s1, -0.5 / s1, -0.5 / s1, 0.5 / s1, 0.5, 0.5, -1.5, 0.5]
    assert a.tolist() == pytest.approx(exp, abs=1e-6)


def test_grpo_biased_std_and_eps():
    # biased std of group 1 = 0.5, of group 2 = sqrt(0.1875) = 0.43301
    a = compute_advantages(R, 4, AdvantageCfg(name="grpo", std="biased", eps=0.1))
    assert a[0].item() == pytest.approx(0.5 / 0.6)
    assert a[6].item() == pytest.approx(-0.75 / (math.sqrt(0.1875) + 0.1))


def test_grpo_batch_and_no_scaling():
    # batch: 8 rewards, five ones: mean 0.625, unbiased var = (5*0.375^2 + 3*0.625^2)/7 = 0.26786
    a = compute_advantages(R, 4, AdvantageCfg(name="grpo", scale="batch", eps=0.0))
    assert a[0].item() == pytest.approx(0.5 / math.sqrt(0.267857142857), rel=1e-5)
    a = compute_advantages(R, 4, AdvantageCfg(name="grpo", scale="none"))
    assert a.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.25, 0.25, -0.75, 0.25])


def test_zero_variance_group_gives_zero_advantage():
    a = compute_advantages(torch.ones(4), 4, AdvantageCfg(name="grpo", eps=1e-6))
    assert a.abs().max().item() == 0.0


def test_group_of_one_is_zero_not_nan():
    a = compute_advantages(torch.tensor([1.0, 0.0]), 1, AdvantageCfg(name="grpo"))
    assert a.tolist() == [0.0, 0.0]
    a = compute_advantages(torch.tensor([1.0, 0.0]), 1, AdvantageCfg(name="rloo"))
    assert a.tolist() == [0.0, 0.0]


def test_dr_grpo_and_rloo():
    a = compute_advantages(R, 4, AdvantageCfg(name="dr_grpo"))
    assert a.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.25, 0.25, -0.75, 0.25])
    # RLOO: r_i - mean of the other three; group 1, i=0: 1 - 1/3
    a = compute_advantages(R, 4, AdvantageCfg(name="rloo"))
    assert a.tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3, 1 / 3, 1 / 3, -1, 1 / 3])


def test_reinforce_pp_baseline():
    # a = r - group mean = [.5,-.5,-.5,.5,.25,.25,-.75,.25]; mean 0; unbiased std over 8
    a0 = torch.tensor([0.5, -0.5, -0.5, 0.5, 0.25, 0.25, -0.75, 0.25])
    std = math.sqrt((a0**2).sum().item() / 7)
    a = compute_advantages(R, 4, AdvantageCfg(name="reinforce_pp_baseline", eps=0.0))
    assert a.tolist() == pytest.approx((a0 / std).tolist(), rel=1e-5)


def test_shuffled_group_is_caught():
    assert_groups(["a", "a", "b", "b"], 2)
    with pytest.raises(AssertionError, match="group 0 mixes prompts"):
        assert_groups(["a", "b", "a", "b"], 2)
    with pytest.raises(AssertionError, match="do not split"):
        assert_groups(["a", "a", "a"], 2)


# ------------------------------------------------------------------ policy losses

MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def _lp(ratios):
    """old_logp = 0, logp = log ratio: exp(logp - old) = ratio."""
    return torch.log(torch.tensor(ratios)), torch.zeros(len(ratios), len(ratios[0]))


def test_ppo_clip_symmetric():
    logp, old = _lp([[1.5, 0.5, 1.0], [1.1, 0.7, 1.0]])
    adv = torch.tensor([1.0, -1.0])
    loss, clipped = ppo_clip_loss(logp, old, adv, MASK, LossCfg(eps_low=0.2, eps_high=0.2))
    # A>0: -min(r, clip(r)) -> r=1.5: -1.2 (clipped), r=0.5: -0.5, r=1: -1
    # A<0: max(r, clip(r))  -> r=1.1: 1.1, r=0.7: 0.8 (clipped), r=1: 1
    assert close(loss, [[-1.2, -0.5, -1.0], [1.1, 0.8, 1.0]], 1e-6)
    assert clipped.tolist() == [[True, False, False], [False, True, False]]


def test_clip_higher():
    logp, old = _lp([[1.25, 1.3, 0.7]])
    adv = torch.tensor([2.0])
    loss, _ = ppo_clip_loss(logp, old, adv, MASK[:1], LossCfg(eps_low=0.2, eps_high=0.28))
    # upper bound 1.28: 1.25 passes, 1.3 -> 1.28; lower bound irrelevant for A>0 (min picks 0.7)
    assert close(loss, [[-2.5, -2.56, -1.4]], 1e-6)


def test_dual_clip():
    logp, old = _lp([[5.0, 2.0, 0.5]])
    adv = torch.tensor([-1.0])
    loss, clipped = ppo_clip_loss(logp, old, adv, MASK[:1], LossCfg(dual_clip=3.0))
    # A<0: max(-A r, -A clip(r)) = r for r>1.2, capped at c*|A| = 3
    assert close(loss, [[3.0, 2.0, 0.8]], 1e-6)
    assert clipped.tolist() == [[True, False, True]]
    # dual clip never touches A > 0
    loss_pos, _ = ppo_clip_loss(logp, old, torch.tensor([1.0]), MASK[:1], LossCfg(dual_clip=3.0))
    assert close(loss_pos, [[-1.2, -1.2, -0.5]], 1e-6)


def test_gspo_sequence_ratio_and_shared_clip_decision():
    # sequence 0 token log-ratios 0.1, 0.2, 0.3 -> s = exp(0.2); sequence 1: 0.0, 0.002 (masked 3rd)
    logp = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.002, 9.0]], requires_grad=True)
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, 1.0])
    cfg = LossCfg(eps_low=3e-4, eps_high=4e-4)
    loss, clipped = gspo_loss(logp, old, adv, MASK, cfg)
    s0, s1 = math.exp(0.2), math.exp(0.001)
    assert loss[0].tolist() == pytest.approx([-(1 + 4e-4)] * 3, abs=1e-6)  # s0 clipped
    assert loss[1, :2].tolist() == pytest.approx([-(1 + 4e-4)] * 2, abs=1e-6)
    assert clipped[0].all() and clipped[1, :2].all()  # one decision per sequence
    assert s0 > 1 + 4e-4 and s1 > 1 + 4e-4
    # unclipped regime: gradient of token t is -A * s_i / (number of tokens via aggregation)
    logp2 = torch.tensor([[1e-4, 2e-4, 0.0]], requires_grad=True)
    loss2, clipped2 = gspo_loss(logp2, torch.zeros(1, 3), torch.tensor([1.0]), MASK[:1], cfg)
    assert not clipped2.any()
    s = math.exp(1e-4)
    assert close(loss2, [[-s] * 3], 1e-6)
    loss2.sum().backward()
    assert close(logp2.grad, [[-s] * 3], 1e-6)


def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-1.5, -1.0])  # d = ref - logp = [-0.5, 1.0]
    assert kl_estimate(logp, ref, KLCfg(estimator="k1")).tolist() == pytest.approx([0.5, -1.0])
    assert kl_estimate(logp, ref, KLCfg(estimator="k2")).tolist() == pytest.approx([0.125, 0.5])
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    assert kl_estimate(logp, ref, KLCfg(estimator="k3")).tolist() == pytest.approx(k3)
    # clamp (verl's low_var_kl): d = 30 -> exp(20) - 21 before the value clamp, then 10
    big = kl_estimate(torch.tensor([-31.0]), torch.tensor([-1.0]), KLCfg(estimator="k3"))
    assert big.item() == pytest.approx(10.0)


def test_entropy():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    h = entropy_from_logits(logits)
    assert h[0, 0].item() == pytest.approx(math.log(4))
    assert h[0, 1].item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ aggregation

L = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])  # 100 is masked out


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("token_mean", (1 + 2 + 3 + 4 + 5) / 5),
        ("seq_mean_token_mean", (2.0 + 4.5) / 2),
        ("seq_mean_token_sum", (6.0 + 9.0) / 2),
        ("seq_mean_token_sum_norm", (6.0 + 9.0) / (2 * 4)),
    ],
)
def test_aggregation_modes(mode, expected):
    assert aggregate(L, MASK, mode, n_seqs=2, n_tokens=5, norm_constant=4).item() == pytest.approx(
        expected
    )


@pytest.mark.parametrize(
    "mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"]
)
def test_aggregation_splits_into_micro_batches(mode):
    torch.manual_seed(0)
    x = torch.randn(6, 5, requires_grad=True)
    mask = (torch.rand(6, 5) > 0.3).long()
    mask[:, 0] = 1
    n_tok = int(mask.sum())
    full = aggregate(x**2, mask, mode, 6, n_tok, 5.0)
    (g_full,) = torch.autograd.grad(full, x)
    parts = [aggregate(x[i : i + 2] ** 2, mask[i : i + 2], mode, 6, n_tok, 5.0) for i in (0, 2, 4)]
    total = sum(parts)
    (g_parts,) = torch.autograd.grad(total, x)
    assert total.item() == pytest.approx(full.item(), rel=1e-6)
    assert torch.allclose(g_full, g_parts, atol=1e-7)
