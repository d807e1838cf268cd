"""ReST-RL (reproductions/rest_rl): the reward-std group filter (ReST-GRPO), the VM-MCTS tree
(UCT selection, expansion, backup, answer choice) on a toy tree with a fake value function, the
value targets and head, and a smoke training + value model + VM-MCTS evaluation."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from evals import vm_mcts as V
from grpo_core.samplers import FILTERS
from grpo_core.schema import VmMctsCfg

# ------------------------------------------------------------------ the filter


def test_reward_std_filter_hand_computed():
    # population std (ddof 0), threshold .05:
    # [1,0,0,0]: mean .25, var (.5625 + 3 * .0625) / 4 = .1875, std .433 -> kept
    # [.5,.5,.5,.5]: std 0 -> dropped
    # [.5,.5,.5,.6]: mean .525, var (3 * .000625 + .005625) / 4 = .001875, std .0433 -> dropped
    #   (nonzero_std would keep it: its rewards differ)
    # [.4,.5,.5,.6]: mean .5, var (.01 + .01) / 4 = .005, std .0707 -> kept
    # [0, .1]: std .05 exactly -> kept (the authors drop std < .05)
    groups = [
        torch.tensor([1.0, 0, 0, 0]),
        torch.tensor([0.5, 0.5, 0.5, 0.5]),
        torch.tensor([0.5, 0.5, 0.5, 0.6]),
        torch.tensor([0.4, 0.5, 0.5, 0.6]),
        torch.tensor([0.0, 0.1]),
    ]
    fn = FILTERS.get("reward_std")
    assert fn(groups, None, threshold=0.05).tolist() == [True, False, False, True, True]
    assert FILTERS.get("nonzero_std")(groups, None, metric="reward").tolist() == [
        True,
        False,
        True,
        True,
        True,
    ]
    # threshold .1: only the first ([.4 .5 .5 .6] has .0707)
    assert fn(groups, None, threshold=0.1).tolist() == [True, False, False, False, False]
    # metric acc reads the task's accuracy instead: acc [1,1,0,0] std .5 kept, [1,1,1,1] dropped
    acc = [torch.tensor([1.0, 1, 0, 0]), torch.tensor([1.0, 1, 1, 1])]
    assert fn(groups[:2], acc, threshold=0.05, metric="acc").tolist() == [True, False]


def test_rest_rl_config_uses_the_filter():
    from grpo_core.config import load_config
    from grpo_core.samplers import make_sampler

    cfg = load_config("rest_rl", "tiny")
    s = make_sampler(cfg.sampler, 10, 0)
    # the tiny task's 0/1 reward: a group with one success has std sqrt(1/8 * 7/8) = .331
    keep = s.keep([torch.tensor([1.0] + [0.0] * 7), torch.zeros(8)], acc=None)
    assert keep.tolist() == [True, False]
    assert cfg.eval.vm_mcts.c == 0.1 and cfg.eval.vm_mcts.iterations == 15


# ------------------------------------------------------------------ the tree


def _fake_values(table):
    def fn(states):
        return [table[tuple(s)] for s in states]

    return fn


def _cut(seq):
    return V.step_cut(seq, "tokens", 2, None)


def test_step_cut_tokens_and_lines():
    assert _cut([1, 2, 3]) == ([1, 2], False)
    assert _cut([1, 2]) == ([1, 2], True)  # one step or less: terminal
    assert _cut([4]) == ([4], True)

    class CharTok:  # token i is chr(i)
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids)

    nl = V.NewlineTest(CharTok())
    a, b, n = ord("a"), ord("b"), ord("\n")
    # "a\nb": the first line is the action; "a\n " (only blank after): terminal; "ab": terminal
    assert V.step_cut([a, n, b], "line", 2, nl) == ([a, n], False)
    assert V.step_cut([a, n, ord(" ")], "line", 2, nl) == ([a, n, ord(" ")], True)
    assert V.step_cut([a, b], "line", 2, nl) == ([a, b], True)
    assert V.step_boundaries([a, n, b, n, a], "line", 2, nl) == [2, 4, 5]
    assert V.step_boundaries([1, 2, 3, 4, 5], "tokens", 2, None) == [2, 4, 5]


def test_uct_expand_backup_select_hand_computed():
    # values of states (children) and of whole continuations (candidates)
    table = {
        (1, 2): 0.6,
        (4,): 0.2,
        (5, 6): 0.4,
        (1, 2, 3): 0.9,
        (1, 2, 9): 0.1,
        (5, 6, 7): 0.3,
        (1, 2, 9, 9): 0.5,
    }
    vf = _fake_values(table)
    root = V.Node(())
    # expand the root with 4 samples; (1,2) twice: its child gets n = 2, total 1.2
    n, s = V.expand(root, [[1, 2, 3], [1, 2, 9], [4], [5, 6, 7]], _cut, vf, num_decision=2)
    c12, c4, c56 = root.children[(1, 2)], root.children[(4,)], root.children[(5, 6)]
    assert (c12.n, c12.total, c12.V) == (2, pytest.approx(1.2), pytest.approx(0.6))
    assert c4.terminal and not c12.terminal
    # 3 children > num_decision 2: the lowest value (4,) .2 is hidden
    assert [c.visible for c in (c12, c4, c56)] == [True, False, True]
    # back up the children's sums (hidden ones too): n = 2 + 1 + 1 = 4, s = 1.2 + .2 + .4 = 1.8
    assert (n, s) == (4, pytest.approx(1.8))
    V.backup(root, n, s)
    assert (root.n, root.V) == (4, pytest.approx(0.45))
    # UCT, c = .1, eps = .1, ln 4 = 1.386294:
    # (1,2): .6 + .1 sqrt(2.386294 / 2.1) = .706599; (5,6): .4 + .1 sqrt(2.386294 / 1.1) = .547287
    assert V.uct(c12, 0.1, 0.1) == pytest.approx(0.706599, abs=1e-6)
    assert V.uct(c56, 0.1, 0.1) == pytest.approx(0.547287, abs=1e-6)
    rng = random.Random(0)
    assert V.select(root, 0.1, 0.1, rng) is c12
    # expand (1,2): continuations [3] and [9, 9], both one step: terminal, V .9 and .5
    n, s = V.expand(c12, [[3], [9, 9]], _cut, vf, num_decision=2)
    assert (n, s) == (2, pytest.approx(1.4))
    V.backup(c12, n, s)
    # (1,2): n 2 + 2 = 4, total 1.2 + 1.4 = 2.6, V .65; root: n 6, total 3.2, V .533333
    assert (c12.n, c12.V) == (4, pytest.approx(0.65))
    assert (root.n, root.V) == (6, pytest.approx(3.2 / 6))
    # select again: root -> (1,2) (.65 + .1 sqrt(2.791759 / 4.1) = .732518 vs .559309)
    # -> the terminal (1,2,3) (.9 + .147288 vs .5 + .147288)
    leaf = V.select(root, 0.1, 0.1, rng)
    assert leaf.ids == (1, 2, 3) and leaf.terminal
    # a selected terminal is backed up once more with its value: (1, .9)
    V.backup(leaf, 1, leaf.V)
    assert (leaf.n, leaf.V) == (2, pytest.approx(0.9))
    assert (c12.n, c12.V) == (5, pytest.approx(0.7))
    assert (root.n, root.V) == (7, pytest.approx(4.1 / 7))
    # the answer: the candidate of highest VM score, (1,2,3) .9 (first in preorder on a tie)
    assert V.best_completion(root) == ((1, 2, 3), pytest.approx(0.9))
    assert len(V.all_completions(root)) == 6


def test_search_loop_counts_and_prefers_the_valued_branch():
    # a fake policy: from the root it samples [1, x] or [2, x] continuations; the value of a
    # state is 1 when it starts with 1, else 0; every continuation after a step is terminal
    def sample_fn(todo, it):
        out = []
        for _t, node in todo:
            if node.ids == ():
                out.append([[1, 7, 7], [2, 7, 7], [1, 8, 8]])
            else:
                out.append([[3], [4]])
        return out

    def vf(states):
        return [1.0 if s and s[0] == 1 else 0.0 for s in states]

    cfg = VmMctsCfg(iterations=4, num_sample=3, num_decision=2, c=0.1, eps=0.1)
    roots, stats = [V.Node(())], [V.SearchStats()]
    V.search(roots, sample_fn, _cut, [vf], cfg, random.Random(0), stats)
    root = roots[0]
    # it. 1 expands the root: (1,7) V 1, (1,8) V 1, (2,7) V 0 (hidden: num_decision 2);
    # it. 2 expands one of the tied 1-branches (2 terminal children valued 1); it. 3: the
    # unexpanded sibling has the larger bonus (n 1 vs 3: .1 sqrt((1 + ln 5) / 1.1) = .154 vs
    # .092), so it is expanded too; it. 4: both branches V 1, n 3: a terminal backup
    assert stats[0].gen_calls == 3 and stats[0].samples == 7
    assert stats[0].terminal_backups == 1
    assert not root.children[(2, 7)].visible and not root.children[(2, 7)].expanded
    assert root.children[(1, 7)].expanded and root.children[(1, 8)].expanded
    best = V.best_completion(root)
    assert best[0][0] == 1 and best[1] == 1.0
    # vm calls: root 3 new children + 3 candidates; each 1-branch 2 children + 2 candidates
    assert stats[0].vm_calls == 14
    assert root.n == 3 + 2 + 2 + 1


# ------------------------------------------------------------------ the value model


def test_value_targets_are_means_over_rollouts_through_a_prefix():
    # prompt 0: [1,2,3] score 1, [1,2,4] score 0, [5] score 1; steps of 2 tokens
    # (1,2): (1 + 0) / 2 = .5; whole completions their own score
    rows = [(0, [1, 2, 3], 1.0), (0, [1, 2, 4], 0.0), (0, [5], 1.0), (1, [1, 2, 3], 0.0)]
    t = V.value_targets(rows, "tokens", 2, None)
    assert t == {
        (0, (1, 2)): 0.5,
        (0, (1, 2, 3)): 1.0,
        (0, (1, 2, 4)): 0.0,
        (0, (5,)): 1.0,
        (1, (1, 2)): 0.0,
        (1, (1, 2, 3)): 0.0,
    }


def test_value_head_training_reduces_its_loss_on_a_fixture():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g) * 3 + 1  # unscaled features
    y = torch.sigmoid(x[:, 0] - x[:, 1] / 2)  # a target in [0, 1]
    head, losses = V.fit_value_head(x, y, hidden=16, steps=60, lr=3e-2, seed=0)
    assert losses[-1] < 0.1 * losses[0]
    v = head.value(x)
    assert float(v.min()) >= float(y.min()) and float(v.max()) <= float(y.max())  # clamped
    assert math.isfinite(losses[-1])


# ------------------------------------------------------------------ smoke


SMOKE_REWARDS = json.dumps([{"name": "correctness"}, {"name": "format", "weight": 0.5}])


def test_hidden_features_do_not_depend_on_the_batch(smoke_results):
    """Right padding: a state's feature is the same alone and next to a longer state."""
    from grpo_core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(smoke_results / "smoke" / "base" / "model"))
    model.eval()
    a, b = [5, 6, 7], [5, 6, 7, 8, 9, 10]
    both = V.hidden_features(model, [a, b], tok.pad_token_id)
    alone = V.hidden_features(model, [a], tok.pad_token_id)
    assert both.shape == (2, model.config.hidden_size)
    assert torch.allclose(both[0], alone[0], atol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_smoke_training_value_model_and_mcts_eval(smoke_cfg, tmp_path):
    """3 steps of rest_rl on the smoke model (format reward: groups with a spread pass the
    filter), then its value model and an evaluation with both avg@k and mcts_acc."""
    from evals.evaluate import evaluate
    from grpo_core.trainer import Trainer

    small = [
        "eval.vm_mcts.vm_prompts=16",
        "eval.vm_mcts.vm_k=2",
        "eval.vm_mcts.vm_steps=30",
        "eval.vm_mcts.iterations=3",
        "eval.vm_mcts.num_sample=3",
        "eval.n_prompts=4",
    ]
    cfg = smoke_cfg("rest_rl", ["train.steps=3", f"rewards={SMOKE_REWARDS}", *small])
    run = tmp_path / "run"
    Trainer(cfg, run).train(progress=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and any(r["grad_norm"] > 0 for r in rows)
    meta = V.train_value_model(cfg, run / "checkpoint", log=lambda *a: None)
    assert (run / "value_model" / "value_head.safetensors").exists()
    assert meta["loss_last"] < meta["loss_first"] and meta["n_states"] > 0
    res = evaluate(cfg, run / "checkpoint", tmp_path / "eval")
    m = res["metrics"]
    assert "avg@2" in m and 0 <= m["mcts_acc"] <= 1 and 0 <= m["vm_bon_acc"] <= 1
    # at most 3 expansions of 3 samples per problem; at least the root's
    assert 3 <= m["mcts_samples"] <= 9 and 1 <= m["mcts_gen_calls"] <= 3
    lines = (tmp_path / "eval" / "arith_mix.mcts.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert res["vm_mcts"]["protocol"]["iterations"] == 3


def test_tiny_code_profile_rest_rl_with_line_steps(tmp_path):
    """rest_rl in its home profile tiny_code at smoke size: pass-rate reward through the filter,
    the value model on line-prefixes of code, a VM-MCTS evaluation graded in the sandbox."""
    from evals.evaluate import evaluate
    from grpo_core.config import load_config
    from grpo_core.prepare import prepare
    from grpo_core.trainer import Trainer

    small = [
        f"run.results_dir={tmp_path}",
        "run.threads=1",
        "workflow.seeded_start=false",
        'model.tiny={"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, '
        '"num_heads": 2, "num_kv_heads": 2, "tokenizer": "bpe", "vocab_size": 320}',
        "task.n_train=64",
        "task.n_test=4",
        "sft.steps=20",
        "sft.batch_size=32",
        "rollout.group_size=4",
        "rollout.prompts_per_step=4",
        "train.steps=2",
        "eval.k=2",
        "eval.vm_mcts.vm_prompts=8",
        "eval.vm_mcts.vm_k=2",
        "eval.vm_mcts.vm_steps=20",
        "eval.vm_mcts.iterations=2",
        "eval.vm_mcts.num_sample=2",
    ]
    cfg = load_config("rest_rl", "tiny_code", small)
    assert cfg.task.params["score"] == "fraction" and cfg.eval.vm_mcts.split == "line"
    assert "rest_rl" in load_config(None, "tiny_code").workflow.reproductions
    prepare(load_config(None, "tiny_code", small), threads=1, log=lambda *a: None)
    run = tmp_path / "run"
    Trainer(cfg, run).train(progress=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    meta = V.train_value_model(cfg, run / "checkpoint", log=lambda *a: None)
    assert meta["split"] == "line" and meta["n_states"] > 0
    res = evaluate(cfg, run / "checkpoint", tmp_path / "eval")
    m = res["metrics"]
    assert {"avg@2", "mcts_acc", "vm_bon_acc", "hack_rate"} <= set(m)
    assert 2 <= m["mcts_samples"] <= 4


def test_snakefile_runs_rest_rl_in_tiny_code_with_its_value_model(tmp_path):
    """From the default profile rest_rl runs in its home tiny_code (beside tiny_code's grpo),
    and its evaluation waits for its value model (rule value_model); grpo's does not."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "GRPO_ROOT": str(root),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", str(root / "Snakefile"), "-d"]
    cmd += [str(tmp_path), "--config", "reproductions=[grpo,rest_rl]", "seeds=[0]"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "results/tiny_code/runs/rest_rl/seed0/value_model/value_model.json" in out
    assert "results/tiny_code/runs/grpo/seed0/train.done" in out
    assert "results/tiny/runs/rest_rl" not in out
    assert "runs/grpo/seed0/value_model" not in out
