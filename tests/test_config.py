"""Config layering and strict validation; one-line CLI errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_core.config import LossCfg, list_reproductions, load_config, validate_profile_overrides
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


# ------------------------------------------------------------------ a reproduction is a diff over
# its base: layering, `grpo diff`, typed params, ranges


def _write(project, slug, text, readme=None):
    d = project / "reproductions" / slug
    d.mkdir(parents=True, exist_ok=True)
    (d / "reproduction.yaml").write_text(text)
    if readme is not None:
        (d / "README.md").write_text(readme)
    return d / "reproduction.yaml"


def test_a_variant_inherits_grpos_kl_and_paper_budget_but_not_its_meta(project):
    _write(project, "plain_variant", "meta: {title: plain}\nsampler: {name: dynamic}\n")
    cfg = load_config("plain_variant", "tiny")
    assert cfg.base == "grpo" and cfg.reproduction == "plain_variant"
    # grpo's reproduction.yaml: loss.kl.beta 0.04 (the defaults say 0.0)
    assert cfg.loss.kl.beta == 0.04 and cfg.loss.kl.estimator == "k3"
    assert cfg.sampler.name == "dynamic"
    assert cfg.meta.title == "plain" and cfg.meta.status == "planned"  # grpo's: "reproduced"
    # grpo's profile_overrides.paper come along: 64 x 16, 1024 tokens, micro-batch 16
    p = load_config("plain_variant", "paper")
    assert (p.rollout.group_size, p.rollout.prompts_per_step) == (64, 16)
    assert p.rollout.max_new_tokens == 1024 and p.train.micro_batch_size == 16
    # no meta at all: the defaults', not grpo's
    _write(project, "no_meta", "sampler: {name: dynamic}\n")
    assert load_config("no_meta", "tiny").meta.title == ""
    # grpo itself has no base
    assert load_config("grpo", "tiny").base is None


def test_the_wave1_variants_now_train_with_grpos_kl():
    # these twelve wrote no loss.kl and trained with beta 0 before the base layer existed
    for slug in (
        "ada_grpo", "cures", "knapsack_rl", "mm_upt", "mmr1_vas", "s_grpo",
        "seed_grpo", "tlts", "ttrv", "unlikeliness", "vade", "xrpo",
    ):  # fmt: skip
        assert load_config(slug, "tiny").loss.kl.beta == 0.04, slug
    # the papers' own KL coefficients at paper scale (profile_overrides.paper)
    assert load_config("unlikeliness", "paper").loss.kl.beta == 0.1
    assert load_config("mm_upt", "paper").loss.kl.beta == 0.01
    assert load_config("mmr1_vas", "paper").loss.kl.beta == 0.01
    assert load_config("ada_grpo", "paper").loss.kl.beta == 0.001
    # and the ones whose papers drop KL say so
    for slug in ("dapo", "dr_grpo", "gspo", "gtpo", "disco", "grpo_care", "kdrl"):
        assert load_config(slug, "tiny").loss.kl.beta == 0.0, slug


def test_base_chain_layers_each_base_with_its_profile_overrides(project):
    _write(
        project,
        "child",
        "base: dapo\nmeta: {title: child}\nloss: {eps_high: 0.3}\n"
        "profile_overrides:\n  paper:\n    rollout: {group_size: 4}\n",
    )
    cfg = load_config("child", "tiny")
    assert cfg.base == "dapo"
    # from dapo: token_mean, dynamic sampling, beta 0 over grpo's 0.04; the child's eps_high
    assert cfg.loss.agg == "token_mean" and cfg.sampler.name == "dynamic"
    assert cfg.loss.kl.beta == 0.0 and cfg.loss.eps_high == 0.3
    assert [r.name for r in cfg.rewards] == ["correctness", "overlong"]
    # paper: grpo's block (64 x 16), then dapo's (16 x 512, lr 1e-6, minibatches 16), then child
    p = load_config("child", "paper")
    assert p.rollout.group_size == 4 and p.rollout.prompts_per_step == 512
    assert p.train.minibatches == 16 and p.sampler.max_rounds == 10
    assert p.meta.title == "child"
    # a grandchild: child < dapo < grpo
    _write(project, "grandchild", "base: child\n")
    g = load_config("grandchild", "tiny")
    assert g.base == "child" and g.loss.eps_high == 0.3 and g.meta.title == ""
    from grpo_core.config import base_chain

    assert base_chain("grandchild") == ["grpo", "dapo", "child", "grandchild"]


def test_errors_name_the_base_file_that_set_the_key(project):
    f = project / "reproductions" / "grpo" / "reproduction.yaml"
    f.write_text(f.read_text().replace("eps_low: 0.2", "eps_low: -0.2"))
    with pytest.raises(UserError) as e:
        load_config("cures", "tiny")  # cures writes no eps_low: grpo's file set it
    assert str(e.value).startswith(f"{f}: key 'loss.eps_low'")


def test_base_cycle_and_unknown_base(project):
    a = _write(project, "cyc_a", "base: cyc_b\n")
    _write(project, "cyc_b", "base: cyc_a\n")
    with pytest.raises(UserError, match="base cycle cyc_a -> cyc_b -> cyc_a") as e:
        load_config("cyc_a", "tiny")
    assert "key 'base'" in str(e.value)
    s = _write(project, "selfish", "base: selfish\n")
    with pytest.raises(UserError, match=f"{s}: key 'base': base cycle selfish -> selfish"):
        load_config("selfish", "tiny")
    a.write_text("base: dappo\n")
    with pytest.raises(UserError, match=r"key 'base': unknown reproduction 'dappo'.*'dapo'"):
        load_config("cyc_a", "tiny")


def test_renaming_a_component_drops_the_params_of_the_one_it_replaces(project):
    # xrpo's tiny block sets sampler params for xrpo; a child switching to uniform gets none
    _write(project, "xchild", "base: xrpo\nsampler: {name: uniform}\n")
    cfg = load_config("xchild", "tiny")
    assert cfg.sampler.name == "uniform" and cfg.sampler.params == {}
    assert cfg.advantage.params == {"lam": 1.0, "kappa": 0.5}  # not renamed: kept
    # params given with the new name are used
    cfg = load_config("xrpo", "tiny", ["sampler={name: uniform, params: {pool: 480}}"])
    assert cfg.sampler.params == {"pool": 480}


def test_diff_of_dapo_hand_checked():
    from grpo_core.config import UNSET, config_diff, format_diff

    f = "reproductions/dapo/reproduction.yaml"
    rows = config_diff("dapo", "tiny")
    # dapo.yaml against grpo.yaml under tiny: the overlong reward, clip-higher, token mean,
    # no KL, dynamic sampling with 3 rounds; nothing else differs
    assert rows == [
        ("rewards[1].name", UNSET, "overlong", f),
        ("rewards[1].weight", UNSET, 1.0, f),
        ("rewards[1].params.buffer", UNSET, 2, f),
        ("loss.eps_high", 0.2, 0.28, f),
        ("loss.agg", "seq_mean_token_mean", "token_mean", f),
        ("loss.kl.beta", 0.04, 0.0, f),
        ("sampler.name", "uniform", "dynamic", f),
        ("sampler.max_rounds", 4, 3, f),
    ]
    assert format_diff(rows)[3] == f"loss.eps_high: 0.2 -> 0.28   ({f})"
    assert format_diff(rows)[0] == f"rewards[1].name: (unset) -> overlong   ({f})"
    # paper profile: both sides take their profile_overrides.paper; grpo's 64 x 16 -> 16 x 512
    paper = {k: (a, b, s) for k, a, b, s in config_diff("dapo", "paper")}
    assert paper["rollout.group_size"] == (64, 16, f + " (profile_overrides.paper)")
    assert paper["rollout.prompts_per_step"] == (16, 512, f + " (profile_overrides.paper)")
    assert "run.device" not in paper and "meta.title" not in paper
    # grpo (no base) against the profile without a reproduction: only its KL
    g = "reproductions/grpo/reproduction.yaml"
    assert config_diff("grpo", "tiny") == [("loss.kl.beta", 0.0, 0.04, g)]


def _written_paths(v, prefix=()):
    out = {prefix}
    if isinstance(v, dict):
        for k, x in v.items():
            out |= _written_paths(x, (*prefix, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out |= _written_paths(x, (*prefix, i))
    return out


@pytest.mark.parametrize("repro", list_reproductions())
def test_nothing_differs_from_the_base_unless_the_yaml_says_so(repro):
    import yaml

    from grpo_core.config import _path_tuple, config_diff, list_profiles

    raw = yaml.safe_load((ROOT / "reproductions" / repro / "reproduction.yaml").read_text())
    for profile in list_profiles():
        own = {k: v for k, v in raw.items() if k not in ("meta", "profile_overrides")}
        written = _written_paths(own)
        written |= _written_paths((raw.get("profile_overrides") or {}).get(profile) or {})
        for key, *_ in config_diff(repro, profile):
            path = _path_tuple(key)
            prefixes = {path[:i] for i in range(1, len(path) + 1)}
            assert prefixes & written, f"{repro} --profile {profile}: {key} differs unwritten"


@pytest.mark.parametrize("repro", list_reproductions())
def test_readme_settings_block_is_the_current_diff(repro):
    from grpo_core.config import readme_settings_block, readme_settings_in_file

    have = readme_settings_in_file(repro)
    assert have is not None, f"{repro}/README.md has no `grpo diff` block"
    assert have == readme_settings_block(repro), (
        f"reproductions/{repro}/README.md: settings block is stale; "
        f"run `grpo diff --write-readme {repro}`"
    )


def _main(capsys, *args):
    """The CLI in-process (no interpreter start-up): (exit code, stdout, stderr)."""
    from grpo_core.cli import main

    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_diff_and_write_readme(project, capsys):
    rc, out, _ = _main(capsys, "diff", "dapo")
    assert rc == 0
    want = "loss.agg: seq_mean_token_mean -> token_mean   (reproductions/dapo/reproduction.yaml)"
    assert want in out.splitlines()
    readme = project / "reproductions" / "dapo" / "README.md"
    readme.write_text(readme.read_text().replace("token_mean   (", "STALE   ("))
    rc, out, _ = _main(capsys, "diff", "--write-readme", "dapo")
    assert rc == 0 and "updated: reproductions/dapo/README.md" in out
    assert "STALE" not in readme.read_text()
    rc, out, _ = _main(capsys, "diff", "--write-readme", "dapo")
    assert "unchanged: reproductions/dapo/README.md" in out
    rc, _, err = _main(capsys, "diff", "dappo")
    assert rc == 2 and "unknown reproduction 'dappo'" in err


def test_cli_list_fits_100_columns_with_base_and_wave(capsys):
    rc, out, _ = _main(capsys, "list")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["reproduction", "base", "tier", "status", "wave"]
    assert max(len(ln) for ln in lines) <= 100
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert rows["grpo"][1:3] == ["-", "A"] and rows["grpo"][-1] == "0"
    assert rows["dapo"][1] == "grpo" and rows["xrpo"][-1] == "1"


def test_new_scaffold_is_a_diff_over_grpo_with_a_settings_block(project, capsys):
    assert _main(capsys, "new", "my_variant2")[0] == 0
    d = project / "reproductions" / "my_variant2"
    assert "# base: grpo" in (d / "reproduction.yaml").read_text()
    text = (d / "README.md").read_text()
    assert "<!-- grpo diff: begin -->" in text and "(no differences)" in text
    cfg = load_config("my_variant2", "tiny")
    assert cfg.base == "grpo" and cfg.loss.kl.beta == 0.04


def test_every_component_declares_params_and_defaults_match_the_runtime():
    from grpo_core import advantages, losses, rewards, samplers, tasks
    from grpo_core.config import SamplerCfg
    from grpo_core.registry import Params

    regs = [
        advantages.ADVANTAGES, losses.POLICY_LOSSES, losses.REGULARISERS,
        losses.TOKEN_WEIGHTS, rewards.REWARDS, samplers.SAMPLERS, tasks.TASKS,
    ]  # fmt: skip
    for reg in regs:
        for name in reg.names():
            model = reg.params_model(name)
            assert issubclass(model, Params), (reg.kind, name)
            assert model.model_config["extra"] in ("forbid", "allow")
    # derived from the signature: overlong_reward(ctx, buffer: int = 4, max_len: int | None)
    ov = rewards.REWARDS.params_model("overlong")
    assert ov().model_dump() == {"buffer": 4, "max_len": None}
    # correctness takes one param (tw_grpo's soft multiple choice), default exact
    assert rewards.REWARDS.params_model("correctness")().model_dump() == {"choice": "exact"}
    # the samplers' runtime params (SAMPLERS.resolve_params) are the models' defaults
    for name in ("knapsack", "cures", "vade", "vas", "xrpo"):
        s = samplers.SAMPLERS.get(name)(100, SamplerCfg(name=name), 0)
        want = samplers.SAMPLERS.params_model(name)().model_dump()
        assert want.pop("pool") is None and s.p == want, name
    aepo = samplers.SAMPLERS.get("aepo")(100, SamplerCfg(name="aepo"), 0)
    assert aepo.p == samplers.SAMPLERS.params_model("aepo")().model_dump()
    # the advantage / loss defaults, read off the estimators' code
    P = advantages.ADVANTAGES.params_model
    assert P("gtpo")().model_dump() == {"h_max": 0.7, "gamma": 0.1}
    assert P("xrpo_novelty")().model_dump() == {"lam": 1.0, "kappa": 0.5}
    assert P("seed_grpo")().model_dump() == {"alpha": 0.5, "f": "linear", "mass": "likelihood"}
    assert P("reinforce_baseline")().model_dump() == {
        "baseline": "mean", "tau": 1.0, "delta": 0.0, "scale": 1.0,
    }  # fmt: skip
    L = losses.POLICY_LOSSES.params_model
    assert L("disco")().model_dump() == {
        "tau": 10.0, "beta": 1000.0, "delta": 1e-4, "score": "logp", "kl": "k3",
        "hinge_on": "minibatch",
    }  # fmt: skip
    assert losses._disco_params(LossCfg(name="disco")) == L("disco")().model_dump()
    dyn = samplers.SAMPLERS.get("dynamic")(100, SamplerCfg(name="dynamic"), 0)
    assert dyn.metric == samplers.SAMPLERS.params_model("dynamic")().metric == "acc"
    T = losses.TOKEN_WEIGHTS.params_model
    assert T("tw_grpo")().on == "policy_kl" and T("gtpo_conflict")().count == "max"
    assert L("reg_grpo")().model_dump() == {"scale": "std", "min_std": 0.1, "beta": 1.0}
    assert L("ppo_clip").model_fields == {}


def test_a_params_model_must_match_a_keyword_signature():
    from grpo_core.params import LldsParams
    from grpo_core.registry import Registry

    reg = Registry("thing", leading_args=1)
    with pytest.raises(TypeError, match="does not match the signature"):
        reg.register("x", params=LldsParams)(lambda ctx, min_adv=0.5: None)
    reg.register("y", params=LldsParams)(lambda ctx, min_adv=0.0: None)
    reg.register("z")(lambda ctx, k=3, **rest: None)
    assert reg.params_model("z").model_validate({"k": 1, "other": 2})  # **rest lets keys through


def test_range_boundaries_accepted():
    ok = [
        "rollout.group_size=2", "rollout.top_p=1.0", "rollout.temperature=0.01",
        "loss.eps_low=0.0", "loss.eps_high=0.0", "loss.dual_clip=1.01", "loss.kl.beta=0.0",
        "train.steps=1", "train.mu=1", "train.warmup_steps=0", "eval.k=1",
        "eval.temperature=0.0", "sft.steps=0", "train.max_grad_norm=null",
    ]  # fmt: skip
    cfg = load_config("grpo", "tiny", ok)
    assert cfg.rollout.group_size == 2 and cfg.eval.temperature == 0.0
    assert cfg.train.max_grad_norm is None and cfg.loss.dual_clip == 1.01


def test_duplicate_yaml_key_names_file_line_and_key(project):
    f = project / "config" / "profiles" / "tiny.yaml"
    f.write_text(f.read_text().replace("  group_size: 8\n", "  group_size: 8\n  group_size: 4\n"))
    with pytest.raises(UserError) as e:
        load_config("grpo", "tiny")
    lines = f.read_text().splitlines()
    n = lines.index("  group_size: 4") + 1
    assert str(e.value) == (
        f"{f}:{n}: duplicate key 'rollout.group_size' (first set on line {n - 1}); keep one of them"
    )
