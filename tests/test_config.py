"""Config layering and strict validation; one-line CLI errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_core.config import list_reproductions, load_config, validate_profile_overrides
from grpo_core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project's config/ and reproductions/ that a test may break."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "reproductions", tmp_path / "reproductions")
    monkeypatch.setenv("GRPO_ROOT", str(tmp_path))
    return tmp_path


def test_layers_merge_in_order():
    cfg = load_config("dapo", "tiny", ["loss.eps_high=0.3", "rollout.group_size=4"], seed=7)
    assert cfg.loss.eps_high == 0.3  # command line beats reproduction (0.28)
    assert cfg.loss.agg == "token_mean"  # reproduction beats defaults
    assert cfg.rollout.max_new_tokens == 6  # profile beats defaults
    assert cfg.rollout.group_size == 4 and cfg.run.seed == 7
    assert cfg.advantage.eps == 1e-6  # core default kept


@pytest.mark.parametrize("repro", list_reproductions())
def test_every_reproduction_resolves_under_every_profile(repro):
    for profile in ("smoke", "tiny", "small", "paper"):
        load_config(repro, profile)
    validate_profile_overrides(repro)


def test_unknown_key_names_file_key_and_suggestion(project):
    f = project / "reproductions" / "dapo" / "reproduction.yaml"
    f.write_text(f.read_text().replace("eps_high: 0.28", "eps_hihg: 0.28"))
    with pytest.raises(UserError) as e:
        load_config("dapo", "tiny")
    msg = str(e.value)
    assert str(f) in msg and "loss.eps_hihg" in msg and "eps_high" in msg
    assert "\n" not in msg


def test_unknown_component_names_file_and_closest(project):
    f = project / "reproductions" / "gspo" / "reproduction.yaml"
    f.write_text(f.read_text().replace("name: gspo", "name: gpso"))
    with pytest.raises(UserError) as e:
        load_config("gspo", "tiny")
    msg = str(e.value)
    assert str(f) in msg and "loss.name" in msg and "'gspo'" in msg


def test_wrong_type_names_key_and_file(project):
    f = project / "config" / "profiles" / "tiny.yaml"
    f.write_text(f.read_text().replace("group_size: 8", "group_size: eight"))
    with pytest.raises(UserError) as e:
        load_config("grpo", "tiny")
    msg = str(e.value)
    assert str(f) in msg and "rollout.group_size" in msg and "integer" in msg


def test_command_line_errors_name_the_override():
    with pytest.raises(UserError, match=r"command line \(train\.lrr=1\).*train\.lrr.*'lr'"):
        load_config("grpo", "tiny", ["train.lrr=1"])
    with pytest.raises(UserError, match=r"unknown reward function 'corectness'.*'correctness'"):
        load_config("grpo", "tiny", ["rewards=[{name: corectness}]"])


def test_unknown_reproduction_and_profile():
    with pytest.raises(UserError, match=r"unknown reproduction 'dappo'; did you mean 'dapo'"):
        load_config("dappo", "tiny")
    with pytest.raises(UserError, match=r"unknown profile 'tinny'; did you mean 'tiny'"):
        load_config("grpo", "tinny")


def _cli(*args, env=None):
    e = {**os.environ, "GRPO_ROOT": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "grpo_core.cli", *args],
        capture_output=True,
        text=True,
        env=e,
        cwd=ROOT,
    )


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text('{"question": "1+1=", "answer": "2"}\n{"question": "2+2="}\n' * 3)
    cases = [
        (["train", "dappo", "--profile", "smoke"], "unknown reproduction 'dappo'"),
        (
            ["train", "grpo", "--profile", "smoke", "loss.name=ppo_clipp"],
            "unknown policy loss 'ppo_clipp'",
        ),
        (["train", "grpo", "--profile", "smoke", "train.stepz=3"], "unknown key 'train.stepz'"),
        (
            [
                "train",
                "grpo",
                "--profile",
                "smoke",
                "task.name=jsonl",
                f"task.path={bad_rows}",
                "task.n_test=1",
                f"run.results_dir={tmp_path}",
                "model.name_or_path=" + str(tmp_path / "nomodel"),
            ],
            f"{bad_rows}:2: row needs a string 'question'",
        ),
    ]
    for args, expect in cases:
        r = _cli(*args)
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and expect in lines[0], r.stderr
        assert "Traceback" not in r.stderr
    r = _cli("train", "dappo", "--profile", "smoke", "--traceback")
    assert "Traceback" in r.stderr


def test_cli_list_and_new(project):
    r = _cli("list", env={"GRPO_ROOT": str(project)})
    assert r.returncode == 0
    for slug in ("grpo", "dr_grpo", "dapo", "gspo", "rloo"):
        assert any(line.split()[0] == slug for line in r.stdout.splitlines()[1:])
    r = _cli("new", "my_variant", env={"GRPO_ROOT": str(project)})
    assert r.returncode == 0, r.stderr
    assert (project / "reproductions" / "my_variant" / "README.md").exists()
    load_config("my_variant", "smoke")  # the scaffold validates


def test_cli_seed_flag_and_run_seed_override_agree():
    from grpo_core.cli import build_parser
    from grpo_core.config import load_config

    a = build_parser().parse_args(["train", "grpo", "--profile", "smoke"])
    assert a.seed is None  # so that run.seed=N on the command line is not overridden by a default
    assert load_config("grpo", "smoke", ["run.seed=3"], seed=a.seed).run.seed == 3
    assert load_config("grpo", "smoke", ["run.seed=3"], seed=5).run.seed == 5


# The papers' budgets (reproductions/<name>/reproduction.yaml, profile_overrides.paper; sources
# in the comments there and in each README), resolved without touching the network.
PAPER_BUDGETS = {
    # repro: (group size, prompts per step, max new tokens, lr, minibatches, kl beta)
    "grpo": (64, 16, 1024, 1e-6, 1, 0.04),
    "dr_grpo": (8, 128, 3000, 1e-6, 8, 0.0),
    "dapo": (16, 512, 3000, 1e-6, 16, 0.0),
    "gspo": (8, 256, 3000, 1e-6, 4, 0.0),
}


@pytest.mark.parametrize("repro", sorted(PAPER_BUDGETS))
def test_paper_profile_resolves_offline_with_the_papers_budgets(repro, monkeypatch):
    import socket

    def no_network(*a, **k):
        raise AssertionError("the paper profile touched the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    cfg = load_config(repro, "paper")
    g, p, c, lr, mb, beta = PAPER_BUDGETS[repro]
    assert cfg.model.name_or_path.startswith("Qwen/Qwen2.5-Math-")
    assert (cfg.run.device, cfg.run.dtype) == ("cuda", "bfloat16")
    assert cfg.task.name == "jsonl" and cfg.task.template == "boxed"
    assert (cfg.rollout.group_size, cfg.rollout.prompts_per_step) == (g, p)
    assert cfg.rollout.max_new_tokens == c and cfg.train.lr == lr
    assert cfg.train.minibatches == mb and cfg.loss.kl.beta == beta
    # every sequence of a step is used: N = G * prompts divides into the minibatches
    assert (g * p) % mb == 0
    # Qwen2.5-Math's context is 4096 tokens: the generation budget leaves room for the prompt
    assert c <= 3072
    assert cfg.workflow.gpus >= 1


def test_reproduction_groups_expand():
    from grpo_core.config import (
        controls,
        expand_reproductions,
        list_reproductions,
        reproduction_meta,
    )

    assert expand_reproductions(["all"]) == list_reproductions()
    assert expand_reproductions(["dapo", "grpo", "dapo"]) == ["dapo", "grpo"]
    with pytest.raises(UserError, match="meta.wave: 9"):
        expand_reproductions(["wave9"])
    waves = {reproduction_meta(s).get("wave", 0) for s in list_reproductions()}
    for w in waves - {0}:
        got = expand_reproductions([f"wave{w}"])
        # grpo, then the controls (meta.tier: control), then the wave's members
        assert got[0] == "grpo" and got[1 : 1 + len(controls())] == controls()
        assert all(reproduction_meta(s)["wave"] == w for s in got[1 + len(controls()) :])
    assert "random_reward" in controls() and "random_reward" in expand_reproductions(["wave1"])
