"""Bad inputs of the learned reward models (grpo_core.reward_models, reward ``reward_model``,
``grpo rm-train``): a missing / corrupt checkpoint, a head or member that does not exist, bad
params and specs; each a one-line UserError (the CLI: exit 2, one line)."""

import json

import pytest
import torch

from grpo_core import reward_models as RM
from grpo_core.cli import main
from grpo_core.config import load_config
from grpo_core.errors import UserError
from grpo_core.rewards import GroupContext, reward_model_reward
from grpo_core.tasks import Problem, make_task


def _spec(**kw):
    base = dict(
        kind="regression",
        heads=["correct", "close", "format"],
        n_prompts=12,
        steps=2,
        batch_size=8,
        model={"hidden_size": 8, "intermediate_size": 16, "num_layers": 1, "num_heads": 2},
    )
    return RM.RMSpec.model_validate(base | kw)


@pytest.fixture(scope="module")
def task():
    return make_task(load_config(None, "smoke").task)


@pytest.fixture(scope="module")
def rm(tmp_path_factory, task):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("rm") / "ok"
    RM.train_rm(_spec(), task, 0, d)
    return d


def _ctx(task, n=2, **kw):
    probs = task.train()[:n]
    return GroupContext([p.answer for p in probs], probs, ["stop"] * n, [2] * n, [n], 6, task, **kw)


def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_checkpoint(task, tmp_path):
    with pytest.raises(UserError) as e:
        reward_model_reward(_ctx(task), path=str(tmp_path / "nothere"))
    assert _one_line(e) == (
        f"reward model {tmp_path / 'nothere'}: no rm.json; train it with "
        "`grpo rm-train <name> --profile P --seed S`"
    )
    # by name: the workflow's place, and the command that makes it
    with pytest.raises(UserError) as e:
        reward_model_reward(_ctx(task, rm_root=str(tmp_path), seed=2), name="mo_heads")
    assert _one_line(e) == (
        f"reward model {tmp_path / 'mo_heads' / 'seed2'}: no rm.json; the workflow trains it "
        "(grpo rm-train mo_heads --profile P --seed 2)"
    )


def test_missing_weights(task, rm, tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "rm.json").write_text((rm / "rm.json").read_text())
    with pytest.raises(UserError) as e:
        reward_model_reward(_ctx(task), path=str(d))
    assert _one_line(e).startswith(f"reward model {d}: no model.safetensors; train it")


def test_corrupt_rm_json(task, rm, tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "model.safetensors").write_bytes((rm / "model.safetensors").read_bytes())
    (d / "rm.json").write_text('{"heads": [')
    with pytest.raises(UserError) as e:
        reward_model_reward(_ctx(task), path=str(d))
    assert _one_line(e).startswith(f"{d / 'rm.json'}: not valid JSON (line 1); train it")
    (d / "rm.json").write_text(json.dumps({"heads": ["correct"]}))  # valid JSON, not an RM's
    with pytest.raises(UserError) as e:
        reward_model_reward(_ctx(task), path=str(d))
    assert _one_line(e).startswith(f"{d / 'rm.json'}: not a reward model's rm.json ('spec')")


def test_corrupt_weights(task, rm, tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "rm.json").write_text((rm / "rm.json").read_text())
    (d / "model.safetensors").write_bytes((rm / "model.safetensors").read_bytes()[:100])
    with pytest.raises(UserError) as e:
        reward_model_reward(_ctx(task), path=str(d))
    assert _one_line(e).startswith(
        f"{d / 'model.safetensors'}: cannot load the reward model's weights ("
    )


def test_head_that_does_not_exist(task, rm):
    for kw in ({"heads": ["safety"]}, {"weights": {"correct": 1.0, "helpful": 1.0}}):
        with pytest.raises(UserError) as e:
            reward_model_reward(_ctx(task), path=str(rm), **kw)
        bad = "safety" if "heads" in kw else "helpful"
        assert _one_line(e) == (
            f"rewards reward_model: head {bad!r} is not one of the reward model's "
            "['correct', 'close', 'format']"
        )


def test_member_that_does_not_exist(task, rm):
    with pytest.raises(UserError) as e:
        reward_model_reward(_ctx(task), path=str(rm), members=[0, 3])
    assert _one_line(e) == f"rewards reward_model: member 3 does not exist ({rm} has 1)"


CONFIG_CASES = [
    ("rewards=[{name: reward_model}]", "give the reward model's name"),
    ("rewards=[{name: reward_model, params: {name: a, path: b}}]", "give the reward model's name"),
    ("rewards=[{name: reward_model, params: {name: a, combine: max}}]", "'mean', 'min'"),
    ("rewards=[{name: reward_model, params: {name: a, lam: -1}}]", "greater than or equal to 0"),
    ("rewards=[{name: reward_model, params: {name: a, members: []}}]", "members []"),
]


@pytest.mark.parametrize("override,fragment", CONFIG_CASES)
def test_bad_params_at_load(override, fragment):
    with pytest.raises(UserError) as e:
        load_config("grpo", "smoke", [override])
    msg = _one_line(e)
    assert fragment in msg and "rewards" in msg, msg


def test_rm_train_cli_bad_name_and_spec(capsys, tmp_path, monkeypatch):
    rc = main(["rm-train", "no_such_rm", "--profile", "smoke", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith("error: reward model 'no_such_rm': no spec ") and "mo_heads" in err
    # a spec with a bad key, in a project of its own
    proj = tmp_path / "proj"
    (proj / "config" / "reward_models").mkdir(parents=True)
    import shutil

    from grpo_core.config import project_root

    shutil.copytree(project_root() / "config" / "profiles", proj / "config" / "profiles")
    shutil.copytree(project_root() / "reproductions", proj / "reproductions")
    f = proj / "config" / "reward_models" / "bad.yaml"
    f.write_text("kind: regression\nheads: [correct, safety]\n")
    monkeypatch.setenv("GRPO_ROOT", str(proj))
    rc = main(["rm-train", "bad", "--profile", "smoke", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith(f"error: {f}: key '(top)': Value error, regression head 'safety'")
    assert not (tmp_path / "o").exists()


def test_non_numeric_answers_refused():
    class _T:
        name = "qa"

        def train(self):
            return [Problem(id="q0", question="capital of France?", answer="Paris")] * 8

    with pytest.raises(UserError) as e:
        RM.make_dataset(_spec(), _T(), 0)
    assert _one_line(e) == (
        "reward model data: task 'qa' problem q0 has a non-numeric answer 'Paris'; the "
        "perturbations need numeric answers (the arithmetic tasks)"
    )


def test_training_a_run_without_its_rm(smoke_cfg, tmp_path):
    from grpo_core.trainer import Trainer

    cfg = smoke_cfg("mo_grpo", ["train.steps=1"])
    cfg.rewards[0].params = {"name": "not_trained_here"}
    with pytest.raises(UserError) as e:
        Trainer(cfg, tmp_path / "run").train(progress=False)
    assert "not_trained_here/seed0: no rm.json; the workflow trains it (grpo rm-train " in (
        _one_line(e)
    )
