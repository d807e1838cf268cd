"""Seeded starts (workflow.seeded_start, on in the smoke, tiny and tiny_cot profiles): seed s is
built and SFT'd with seed s into base/seed<s>/, and training, `grpo eval sft_start --seed s` and
lm-eval all start from there; profiles without the switch keep one start base/model."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from grpo_core.config import base_dir, load_config, resolve_model_path
from grpo_core.prepare import prepare


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(next(Path(d).glob("*.safetensors")))


def _differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """A results dir with the smoke profile's starts for seeds 0 and 1."""
    res = tmp_path_factory.mktemp("seeded")
    for s in (0, 1):
        cfg = load_config(None, "smoke", [f"run.results_dir={res}", "sft.steps=5"], seed=s)
        assert cfg.workflow.seeded_start
        prepare(cfg, threads=1, log=lambda *a: None)
    return res


def test_paths_per_seed_and_single_start_elsewhere(tmp_path):
    r = f"run.results_dir={tmp_path}"
    for prof in ("smoke", "tiny", "tiny_cot"):
        c = load_config("grpo", prof, [r], seed=2)
        assert c.workflow.seeded_start
        assert base_dir(c) == tmp_path / prof / "base" / "seed2"
        assert resolve_model_path(c) == str(tmp_path / prof / "base" / "seed2" / "model")
        assert base_dir(c, seed=0) == tmp_path / prof / "base" / "seed0"
    # small / paper keep the single given start: the same for every seed
    c = load_config("grpo", "small", [r], seed=2)
    assert not c.workflow.seeded_start
    assert resolve_model_path(c) == str(tmp_path / "small" / "base" / "model")
    assert resolve_model_path(load_config("grpo", "paper", seed=2)) == "Qwen/Qwen2.5-Math-1.5B"
    # a given checkpoint is used as it is, seeded profile or not
    c = load_config("grpo", "smoke", [r, "model.name_or_path=/ckpt/x"], seed=1)
    assert resolve_model_path(c) == "/ckpt/x"
    # the switch off: one start base/model for every seed
    c = load_config("grpo", "smoke", [r, "workflow.seeded_start=false"], seed=1)
    assert resolve_model_path(c) == str(tmp_path / "smoke" / "base" / "model")


def test_two_seeds_give_two_different_starts(seeded, tmp_path):
    b0, b1 = seeded / "smoke" / "base" / "seed0", seeded / "smoke" / "base" / "seed1"
    assert (b0 / "model" / "config.json").exists() and (b1 / "model" / "config.json").exists()
    assert not (seeded / "smoke" / "base" / "model").exists()  # no shared start
    assert _differ(_weights(b0 / "init"), _weights(b1 / "init"))  # the init weights
    assert _differ(_weights(b0 / "model"), _weights(b1 / "model"))
    # deterministic: seed 1 again gives the same start
    cfg = load_config(None, "smoke", [f"run.results_dir={tmp_path}", "sft.steps=5"], seed=1)
    prepare(cfg, threads=1, log=lambda *a: None)
    again = _weights(tmp_path / "smoke" / "base" / "seed1" / "model")
    assert not _differ(again, _weights(b1 / "model"))


def test_sft_data_order_follows_the_seed(seeded):
    """The same initial weights SFT'd under two seeds end apart (batch order from run.seed)."""
    from grpo_core.models import load_model_and_tokenizer
    from grpo_core.prepare import sft

    init = str(seeded / "smoke" / "base" / "seed0" / "init")
    out = []
    for s in (0, 1):
        cfg = load_config(None, "smoke", ["sft.steps=3"], seed=s)
        model, tok = load_model_and_tokenizer(init, "float32", "cpu")
        sft(model, tok, cfg, log=lambda *a: None)
        out.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    assert _differ(out[0], out[1])


def test_trainer_and_eval_of_sft_start_read_the_seeds_start(seeded, capsys):
    from grpo_core.cli import main
    from grpo_core.trainer import Trainer

    r = f"run.results_dir={seeded}"
    t = Trainer(load_config("grpo", "smoke", [r, "run.threads=1"], seed=1), None)
    assert t.model_path == str(seeded / "smoke" / "base" / "seed1" / "model")
    start = _weights(seeded / "smoke" / "base" / "seed1" / "model")
    got = {k: v for k, v in t.model.state_dict().items() if k in start}
    assert got and not _differ(got, start)

    assert (
        main(["eval", "sft_start", "--profile", "smoke", "--seed", "1", "--threads", "1", r]) == 0
    )
    res = json.loads(
        (seeded / "smoke" / "runs" / "sft_start" / "seed1" / "eval" / "arith_mix.json").read_text()
    )
    assert res["model"] == str(seeded / "smoke" / "base" / "seed1" / "model")
    assert res["reproduction"] == "sft_start" and res["seed"] == 1
    assert not (seeded / "smoke" / "runs" / "sft_start" / "seed0").exists()


def test_cli_prepare_takes_a_seed(tmp_path, capsys):
    from grpo_core.cli import build_parser

    a = build_parser().parse_args(["prepare", "--profile", "smoke", "--seed", "3"])
    assert a.seed == 3
    from grpo_core.cli import main

    # a typo in an override still fails as one line before any work
    assert main(["prepare", "--profile", "smoke", "--seed", "3", "sft.stepz=1"]) == 2
    assert "unknown key 'sft.stepz'" in capsys.readouterr().err


def test_kdrl_teacher_is_still_grpo_seed0_while_the_student_starts_from_its_seed(tmp_path):
    from grpo_core.config import resolve_ref_path
    from grpo_core.errors import UserError

    cfg = load_config("kdrl", "tiny", [f"run.results_dir={tmp_path}"], seed=1)
    assert cfg.model.ref_name_or_path == "run:grpo/seed0"
    assert resolve_model_path(cfg) == str(tmp_path / "tiny" / "base" / "seed1" / "model")
    with pytest.raises(UserError, match="train that run first"):
        resolve_ref_path(cfg)
    ckpt = tmp_path / "tiny" / "runs" / "grpo" / "seed0" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    assert resolve_ref_path(cfg) == str(ckpt)
