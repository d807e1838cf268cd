"""Reward models trained in the workflow (grpo_core.reward_models) and the reproductions that
use them: mo_grpo (multi-head regression RM, heads combined by weights) and rm_ensembles (K
proxy RMs on gold-labelled noisy preferences; mean / worst case / uncertainty-weighted).
Hand-computed combination math, the rule-based objectives, data generation, a training run
that lowers its loss in seconds, save / load, the reward, eval metrics and smoke runs."""

import json
import math
import random
from pathlib import Path

import pytest
import torch

from grpo_core import reward_models as RM
from grpo_core.config import load_config, project_root
from grpo_core.rewards import GroupContext, reward_model_reward
from grpo_core.tasks import Problem, make_task

REPROS = ["mo_grpo", "rm_ensembles"]
SPECS = project_root() / "config" / "reward_models"


def tiny_spec(**kw):
    """A reward model small enough to train in about a second."""
    base = dict(
        kind="regression",
        heads=["correct", "close", "format"],
        n_prompts=40,
        per_prompt=4,
        steps=60,
        batch_size=32,
        lr=3e-3,
        model={"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2},
    )
    return RM.RMSpec.model_validate(base | kw)


def pref_spec(**kw):
    kw = dict(kind="preference", heads=["proxy"], members=3, gold={"correct": 1.0}) | kw
    return tiny_spec(**kw)


@pytest.fixture(scope="module")
def task():
    return make_task(load_config(None, "smoke").task)


# ------------------------------------------------------------------ combination (hand-computed)


def test_head_weights_hand_computed():
    heads = ["correct", "close", "format"]
    # default: equal weights over every head
    assert RM.head_weights(heads, None, None, "w").tolist() == pytest.approx([1 / 3] * 3)
    # heads: equal over the named ones, 0 elsewhere
    assert RM.head_weights(heads, ["close", "format"], None, "w").tolist() == [0, 0.5, 0.5]
    # weights: as given, 0 for a head not named
    assert RM.head_weights(heads, None, {"correct": 0.5, "format": 0.2}, "w").tolist() == (
        pytest.approx([0.5, 0.0, 0.2])
    )
    with pytest.raises(Exception, match="head 'safety' is not one of"):
        RM.head_weights(heads, ["safety"], None, "rewards reward_model")


def test_combine_heads_hand_computed():
    # one member, two completions, heads [a, b] with weights [0.5, 0.3]:
    # row 0: 0.5 * 1 + 0.3 * 2 = 1.1; row 1: 0.5 * (-1) + 0.3 * 4 = 0.7
    v = torch.tensor([[[1.0, 2.0], [-1.0, 4.0]]])  # [K=1, N=2, H=2]
    r, s = RM.combine(v, torch.tensor([0.5, 0.3]), "mean")
    assert r.tolist() == pytest.approx([1.1, 0.7])
    assert s.shape == (1, 2)
    # one member: min / mean - lam * std are the mean (std 0)
    for how in ("min", "mean_minus_std", "mean_minus_var"):
        assert RM.combine(v, torch.tensor([0.5, 0.3]), how, 2.0)[0].tolist() == pytest.approx(
            [1.1, 0.7]
        )


def test_combine_members_hand_computed():
    # K = 3 members, N = 2 completions, one head (weight 1):
    # completion 0: [1, 2, 3] -> mean 2, min 1, population var ((1+0+1)/3) = 2/3, std 0.81650
    # completion 1: [0, 0, 6] -> mean 2, min 0, var ((4+4+16)/3) = 8, std 2.82843
    v = torch.tensor([[[1.0], [0.0]], [[2.0], [0.0]], [[3.0], [6.0]]])
    w = torch.tensor([1.0])
    assert RM.combine(v, w, "mean")[0].tolist() == pytest.approx([2.0, 2.0])
    assert RM.combine(v, w, "min")[0].tolist() == pytest.approx([1.0, 0.0])
    # mean - 0.5 * std: 2 - 0.40825 = 1.59175; 2 - 1.41421 = 0.58579
    assert RM.combine(v, w, "mean_minus_std", 0.5)[0].tolist() == pytest.approx(
        [2 - 0.5 * math.sqrt(2 / 3), 2 - 0.5 * math.sqrt(8)]
    )
    # mean - 0.5 * var: 2 - 1/3 = 1.66667; 2 - 4 = -2
    assert RM.combine(v, w, "mean_minus_var", 0.5)[0].tolist() == pytest.approx([5 / 3, -2.0])
    with pytest.raises(Exception, match="combine 'max'"):
        RM.combine(v, w, "max")


# ------------------------------------------------------------------ objectives and data


class _Task:
    def grade_texts(self, texts, problems):
        from grpo_core.grader import Grade

        return [Grade(float(t.strip() == p.answer), t, "") for t, p in zip(texts, problems)]


def test_objectives_hand_computed():
    p = Problem(id="p", question="45+38", answer="83", meta={"expression": "45+38"})
    texts = ["83", "85", "83=", "", "838383"]
    fin = [True, True, True, True, False]
    v = RM.objective_values(["correct", "close", "format", "brevity"], texts, fin, [p] * 5, _Task())
    # "83": right, close 1/(1+0) = 1, well formed, brevity 2/2 = 1
    # "85": wrong, close 1/(1+2) = 1/3, well formed, brevity 1
    # "83=": wrong (the grader here: exact text), close 1 (extracted 83), not well formed,
    #        brevity 2/3
    # "": no answer: close 0, format 0 (not a number), brevity 1 (nothing extra)
    # "838383" (did not stop): close 1/(1+838300), format 0 (not finished), brevity 2/6
    want = [
        [1, 1, 1, 1],
        [0, 1 / 3, 1, 1],
        [0, 1, 0, 2 / 3],
        [0, 0, 0, 1],
        [0, 1 / (1 + 838300), 0, 1 / 3],
    ]
    assert v.tolist() == [pytest.approx(r) for r in want]
    with pytest.raises(Exception, match="unknown objective 'safety'"):
        RM.objective_values(["safety"], texts, fin, [p] * 5, _Task())


def test_perturbations_and_pairs(task):
    rng = random.Random(0)
    outs = [RM.perturb("83", rng) for _ in range(400)]
    assert ("83", True) in outs and ("838383", False) in outs and ("", True) in outs
    assert any(t in ("84", "82", "81", "85", "80", "86") for t, _ in outs)
    spec = pref_spec(label_noise=0.0)
    d = RM.make_dataset(spec, task, 0)
    d2 = RM.make_dataset(spec, task, 0)  # deterministic in the seed
    assert d["rows"] == d2["rows"] and d["pairs"] == d2["pairs"]
    assert torch.equal(d["values"], d2["values"])
    # noise-free pairs: the first of each pair has the higher gold reward
    g = d["gold"]
    assert d["pairs"]["train"] and all(g[a] > g[b] for a, b in d["pairs"]["train"])
    # with label noise 0.4 about 40% of the training pairs are flipped; held-out ones never
    noisy = RM.make_dataset(pref_spec(label_noise=0.4), task, 0)
    flipped = sum(g[a] < g[b] for a, b in noisy["pairs"]["train"]) / len(noisy["pairs"]["train"])
    assert 0.25 < flipped < 0.55
    assert all(g[a] > g[b] for a, b in noisy["pairs"]["held"])


def test_spec_checks():
    with pytest.raises(Exception, match="no objective"):
        tiny_spec(heads=["safety"])
    with pytest.raises(Exception, match="needs gold"):
        tiny_spec(kind="preference", heads=["proxy"])
    for name in ("mo_heads", "gold_ensemble"):  # the shipped specs load
        assert RM.load_spec(name, SPECS).heads


# ------------------------------------------------------------------ training, files, reward


@pytest.fixture(scope="module")
def trained(tmp_path_factory, task):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("rm")
    mo = RM.train_rm(tiny_spec(), task, 0, d / "mo", name="mo")
    ens = RM.train_rm(pref_spec(), task, 0, d / "ens", name="ens")
    return d, mo, ens


def test_training_lowers_the_loss_and_is_seeded(trained, task):
    d, mo, ens = trained
    for meta in (mo, ens):
        m = meta["metrics"]
        assert m["loss_last"] < 0.8 * m["loss_first"], m
    # the format head is easy (a stray character / no EOS): held-out MSE below the constant's
    assert mo["metrics"]["held_mse_format"] < mo["metrics"]["held_mse_format_const"]
    assert len(ens["metrics"]["held_pair_acc_members"]) == 3
    # the same seed gives the same weights
    again = RM.train_rm(tiny_spec(), task, 0, d / "mo2")
    a = (d / "mo" / "model.safetensors").read_bytes()
    assert (d / "mo2" / "model.safetensors").read_bytes() == a
    assert again["metrics"]["loss_last"] == mo["metrics"]["loss_last"]


def test_preference_members_are_normalised(trained, task):
    d, _, ens = trained
    model, meta = RM.load_rm(d / "ens")
    ds = RM.make_dataset(RM.RMSpec.model_validate(ens["spec"]), task, 0)
    rows = [r for r, h in zip(ds["rows"], ds["held"]) if not h]
    v = RM.score(
        model,
        meta,
        [t for _, t, _ in rows],
        [f for _, _, f in rows],
        [ds["problems"][k] for k, _, _ in rows],
    )
    # each member: mean 0, std 1 over the training completions
    assert v.mean(1).abs().max() < 1e-4
    assert (v.std(1) - 1).abs().max() < 1e-4


def _ctx(task, texts, fin=None, seed=0, rm_root=None):
    probs = task.train()[: len(texts)]
    fin = fin or ["stop"] * len(texts)
    return GroupContext(
        texts,
        probs,
        fin,
        [len(t) for t in texts],
        [len(texts)],
        6,
        task,
        seed=seed,
        rm_root=rm_root,
    )


def test_reward_combines_the_scores_and_logs_each_head(trained, task):
    d, _, _ = trained
    probs = task.train()[:4]
    texts = [probs[0].answer, "7", probs[2].answer + "=", probs[3].answer]
    ctx = _ctx(task, texts)
    r, logs = reward_model_reward(ctx, path=str(d / "mo"), weights={"correct": 0.5, "format": 0.5})
    model, meta = RM.load_rm(d / "mo")
    v = RM.score(model, meta, texts, [True] * 4, probs)[0]  # [N, H]
    assert r.tolist() == pytest.approx((0.5 * v[:, 0] + 0.5 * v[:, 2]).tolist())
    assert ((v > 0) & (v < 1)).all()  # regression heads are bounded (a sigmoid)
    for h in ("correct", "close", "format"):
        assert f"{h}_mean" in logs and f"true_{h}_mean" in logs
    assert logs["true_format_mean"] == pytest.approx(0.75)  # the third is not well formed
    # the ensemble: min over members = combine of the scores; members [0] = the single RM
    ctx = _ctx(task, texts)
    r, logs = reward_model_reward(ctx, path=str(d / "ens"), combine="min")
    model, meta = RM.load_rm(d / "ens")
    v = RM.score(model, meta, texts, [True] * 4, probs)
    assert r.tolist() == pytest.approx(v[:, :, 0].min(0).values.tolist())
    assert logs["std_mean"] > 0 and "gold_mean" in logs and "proxy_mean" in logs
    r0, _ = reward_model_reward(ctx, path=str(d / "ens"), members=[0])
    assert r0.tolist() == pytest.approx(v[0, :, 0].tolist())
    # by name: <rm_root>/<name>/seed<run seed>
    import shutil

    shutil.copytree(d / "ens", d / "root" / "ens" / "seed3")
    r1, _ = reward_model_reward(_ctx(task, texts, rm_root=str(d / "root"), seed=3), name="ens")
    assert r1.tolist() == pytest.approx(v[:, :, 0].mean(0).tolist())


# ------------------------------------------------------------------ reproductions


@pytest.mark.parametrize("repro", REPROS)
def test_config_resolves_under_every_profile(repro):
    for profile in ("smoke", "tiny", "small", "paper"):
        cfg = load_config(repro, profile)
        assert cfg.meta.wave == 2 and cfg.meta.claims
        assert cfg.rewards[0].name == "reward_model"


def test_snakefile_asks_for_the_rm_only_where_named():
    """train_inputs of the Snakefile adds <RES>/rm/<name>/seed<s>/rm.json for a reward_model
    term with a name, nothing for grpo."""
    import re

    text = (project_root() / "Snakefile").read_text()
    assert "rule rm_train:" in text and re.search(r"rm-train \{wildcards\.rm\}", text)
    for repro, want in (
        ("mo_grpo", ["mo_heads"]),
        ("rm_ensembles", ["gold_ensemble"]),
        ("grpo", []),
    ):
        c = load_config(repro, "tiny")
        got = [t.params["name"] for t in c.rewards if t.name == "reward_model"]
        assert got == want


SMOKE = {
    "mo_grpo": ("mo_heads", tiny_spec(), ["correct_mean", "close_mean", "format_mean"]),
    "rm_ensembles": ("gold_ensemble", pref_spec(members=2, steps=30), ["gold_mean", "std_mean"]),
}


@pytest.mark.parametrize("repro", REPROS)
def test_smoke_run(repro, smoke_cfg, smoke_results, tmp_path):
    from evals.evaluate import evaluate
    from grpo_core.trainer import Trainer

    name, spec, keys = SMOKE[repro]
    cfg = smoke_cfg(repro, ["train.steps=2"])
    torch.set_num_threads(1)
    RM.train_rm(spec, make_task(cfg.task), 0, RM.rm_dir(smoke_results, "smoke", name, 0), name)
    Trainer(cfg, tmp_path / "run").train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for k in keys + ["proxy_mean"]:
        vals = [r[f"reward/reward_model/{k}"] for r in rows]
        assert all(math.isfinite(v) for v in vals), (k, vals)
    assert all(math.isfinite(r["kl"]) for r in rows)
    res = evaluate(cfg, tmp_path / "run" / "checkpoint", tmp_path / "eval")
    for k in keys + ["proxy_mean", "reward_mean"]:
        assert math.isfinite(res["metrics"][f"rm_{k}"])


def test_an_edited_rm_spec_changes_the_runs_that_use_it(tmp_path, monkeypatch):
    """The run hash covers the specs of the reward models its rewards name: editing
    config/reward_models/mo_heads.yaml changes mo_grpo's hash, not grpo's (nor rm_ensembles',
    which names gold_ensemble); the Snakefile's rm_train carries the spec hash as a param."""
    import shutil

    import yaml

    from grpo_core.rundir import config_hash, training_config

    root = tmp_path / "proj"
    shutil.copytree(project_root() / "config", root / "config")
    shutil.copytree(project_root() / "reproductions", root / "reproductions")
    monkeypatch.setenv("GRPO_ROOT", str(root))
    names = ("mo_grpo", "rm_ensembles", "grpo")
    before = {n: config_hash(load_config(n, "tiny")) for n in names}
    spec = training_config(load_config("mo_grpo", "tiny"))["reward_model_specs"]["mo_heads"]
    assert "reward_model_specs" not in training_config(load_config("grpo", "tiny"))
    f = root / "config" / "reward_models" / "mo_heads.yaml"
    raw = yaml.safe_load(f.read_text())
    raw["steps"] = int(spec["steps"]) + 1
    f.write_text(yaml.safe_dump(raw))
    after = {n: config_hash(load_config(n, "tiny")) for n in names}
    assert after["mo_grpo"] != before["mo_grpo"]
    assert after["rm_ensembles"] == before["rm_ensembles"] and after["grpo"] == before["grpo"]
    text = (Path(__file__).resolve().parents[1] / "Snakefile").read_text()
    assert "spec=lambda wc: rm_spec_hash(wc.rm)" in text
