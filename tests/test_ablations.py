"""Leave-one-out ablations from a reproduction's diff (issue 18): ``<reproduction>-no_<part>``
is the reproduction with one part of its diff over its base set back to the base's values
(grpo_core.config.ablation_parts / load_config), `snakemake --config ablate=...` runs them and
the report shows each one's delta vs the full reproduction (evals.aggregate.ablation_deltas)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from grpo_core.config import (
    DIFF_SKIP,
    _flatten,
    ablation_names,
    ablation_parts,
    config_diff,
    load_config,
    run_dir,
)
from grpo_core.rundir import config_hash

ROOT = Path(__file__).resolve().parents[1]

DAPO_PARTS = {
    "rewards": ["rewards[1].name", "rewards[1].weight", "rewards[1].params.buffer"],
    "eps_high": ["loss.eps_high"],
    "agg": ["loss.agg"],
    "kl": ["loss.kl.beta"],
    "sampler": ["sampler.name", "sampler.max_rounds"],
}


def _flat(cfg) -> dict:
    return _flatten({k: v for k, v in cfg.model_dump(mode="json").items() if k not in DIFF_SKIP})


def test_parts_of_dapo():
    # dapo over grpo (tiny): overlong shaping, clip-higher, token mean, no KL, dynamic sampling
    assert ablation_parts("dapo", "tiny") == DAPO_PARTS
    assert ablation_names("dapo", "tiny") == [f"dapo-no_{p}" for p in DAPO_PARTS]
    # grpo is a diff over the bare profile (defaults < profile): its KL
    assert ablation_parts("grpo", "tiny") == {"kl": ["loss.kl.beta"]}
    assert load_config("grpo-no_kl", "tiny").loss.kl.beta == 0.0
    # the policy loss's name and params are one part; other loss keys are parts each
    parts = ablation_parts("gspo", "tiny")
    assert parts["loss"] == ["loss.name"] and "eps_low" in parts and "train" in parts


@pytest.mark.parametrize("part", list(DAPO_PARTS))
def test_ablation_differs_from_dapo_exactly_in_its_part(part):
    dapo, grpo = load_config("dapo", "tiny"), load_config("grpo", "tiny")
    abl = load_config(f"dapo-no_{part}", "tiny")
    a, d, g = _flat(abl), _flat(dapo), _flat(grpo)
    keys = set(a) | set(d)
    differ = {k for k in keys if a.get(k) != d.get(k)}
    assert differ == set(DAPO_PARTS[part])
    assert all(a.get(k) == g.get(k) for k in differ)  # set back to grpo's values
    # grpo diff of the ablation: vs dapo (its base), exactly the part's keys
    assert [k for k, *_ in config_diff(f"dapo-no_{part}", "tiny")] == DAPO_PARTS[part]
    assert abl.base == "dapo" and abl.reproduction == f"dapo-no_{part}"
    assert abl.meta.claims == [] and abl.meta.title.endswith(f"(without {part})")


def test_ablation_run_identity_overrides_and_seed(tmp_path):
    c = load_config("dapo-no_sampler", "smoke", [f"run.results_dir={tmp_path}"], seed=2)
    assert run_dir(c) == tmp_path / "smoke" / "runs" / "dapo-no_sampler" / "seed2"
    assert c.sampler.name == "uniform" and c.loss.eps_high == 0.28
    # command-line overrides still win over the reverted part
    c2 = load_config("dapo-no_sampler", "smoke", ["sampler.max_rounds=2"])
    assert c2.sampler.max_rounds == 2
    # its own run identity (config hash), not dapo's or grpo's
    hashes = {config_hash(load_config(n, "smoke")) for n in ("dapo", "dapo-no_sampler", "grpo")}
    assert len(hashes) == 3


def _synthetic_profile(tmp_path) -> Path:
    """A smoke-named results tree: grpo, dapo and dapo-no_sampler with eval files (avg@4 per
    seed below) and held-out curves, through the real aggregate."""
    from evals.aggregate import aggregate
    from evals.curves import sigmoid

    acc = {
        "grpo": [0.40, 0.42, 0.44],
        "dapo": [0.50, 0.52, 0.54],
        "dapo-no_sampler": [0.45, 0.46, 0.50],
    }
    asym = {"grpo": 0.6, "dapo": 0.7, "dapo-no_sampler": 0.65}
    prof = tmp_path / "smoke"
    for repro, accs in acc.items():
        for seed, a in enumerate(accs):
            d = prof / "runs" / repro / f"seed{seed}"
            (d / "eval").mkdir(parents=True)
            (d / "eval" / "arith_mix.json").write_text(
                json.dumps(
                    {
                        "benchmark": "arith_mix",
                        "reproduction": repro,
                        "seed": seed,
                        "metrics": {"avg@4": a},
                    }
                )
            )
            c = [0.0, *[1e10 * i for i in range(1, 13)]]  # compute grows linearly in steps
            r = sigmoid(c, 0.3, asym[repro] + 0.01 * seed, 1.2, 2e10)
            (d / "curve.jsonl").write_text(
                "".join(
                    json.dumps({"step": i, "flops_cum": x, "accuracy": float(y), "n": 8}) + "\n"
                    for i, (x, y) in enumerate(zip(c, r))
                )
            )
    aggregate(prof)
    return prof


def test_ablation_deltas_and_report(tmp_path):
    from evals.report import build_report, render_markdown

    prof = _synthetic_profile(tmp_path)
    ab = pd.read_csv(prof / "ablations.csv")
    row = ab[(ab.ablation == "dapo-no_sampler") & (ab.metric == "avg@4")].iloc[0]
    assert row["reproduction"] == "dapo" and row["part"] == "sampler"
    # means 0.47 vs 0.52: delta -0.05; paired differences -0.05, -0.06, -0.04: mean -0.05
    assert row["delta"] == pytest.approx(-0.05)
    assert row["paired_delta"] == pytest.approx(-0.05) and row["n_paired"] == 3
    # paired CI: sd 0.01, t_{0.975, 2} = 4.3027: -0.05 +- 4.3027 * 0.01 / sqrt(3) = +- 0.02484
    assert row["paired_ci_low"] == pytest.approx(-0.07484, abs=1e-4)
    a = ab[(ab.ablation == "dapo-no_sampler") & (ab.benchmark == "curve") & (ab.metric == "A")]
    assert a.iloc[0]["delta"] == pytest.approx(-0.05, abs=1e-3)  # asymptote 0.66 vs 0.71
    summary = pd.read_csv(prof / "summary.csv")
    s = summary[(summary.benchmark == "curve") & (summary.metric == "A")].set_index("reproduction")
    assert s.loc["dapo", "mean"] == pytest.approx(0.71, abs=1e-3)  # 0.70, 0.71, 0.72
    assert s.loc["dapo", "delta_vs_grpo"] == pytest.approx(0.1, abs=1e-3)
    curves = pd.read_csv(prof / "curves.csv").set_index("reproduction")
    assert curves.loc["grpo", "A"] == pytest.approx(0.61, abs=1e-3)
    assert curves.loc["grpo", "A_ci_low"] <= 0.61 <= curves.loc["grpo", "A_ci_high"]
    rep = build_report(prof, "t")
    secs = {s.id: s for s in rep.sections}
    assert "curve" not in secs  # the fits are not a benchmark table
    table = secs["scaling"].tables[0]
    assert [r[0] for r in table.rows] == ["grpo", "dapo", "dapo-no_sampler"]
    assert table.rows[0][2].startswith("61.0 [")
    assert secs["scaling"].plots and secs["scaling"].plots[0][1].exists()
    abl = secs["ablations"].tables[0]
    assert abl.rows == [
        [
            "dapo",
            "dapo-no_sampler",
            "sampler.name, sampler.max_rounds",
            "-5.0 pp [-7.5, -2.5] (paired)",
            abl.rows[0][4],
            abl.rows[0][5],
            "3",
        ]
    ]
    assert abl.rows[0][4].startswith("-5.0 pp")
    # the curves share B = 1.2 (fitted, so equal up to the fit): its delta is ~0
    assert abs(float(abl.rows[0][5].split()[0])) < 1e-6
    # the verdict names the part that moves the main metric (paired CI [-7.5, -2.5] pp) and A
    (verdict,) = [t for t in secs["ablations"].text if t.startswith("dapo: ")]
    assert "removing sampler moves avg@4 down" in verdict and "A down" in verdict
    assert "B up" not in verdict and "B down" not in verdict
    assert "Of 3 such comparisons about 0.2 would exclude 0 by chance" in verdict
    md = render_markdown(rep, prof)
    assert "## Leave-one-out ablations" in md and "## Compute-performance curves" in md
    # a claim can name the fit: dapo's A 0.70-0.72 vs grpo's 0.60-0.62
    from evals.claims import judge
    from grpo_core.config import Claim

    (v,) = judge(
        summary,
        {"dapo": [Claim(text="higher asymptote", benchmark="curve", metric="A")]},
    )
    assert v.verdict == "supported" and v.delta == pytest.approx(0.1, abs=1e-3)


@pytest.mark.slow
def test_snakemake_dry_run_lists_the_ablation_jobs(tmp_path):
    env = {
        **os.environ,
        "GRPO_ROOT": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile")]
    cmd += ["-d", str(tmp_path), "--config", "profile=smoke", "reproductions=[grpo]"]
    cmd += ["seeds=[0]", "ablate=dapo"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for name in ["grpo", "dapo", *[f"dapo-no_{p}" for p in DAPO_PARTS]]:
        assert f"results/smoke/runs/{name}/seed0/train.done" in out, name
        assert f"results/smoke/runs/{name}/seed0/eval/arith_mix.json" in out, name
    trains = [ln for ln in out.splitlines() if ln.split() == ["train", "7"]]
    assert trains, out[-2000:]
