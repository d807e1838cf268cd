"""Bad inputs of rest_rl: the reward-std filter's params, VM-MCTS params (out of range, a step
as long as the budget, an unknown split), a missing / mismatched / unreadable value model, and
`grpo value-model` on a reproduction without VM-MCTS. Each is a one-line UserError (exit 2 on the
command line) naming the key or file and what would be right."""

from __future__ import annotations

import json

import pytest

from evals import vm_mcts as V
from grpo_core import cli
from grpo_core.config import load_config
from grpo_core.errors import UserError


def test_filter_threshold_and_metric_are_checked_at_load():
    with pytest.raises(UserError, match="threshold"):
        load_config("rest_rl", "tiny", ['sampler.filter.params={"threshold": 0}'])
    with pytest.raises(UserError, match="metric"):
        load_config("rest_rl", "tiny", ['sampler.filter.params={"metric": "pass_rate"}'])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("eval.vm_mcts.iterations=0", "iterations"),
        ("eval.vm_mcts.num_sample=0", "num_sample"),
        ("eval.vm_mcts.eps=0", "eps"),
        ("eval.vm_mcts.c=-1", "c"),
        ("eval.vm_mcts.split=words", "split"),
        ("eval.vm_mcts.itterations=3", "itterations"),
    ],
)
def test_bad_mcts_params_are_refused_at_load(override, fragment):
    with pytest.raises(UserError, match=fragment) as e:
        load_config("rest_rl", "tiny", [override])
    assert "\n" not in str(e.value).strip()


def test_a_step_as_long_as_the_budget_is_refused():
    cfg = load_config("rest_rl", "tiny", ["eval.vm_mcts.step_tokens=6"])
    with pytest.raises(UserError, match="step_tokens: 6 is not below the generation budget 6"):
        V.check_params(cfg.eval.vm_mcts, 6)


def test_a_greedy_search_is_refused():
    cfg = load_config("rest_rl", "tiny", ["eval.temperature=0"])
    with pytest.raises(UserError, match="needs a temperature > 0"):
        V.check_params(cfg.eval.vm_mcts, 6, V.search_temperature(cfg))
    cfg = load_config("rest_rl", "tiny", ["eval.temperature=0", "eval.vm_mcts.temperature=0.7"])
    V.check_params(cfg.eval.vm_mcts, 6, V.search_temperature(cfg))  # its own temperature: fine


def _run(argv, capsys):
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def test_eval_without_a_value_model_is_one_line_exit_2(tmp_path, capsys):
    ck = tmp_path / "run" / "checkpoint"
    ck.mkdir(parents=True)
    out = tmp_path / "eval"
    rc, err = _run(
        ["eval", "rest_rl", "--profile", "smoke", "--model", str(ck), "--out", str(out)], capsys
    )
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"no value model at {tmp_path / 'run' / 'value_model'}" in err
    assert "grpo value-model rest_rl --profile smoke --seed 0" in err
    assert not (out / "arith_mix.json").exists()  # refused before any sampling


def test_value_model_mismatch_and_unreadable(tmp_path):
    d = tmp_path / "value_model"
    d.mkdir()
    (d / V.VM_JSON).write_text(json.dumps({"d_model": 7, "hidden": 4}))
    from safetensors.torch import save_file

    save_file(dict(V.ValueHead(7, 4).state_dict()), str(d / V.VM_WEIGHTS))
    with pytest.raises(UserError, match="hidden size 7, but the checkpoint's is 32"):
        V.load_value_head(d, 32, "grpo value-model rest_rl")
    (d / V.VM_WEIGHTS).write_bytes(b"not a tensor file")
    with pytest.raises(UserError, match="unreadable value model"):
        V.load_value_head(d, 7, "grpo value-model rest_rl")


def test_value_model_command_on_a_reproduction_without_vm_mcts(tmp_path, capsys):
    cfg = load_config("grpo", "smoke")
    with pytest.raises(UserError, match="sets no eval.vm_mcts"):
        V.train_value_model(cfg, tmp_path)
    # the command line: no checkpoint yet -> one line, exit 2
    rc, err = _run(
        ["value-model", "rest_rl", "--profile", "smoke", f"run.results_dir={tmp_path}"], capsys
    )
    assert rc == 2 and len(err.splitlines()) == 1 and "no model at" in err
