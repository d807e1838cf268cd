"""Bad configuration inputs: each one is a one-line UserError naming the file that set the key,
the key, and what would be right (the CLI prints it without traceback and exits 2).

Every case writes reproductions/bad/reproduction.yaml in a copy of the project (the
reproduction is a diff over grpo, as every reproduction is) and asserts the exact error text
that follows the file name.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_core.config import load_config
from grpo_core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
GE = "Input should be greater than or equal to"
GT = "Input should be greater than"


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "config", d / "config")
    shutil.copytree(ROOT / "reproductions", d / "reproductions")
    (d / "reproductions" / "bad").mkdir()
    return d


@pytest.fixture
def project(project_dir, monkeypatch):
    monkeypatch.setenv("GRPO_ROOT", str(project_dir))
    return project_dir


def _bad(project, text: str) -> Path:
    f = project / "reproductions" / "bad" / "reproduction.yaml"
    f.write_text(text)
    return f


# (yaml of reproductions/bad, the error text after "<file>: ")
RANGE_CASES = [
    ("rollout: {group_size: 0}", f"key 'rollout.group_size': {GE} 2 (got 0)"),
    ("rollout: {group_size: 1}", f"key 'rollout.group_size': {GE} 2 (got 1)"),
    ("rollout: {prompts_per_step: 0}", f"key 'rollout.prompts_per_step': {GE} 1 (got 0)"),
    ("rollout: {temperature: 0}", f"key 'rollout.temperature': {GT} 0 (got 0)"),
    ("rollout: {top_p: 0}", f"key 'rollout.top_p': {GT} 0 (got 0)"),
    ("rollout: {top_p: 1.5}", "key 'rollout.top_p': Input should be less than or equal to 1"),
    ("rollout: {max_new_tokens: 0}", f"key 'rollout.max_new_tokens': {GE} 1 (got 0)"),
    ("loss: {eps_low: -0.1}", f"key 'loss.eps_low': {GE} 0 (got -0.1)"),
    ("loss: {eps_low: 1.0}", "key 'loss.eps_low': Input should be less than 1 (got 1.0)"),
    ("loss: {eps_high: -0.01}", f"key 'loss.eps_high': {GE} 0 (got -0.01)"),
    ("loss: {dual_clip: 1.0}", f"key 'loss.dual_clip': {GT} 1 (got 1.0)"),
    ("loss: {kl: {beta: -1}}", f"key 'loss.kl.beta': {GE} 0 (got -1)"),
    ("loss: {kl: {clamp: 0}}", f"key 'loss.kl.clamp': {GT} 0 (got 0)"),
    ("loss: {norm_constant: 0}", f"key 'loss.norm_constant': {GT} 0 (got 0)"),
    ("train: {steps: 0}", f"key 'train.steps': {GE} 1 (got 0)"),
    ("train: {steps: -5}", f"key 'train.steps': {GE} 1 (got -5)"),
    ("train: {lr: -1}", f"key 'train.lr': {GT} 0 (got -1)"),
    ("train: {lr: 0}", f"key 'train.lr': {GT} 0 (got 0)"),
    ("train: {lr: .nan}", "key 'train.lr': Input should be a finite number (got nan)"),
    ("train: {mu: 0}", f"key 'train.mu': {GE} 1 (got 0)"),
    ("train: {minibatches: 0}", f"key 'train.minibatches': {GE} 1 (got 0)"),
    ("train: {micro_batch_size: 0}", f"key 'train.micro_batch_size': {GE} 1 (got 0)"),
    ("train: {warmup_steps: -1}", f"key 'train.warmup_steps': {GE} 0 (got -1)"),
    ("train: {weight_decay: -0.1}", f"key 'train.weight_decay': {GE} 0 (got -0.1)"),
    ("train: {max_grad_norm: 0}", f"key 'train.max_grad_norm': {GT} 0 (got 0)"),
    ("train: {betas: [0.9, 1.0]}", "key 'train.betas[1]': Input should be less than 1 (got 1.0)"),
    ("train: {momentum: 1.0}", "key 'train.momentum': Input should be less than 1 (got 1.0)"),
    ("train: {checkpoint_every: -1}", f"key 'train.checkpoint_every': {GE} 0 (got -1)"),
    ("eval: {k: 0}", f"key 'eval.k': {GE} 1 (got 0)"),
    ("eval: {temperature: -0.5}", f"key 'eval.temperature': {GE} 0 (got -0.5)"),
    ("eval: {top_p: 0}", f"key 'eval.top_p': {GT} 0 (got 0)"),
    ("eval: {pass_ks: [1, 0]}", f"key 'eval.pass_ks[1]': {GE} 1 (got 0)"),
    ("sft: {steps: -1}", f"key 'sft.steps': {GE} 0 (got -1)"),
    ("sft: {lr: 0}", f"key 'sft.lr': {GT} 0 (got 0)"),
    ("sft: {batch_size: 0}", f"key 'sft.batch_size': {GE} 1 (got 0)"),
    ("sft: {label_smoothing: 1.0}", "key 'sft.label_smoothing': Input should be less than 1"),
    ("sft: {min_lr_ratio: 1.5}", "key 'sft.min_lr_ratio': Input should be less than or equal"),
    ("task: {n_train: 0}", f"key 'task.n_train': {GE} 1 (got 0)"),
    ("advantage: {eps: -1.0e-6}", f"key 'advantage.eps': {GE} 0 (got -1e-06)"),
    ("sampler: {max_rounds: 0}", f"key 'sampler.max_rounds': {GE} 1 (got 0)"),
    ("model: {lora: {r: 0}}", f"key 'model.lora.r': {GE} 1 (got 0)"),
    ("model: {ref_ema: {decay: 1.5}}", "key 'model.ref_ema.decay': Input should be less than or"),
    ("run: {seed: -1}", f"key 'run.seed': {GE} 0 (got -1)"),
    ("workflow: {train_threads: 0}", f"key 'workflow.train_threads': {GE} 1 (got 0)"),
    (
        "loss: {kl: {schedule: {kind: step, every: 0}}}",
        f"key 'loss.kl.schedule.every': {GE} 1 (got 0)",
    ),
]

PARAM_CASES = [
    (
        "advantage: {name: seed_grpo, params: {alpah: 1}}",
        "unknown key 'advantage.params.alpah'; did you mean 'alpha'?",
    ),
    (
        "advantage: {params: {alpah: 1}}",
        "key 'advantage.params.alpah': advantage estimator 'grpo' takes no params",
    ),
    (
        "advantage: {name: gtpo, params: {h_mx: 1.3}}",
        "unknown key 'advantage.params.h_mx'; did you mean 'h_max'?",
    ),
    (
        "advantage: {name: reinforce_baseline, params: {baseline: median}}",
        "key 'advantage.params.baseline': Input should be 'mean' or 'logavgexp' (got 'median')",
    ),
    (
        "loss: {name: disco, params: {taus: 10}}",
        "unknown key 'loss.params.taus'; did you mean 'tau'",
    ),
    ("loss: {name: disco, params: {tau: 0}}", f"key 'loss.params.tau': {GT} 0 (got 0)"),
    ("loss: {params: {tau: 1}}", "key 'loss.params.tau': policy loss 'ppo_clip' takes no params"),
    (
        "loss: {regularisers: [{name: llds, params: {mn_adv: 0.0}}]}",
        "unknown key 'loss.regularisers[0].params.mn_adv'; did you mean 'min_adv'?",
    ),
    (
        "loss: {regularisers: [{name: kd_reverse_kl, params: {estimator: k4}}]}",
        "key 'loss.regularisers[0].params.estimator': Input should be 'k1', 'k2' or 'k3'",
    ),
    (
        "loss: {token_weights: {name: tw_grpo, params: {alhpa: 1.4}}}",
        "unknown key 'loss.token_weights.params.alhpa'; did you mean 'alpha'?",
    ),
    (
        "loss: {token_weights: {name: gtpo_conflict, params: {pos_wieght: 2}}}",
        "unknown key 'loss.token_weights.params.pos_wieght'; did you mean 'pos_weight'",
    ),
    (
        "rewards: [{name: correctness}, {name: overlong, params: {bufer: 2}}]",
        "unknown key 'rewards[1].params.bufer'; did you mean 'buffer'?",
    ),
    (
        "rewards: [{name: overlong, params: {buffer: two}}]",
        "key 'rewards[0].params.buffer': Input should be a valid integer",
    ),
    (
        "rewards: [{name: correctness, params: {scale: 2}}]",
        "unknown key 'rewards[0].params.scale'; valid names: choice",
    ),
    (
        "sampler: {name: vade, params: {decay_slwo: 0.9}}",
        "unknown key 'sampler.params.decay_slwo'; did you mean 'decay_slow'",
    ),
    (
        "sampler: {name: knapsack, params: {min_n: 1}}",
        f"key 'sampler.params.min_n': {GE} 2 (got 1)",
    ),
    ("sampler: {params: {pool: 0}}", f"key 'sampler.params.pool': {GE} 1 (got 0)"),
    (
        "sampler: {name: aepo, params: {pool: 10}}",
        "unknown key 'sampler.params.pool'; valid names: advantage, frac, max_rows,",
    ),
    (
        "task: {name: arith_cot, params: {cot_fra: 0.5}}",
        "unknown key 'task.params.cot_fra'; did you mean 'cot_frac'?",
    ),
    ("task: {params: {cot_frac: 0.5}}", "key 'task.params.cot_frac': task 'arith_mix' takes no"),
]

STRUCTURE_CASES = [
    ("base: nosuch", "key 'base': unknown reproduction 'nosuch'; "),
    ("base: dappo", "key 'base': unknown reproduction 'dappo'; did you mean 'dapo'"),
    ("base: 3", "key 'base': want a reproduction name, got 3"),
    ("base: bad", "key 'base': base cycle bad -> bad"),
    ("bsae: dapo", "unknown key 'bsae'; did you mean 'base'"),
    ("loss: {eps_hihg: 0.3}", "unknown key 'loss.eps_hihg'; did you mean 'eps_high'"),
    ("profile_overrides: {tinny: {}}", "key 'profile_overrides.tinny': unknown profile; "),
    ("sampler: {name: dynamik}", "key 'sampler.name': unknown sampler 'dynamik'; did you mean"),
]

CASES = RANGE_CASES + PARAM_CASES + STRUCTURE_CASES


def test_enough_cases():
    assert len(CASES) >= 45 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("text,expect", CASES, ids=[c[0][:60] for c in CASES])
def test_bad_config_is_one_line_naming_file_and_key(project, text, expect):
    f = _bad(project, text + "\n")
    with pytest.raises(UserError) as e:
        load_config("bad", "tiny")
    msg = str(e.value)
    assert msg.startswith(f"{f}: {expect}"), msg
    assert "\n" not in msg


def test_base_cycle_over_two_files(project):
    _bad(project, "base: bad2\n")
    (project / "reproductions" / "bad2").mkdir(exist_ok=True)
    f2 = project / "reproductions" / "bad2" / "reproduction.yaml"
    f2.write_text("base: bad\n")
    with pytest.raises(UserError) as e:
        load_config("bad", "tiny")
    # named: the file whose base closes the cycle
    assert str(e.value) == f"{f2}: key 'base': base cycle bad -> bad2 -> bad"


def test_error_in_a_profile_override_names_that_block(project):
    f = _bad(project, "profile_overrides:\n  tiny:\n    rollout: {group_size: 1}\n")
    with pytest.raises(UserError) as e:
        load_config("bad", "tiny")
    assert str(e.value) == (
        f"{f} (profile_overrides.tiny): key 'rollout.group_size': {GE} 2 (got 1)"
    )
    load_config("bad", "smoke")  # the block is only for tiny


@pytest.mark.parametrize(
    "text,line,key,first",
    [
        ("loss:\n  eps_high: 0.28\n  eps_high: 0.3\n", 3, "loss.eps_high", 2),
        ("loss: {eps_low: 0.2}\ntrain: {steps: 3}\nloss: {eps_high: 0.3}\n", 3, "loss", 1),
        ("rewards:\n  - {name: correctness, name: overlong}\n", 2, "rewards[0].name", 2),
    ],
)
def test_duplicate_yaml_key(project, text, line, key, first):
    f = _bad(project, text)
    with pytest.raises(UserError) as e:
        load_config("bad", "tiny")
    assert str(e.value) == (
        f"{f}:{line}: duplicate key '{key}' (first set on line {first}); keep one of them"
    )


def test_command_line_override_out_of_range_names_the_override(project):
    with pytest.raises(UserError) as e:
        load_config("grpo", "tiny", ["rollout.group_size=1"])
    assert str(e.value) == (
        f"command line (rollout.group_size=1): key 'rollout.group_size': {GE} 2 (got 1)"
    )


def _cli(project, *args):
    env = {**os.environ, "GRPO_ROOT": str(project)}
    return subprocess.run(
        [sys.executable, "-m", "grpo_core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
    )


@pytest.mark.parametrize(
    "text,expect",
    [
        ("rollout: {group_size: 0}", f"key 'rollout.group_size': {GE} 2 (got 0)"),
        ("base: bad", "key 'base': base cycle bad -> bad"),
        ("loss:\n  eps_high: 0.28\n  eps_high: 0.3", "duplicate key 'loss.eps_high'"),
        (
            "advantage: {name: seed_grpo, params: {alpah: 1}}",
            "unknown key 'advantage.params.alpah'; did you mean 'alpha'?",
        ),
    ],
    ids=["group_size", "cycle", "duplicate", "param"],
)
def test_cli_train_exits_2_with_one_line(project, text, expect):
    f = _bad(project, text + "\n")
    before = f.read_text()
    r = _cli(project, "train", "bad", "--profile", "smoke")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {f}") and expect in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert f.read_text() == before and not (project / "results").exists()
