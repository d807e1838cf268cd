"""Agent reproductions arpo (replay buffer of successes into all-failed groups, task selection,
stored behaviour log-probs as the replayed rows' old log-probs) and flow_grpo (the outcome
broadcast to every turn, group-normalised over the group's turns): hand-computed tensors
(numbers worked out in the comments) and smoke trainings on a shrunken tiny_tools."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import pytest
import torch
from test_episodes import scripted_rollouts

from grpo_core.advantages import TurnAdvantages, compute_advantages_logged
from grpo_core.config import load_config
from grpo_core.episodes import Episodes
from grpo_core.rewards import GroupContext
from grpo_core.rollout import RolloutEngine, Rollouts
from grpo_core.samplers import ArpoSampler, arpo_failed_groups
from grpo_core.schema import AdvantageCfg, SamplerCfg

TOL = 1e-5


# ------------------------------------------------------------------ arpo: by hand


def test_arpo_failed_groups_rule():
    # population std < 0.05 and mean < 0.2 (the authors' apply_replay):
    # [0,0,0,0]: std 0, mean 0 -> failed; [0,0,0,1]: mean .25 -> not;
    # [.1,.1,.1,.1]: std 0, mean .1 -> failed; [1,1,1,1]: mean 1 -> not;
    # [0,0,0,.15]: mean .0375, std = sqrt(3 * .0375^2 + .1125^2) / 2 = .065 -> not
    groups = [torch.tensor(x) for x in ([0.0] * 4, [0, 0, 0, 1.0], [0.1] * 4, [1.0] * 4)]
    groups.append(torch.tensor([0, 0, 0, 0.15]))
    assert arpo_failed_groups(groups, 0.05, 0.2) == [True, False, True, False, False]


def _sampler(**params) -> ArpoSampler:
    return ArpoSampler(10, SamplerCfg(name="arpo", params=params), seed=0)


def test_arpo_buffer_fifo_draw_and_state():
    s = _sampler(buffer_size=2)
    assert s.draw(3, 1) == []  # no success of task 3 yet
    for k in range(3):
        s.store(3, {"reward": 1.0, "k": k})
    # FIFO of 2: the first entry left
    assert [e["k"] for e in s.buffer[3]] == [1, 2] and s.size() == 2
    assert s.is_success(0.11) and not s.is_success(0.1)  # reward > 0.1
    t = _sampler(buffer_size=2)
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))  # JSON round trip (checkpoint)
    assert t.buffer == s.buffer
    assert t.draw(3, 3) == s.draw(3, 3)  # same rng state: same draws


def test_arpo_task_selection_after_the_first_epoch():
    # pool 4; first visits: tasks 0 and 2 had a success, 1 and 3 none -> later epochs sample
    # only 0 and 2
    s = _sampler(pool=4)
    first = s.next_prompts(4)
    assert sorted(first) == [0, 1, 2, 3]
    rewards = {0: [1.0, 0.0], 1: [0.0, 0.0], 2: [0.0, 1.0], 3: [0.05, 0.0]}
    logs = s.update(
        {
            "indices": [i for i in first for _ in range(2)],
            "rewards": [r for i in first for r in rewards[i]],
            "group_sizes": [2] * 4,
        }
    )
    assert logs["selected_tasks"] == 2.0
    assert sorted(s.next_prompts(6)) == [0, 0, 0, 2, 2, 2]
    # without selection every task stays
    u = _sampler(pool=4, select=False)
    u.next_prompts(4)
    u.update({"indices": [0, 1, 2, 3], "rewards": [1.0, 0, 0, 0], "group_sizes": [1] * 4})
    assert sorted(u.next_prompts(4)) == [0, 1, 2, 3]


def _ro(n: int, width: int = 3) -> Rollouts:
    """n single-turn rows: prompt [7, 8] (row 0 left-padded), completion of 2 tokens + pad."""
    comp = torch.tensor([[10 + i, 20 + i] + [0] * (width - 2) for i in range(n)])
    cmask = torch.tensor([[1, 1] + [0] * (width - 2)] * n)
    return Rollouts(
        prompt_ids=torch.tensor([[7, 8]] * n),
        prompt_mask=torch.ones(n, 2, dtype=torch.long),
        completion_ids=comp,
        completion_mask=cmask,
        finish_reasons=["stop"] * n,
        texts=[f"t{i}" for i in range(n)],
    )


def _ep(n: int) -> Episodes:
    return Episodes(
        [[0.0]] * n, [1] * n, [{}] * n, [[f"t{i}"] for i in range(n)], ["done"] * n, [], []
    )


def _replay(s: ArpoSampler, rewards: list[float], indices: list[int], lp: torch.Tensor):
    """The trainer's replay round on a batch of two groups of 4, the policy's log-probs ``lp``."""
    import grpo_core.trainer as T

    n = len(rewards)
    batch = T.Batch(_ro(n), [None] * n, torch.tensor(rewards), torch.empty(0), None, None)
    batch.group_sizes, batch.indices, batch.episodes = [4, 4], indices, _ep(n)
    fake = SimpleNamespace(
        cfg=SimpleNamespace(sampler=SimpleNamespace(name="arpo")),
        tok=SimpleNamespace(pad_token_id=0),
        model=None,
        no_grad_passes=lambda ro, needs: {"policy": lp[: len(ro)]},
    )
    logs = T.Trainer._replay_round(fake, batch, 0, s.extra_round(0))
    return batch, logs


def test_arpo_replay_round_by_hand():
    s = _sampler()
    lp = torch.tensor([[-0.5, -0.25, 0.0]] * 8)
    # step 1: group A (task 5) has one success (row 1), group B (task 6) none: nothing to
    # replay (empty buffer); the success is stored with its log-probs [-0.5, -0.25]
    b1, logs = _replay(s, [0, 1, 0, 0, 0, 0, 0, 0], [5] * 4 + [6] * 4, lp)
    assert logs == {"replay_failed_groups": 1.0, "replay_used": 0.0, "buffer_size": 1.0}
    assert b1.off_policy is None and b1.behaviour_logp is None
    (e,) = s.buffer[5]
    assert e["completion_ids"] == [11, 21] and e["logp"] == [-0.5, -0.25] and e["reward"] == 1.0
    # step 2: both groups fail (task 5 all 0; task 6 all .05: std 0, mean .05 < .2); task 5
    # has a buffered success, task 6 none: only group A gets it, in place of its first row
    b2, logs = _replay(s, [0, 0, 0, 0] + [0.05] * 4, [5] * 4 + [6] * 4, lp)
    assert logs == {"replay_failed_groups": 2.0, "replay_used": 1.0, "buffer_size": 1.0}
    assert b2.rewards.tolist() == pytest.approx([1, 0, 0, 0, 0.05, 0.05, 0.05, 0.05])
    assert b2.rollouts.completion_ids[0, :2].tolist() == [11, 21]  # the replayed trajectory
    assert b2.rollouts.completion_ids[1, :2].tolist() == [11, 21]  # row 1 (its own) stays
    assert b2.rollouts.texts == ["t1", "t1", "t2", "t3", "t4", "t5", "t6", "t7"]
    assert b2.off_policy.tolist() == [True] + [False] * 7
    assert b2.episodes.turn_texts[0] == [["t1"]][0]
    # stored behaviour log-probs on the replayed row, NaN (the batch's own) elsewhere
    assert b2.behaviour_logp[0, :2].tolist() == [-0.5, -0.25]
    assert torch.isnan(b2.behaviour_logp[1:]).all()
    # its advantage (grpo, unbiased std): group A [1, 0, 0, 0]: mean .25, std
    # sqrt((.75^2 + 3 * .25^2) / 3) = .5 -> A = [1.5, -.5, -.5, -.5]; group B all equal: 0
    adv = compute_advantages_logged(b2.rewards, [4, 4], AdvantageCfg(name="grpo"))[0]
    want = [1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0]
    assert torch.allclose(adv, torch.tensor(want), atol=TOL)
    # recompute (the authors' code): no behaviour log-probs, the row still replayed
    r = _sampler(importance="recompute")
    _replay(r, [0, 1, 0, 0, 0, 0, 0, 0], [5] * 4 + [6] * 4, lp)
    b3, _ = _replay(r, [0.0] * 8, [5] * 4 + [6] * 4, lp)
    assert b3.behaviour_logp is None and b3.off_policy.tolist() == [True] + [False] * 7


# ------------------------------------------------------------------ flow_grpo: by hand


def _flow_cfg(stats: str = "steps") -> AdvantageCfg:
    cfg = load_config("flow_grpo", "tiny_tools", []).advantage
    return cfg.model_copy(update={"params": {**cfg.params, "episode_stats": stats}})


def _flow(rewards: list[float], turns: list[int], stats: str = "steps") -> TurnAdvantages:
    n = len(rewards)
    ep = Episodes(
        [[None] * (t - 1) + [r] for r, t in zip(rewards, turns)],
        turns,
        [{}] * n,
        [[f"a{i}{t}" for t in range(k)] for i, k in enumerate(turns)],
        ["done"] * n,
        [],
        [[f"o{i}{t}" for t in range(k)] for i, k in enumerate(turns)],
    )
    ctx = GroupContext(
        texts=[""] * n,
        problems=[None] * n,
        finish_reasons=["stop"] * n,
        lengths=[1] * n,
        group_sizes=[n],
        max_new_tokens=4,
        task=None,
        episodes=ep,
    )
    out, _ = compute_advantages_logged(torch.tensor(rewards), n, _flow_cfg(stats), ctx)
    return out


def test_flow_grpo_config_is_the_outcome_broadcast():
    cfg = _flow_cfg()
    assert cfg.name == "gigpo" and cfg.params["step_weight"] == 0.0
    assert cfg.params["episode_stats"] == "steps" and cfg.std == "unbiased"
    full = load_config("flow_grpo", "tiny_tools", [])
    assert full.loss.agg == "token_mean" and full.loss.name == "ppo_clip"


def test_flow_grpo_by_hand_differs_from_grpo_where_turn_counts_count():
    grpo = AdvantageCfg(name="grpo", std="unbiased", eps=1e-6)
    # rewards [1, 0, 0, 1], turns [2, 1, 1, 1]: every turn a sample of the group, so the
    # statistics are over [1, 1, 0, 0, 1]: mean .6, unbiased std sqrt((3 * .4^2 + 2 * .6^2) /
    # 4) = sqrt(.3) = .547723 -> A = .4 / .547723 = .730297 (reward 1), -.6 / .547723 =
    # -1.095445 (reward 0), the same on every turn of the episode
    ta = _flow([1, 0, 0, 1], [2, 1, 1, 1])
    want = [[0.730297, 0.730297], [-1.095445, 0], [-1.095445, 0], [0.730297, 0]]
    assert torch.allclose(ta.values, torch.tensor(want), atol=TOL)
    # grpo over the 4 trajectories: mean .5, std sqrt(4 * .25 / 3) = .57735 -> +-.866025
    g = compute_advantages_logged(torch.tensor([1.0, 0, 0, 1]), 4, grpo)[0]
    assert torch.allclose(g, torch.tensor([0.866025, -0.866025, -0.866025, 0.866025]), atol=TOL)
    # equal turn counts (2 each): same mean, std over 8 samples sqrt(8 * .25 / 7) = .534522
    # -> +-.935414 (verl's unbiased std over turn samples), still not grpo's .866025
    ta2 = _flow([1, 0, 0, 1], [2, 2, 2, 2])
    assert torch.allclose(ta2.values[:, 0], torch.tensor([0.935414, -0.935414] * 2)[[0, 1, 1, 0]])
    # one turn each: exactly grpo
    ta1 = _flow([1, 0, 0, 1], [1, 1, 1, 1])
    assert torch.allclose(ta1.values[:, 0], g, atol=TOL)
    # the paper's Eq. (statistics over trajectories): grpo's value on every turn
    tt = _flow([1, 0, 0, 1], [2, 1, 1, 1], stats="trajectories")
    assert torch.allclose(tt.values[0], torch.tensor([0.866025, 0.866025]), atol=TOL)
    assert torch.allclose(tt.values[1:, 0], g[1:], atol=TOL)
    # onto tokens: every policy token of the trajectory carries its one value, observations 0
    turn_ids = torch.tensor([[0, 0, -1, 1], [0, 0, -1, -1], [0, -1, -1, -1], [0, -1, -1, -1]])
    tok = ta.to_tokens(turn_ids, (turn_ids >= 0).long())
    assert torch.allclose(tok[0], torch.tensor([0.730297, 0.730297, 0, 0.730297]), atol=TOL)


# ------------------------------------------------------------------ smoke trainings


class OracleEngine(RolloutEngine):
    """Answers the tools env's arithmetic problems without a tool: on the first ``right_calls``
    generate calls the first row of every group of ``g`` answers right, every other row (and
    every row later) answers 0 (wrong)."""

    def __init__(self, tokenizer, g: int, right_calls: int = 1):
        self.tok, self.g, self.right_calls, self.calls = tokenizer, g, right_calls, 0

    def generate(self, prompts, params):
        texts = []
        for r, p in enumerate(prompts):
            q = self.tok.decode(p, skip_special_tokens=True)
            a, op, b = re.findall(r"(\d+)\s*([*+])\s*(\d+)", q)[-1]
            right = int(a) * int(b) if op == "*" else int(a) + int(b)
            ok = self.calls < self.right_calls and r % self.g == 0
            texts.append(str(right) if ok else "0")
        self.calls += 1
        return scripted_rollouts(self.tok, prompts, texts)

    def sync_weights(self, model) -> None:
        pass

    def close(self) -> None:
        pass


def _tools_cfg(tmp_path, repro: str, extra=()):
    return load_config(
        repro,
        "tiny_tools",
        [
            f"run.results_dir={tmp_path}",
            "run.threads=1",
            "workflow.seeded_start=false",
            "model.tiny={hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2, "
            "num_kv_heads: 2}",
            "task.n_train=16",
            "task.n_test=4",
            "sft.steps=1",
            "sft.batch_size=8",
            "rollout.group_size=4",
            "rollout.prompts_per_step=2",
            "train.micro_batch_size=8",
            *extra,
        ],
    )


def test_arpo_smoke_training_fills_and_uses_the_buffer(tmp_path):
    """arpo on a shrunken tiny_tools over a pool of the 2 tasks: step 0 one success per group
    (stored), steps 1-2 every episode fails and each group gets its task's stored success;
    the replayed rows' old log-probs in the loss are the stored ones."""
    import grpo_core.trainer as T
    from grpo_core.prepare import prepare

    cfg = _tools_cfg(tmp_path, "arpo", ["train.steps=3", "sampler.params.pool=2"])
    prepare(cfg, threads=1, log=lambda *a: None)
    tr = T.Trainer(cfg, tmp_path / "run")
    tr.engine = OracleEngine(tr.tok, 4)
    seen, olds = [], []
    orig, orig_pg = tr.score, tr.pg_loss

    def spy(batch, step, stats):
        out = orig(batch, step, stats)
        seen.append(batch)
        return out

    def spy_pg(logp, old, adv, mask, lc, ctx=None):
        olds.append((len(seen) - 1, ctx.seq_index.clone(), old.detach().clone()))
        return orig_pg(logp, old, adv, mask, lc, ctx=ctx)

    tr.score, tr.pg_loss = spy, spy_pg
    tr.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["replay_used"] for r in rows] == [0.0, 2.0, 2.0]
    assert [r["buffer_size"] for r in rows] == [2.0, 2.0, 2.0]
    assert [r["replay_failed_groups"] for r in rows] == [0.0, 2.0, 2.0]
    assert [r["accuracy"] for r in rows] == [0.25, 0.0, 0.0]  # on-policy metrics
    # replay: every sequence of the failed groups has a non-zero advantage
    assert rows[1]["frac_nonzero_adv"] == 1.0 and all(math.isfinite(r["loss"]) for r in rows)
    b = seen[1]
    assert b.off_policy.tolist() == [True, False, False, False] * 2
    assert b.rewards.tolist() == [1.0, 0, 0, 0] * 2
    stored = {i: e[0]["logp"] for i, e in tr.sampler.buffer.items()}
    # the loss's old log-probs of step 1: the stored ones on the replayed rows (no extra
    # no-grad pass: the on-policy rows keep the gradient pass's, detached)
    ((_, ix, old),) = [o for o in olds if o[0] == 1]
    assert ix.tolist() == list(range(8)) and b.old_logp is None
    for k in range(2):
        i = 4 * k
        n = len(stored[b.indices[i]])
        assert torch.allclose(old[i, :n], torch.tensor(stored[b.indices[i]]))
    # the policy moved after step 0: the stored log-probs are not the current ones
    cur = tr._logprobs_nograd(tr.model, b.rollouts.select([0]))[0]
    n0 = len(stored[b.indices[0]])
    assert not torch.allclose(cur[:n0], torch.tensor(stored[b.indices[0]]))


def test_flow_grpo_smoke_training_gives_every_turn_the_outcome(tmp_path):
    import grpo_core.trainer as T
    from grpo_core.prepare import prepare

    cfg = _tools_cfg(tmp_path, "flow_grpo", ["train.steps=1"])
    prepare(cfg, threads=1, log=lambda *a: None)
    tr = T.Trainer(cfg, tmp_path / "run")
    seen = []
    orig = tr.score

    def spy(batch, step, stats):
        out = orig(batch, step, stats)
        seen.append(batch)
        return out

    tr.score = spy
    tr.train(progress=False)
    (b,) = seen
    ro = b.rollouts
    mask = ro.policy_mask.bool()
    for i in range(len(ro)):  # one value on every policy token of a trajectory
        v = b.token_advantages[i][mask[i]]
        assert torch.allclose(v, v[0].expand_as(v))
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(row["loss"]) and math.isfinite(row["adv_token_abs_mean"])


def test_arpo_resumes_with_its_buffer(tmp_path):
    """The buffer and the task selection are checkpoint state: 2 steps, an interruption, and a
    resume to 3 give the metrics of 3 uninterrupted steps (step 2 replays step 0's successes)."""
    import grpo_core.trainer as T
    from grpo_core.prepare import prepare
    from grpo_core.trainer import TIMING_FIELDS

    cfg = _tools_cfg(tmp_path, "arpo", ["train.steps=3", "sampler.params.pool=2"])
    prepare(cfg, threads=1, log=lambda *a: None)
    first = T.Trainer(cfg, tmp_path / "r")
    first.engine = OracleEngine(first.tok, 4)
    step_fn = first.train_step

    def interrupted(step):
        out = step_fn(step)
        first._stop = step == 1
        return out

    first.train_step = interrupted
    first.train(progress=False)
    again = T.Trainer(cfg, tmp_path / "r")
    again.engine = OracleEngine(again.tok, 4)
    again.engine.calls = 2  # the engine's calls so far (one per step)
    again.train(progress=False)
    full = T.Trainer(cfg, tmp_path / "f")
    full.engine = OracleEngine(full.tok, 4)
    full.train(progress=False)

    def rows(d):
        lines = (d / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in TIMING_FIELDS} for x in lines]

    a, b = rows(tmp_path / "r"), rows(tmp_path / "f")
    assert a == b and [r["replay_used"] for r in b] == [0.0, 2.0, 2.0]


def test_home_profile_of_the_agent_reproductions():
    from grpo_core.config import home_profiles

    split = home_profiles(["grpo", "dapo", "arpo", "flow_grpo"], "tiny")
    assert split == {"tiny": ["grpo", "dapo"], "tiny_tools": ["grpo", "arpo", "flow_grpo"]}
    assert home_profiles(["grpo", "arpo"], "tiny_tools") == {"tiny_tools": ["grpo", "arpo"]}


@pytest.mark.slow
def test_the_snakefile_runs_arpo_and_flow_grpo_in_tiny_tools(tmp_path):
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
    cmd += [str(tmp_path), "--config", "reproductions=[grpo,arpo,flow_grpo]", "seeds=[0]"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for name in ("arpo", "flow_grpo", "grpo"):
        assert f"results/tiny_tools/runs/{name}/seed0/train.done" in out
    assert "results/tiny/runs/arpo" not in out and "results/tiny/runs/flow_grpo" not in out
