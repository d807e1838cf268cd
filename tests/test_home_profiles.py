"""Home profiles: a reproduction whose meta.profile names its own tiny-scale profile (own task,
own warm start) runs there from a workflow on the default profile, with that profile's grpo."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_core.config import expand_reproductions, home_profiles

ROOT = Path(__file__).resolve().parents[1]


def test_home_profiles_split_on_the_default_profile_only():
    names = ["grpo", "dapo", "rank_grpo", "rank_grpo-no_loss"]
    split = home_profiles(names, "tiny")
    assert split == {
        "tiny": ["grpo", "dapo"],
        "tiny_rec": ["grpo", "rank_grpo", "rank_grpo-no_loss"],
    }
    # on any other profile everything runs in place (its profile_overrides carry the task)
    assert home_profiles(names, "paper") == {"paper": names}
    assert home_profiles(names, "tiny_rec") == {"tiny_rec": names}


@pytest.mark.slow
def test_wave2_names_rank_grpo_and_the_snakefile_runs_it_in_tiny_rec(tmp_path):
    assert "rank_grpo" in expand_reproductions(["wave2"])
    env = {
        **os.environ,
        "GRPO_ROOT": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"), "-d"]
    cmd += [str(tmp_path), "--config", "reproductions=[grpo,rank_grpo]", "seeds=[0]"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    # rank_grpo trains on tiny_rec's task from tiny_rec's start, beside tiny_rec's grpo ...
    assert "results/tiny_rec/runs/rank_grpo/seed0/train.done" in out
    assert "results/tiny_rec/runs/grpo/seed0/train.done" in out
    assert "results/tiny_rec/report.md" in out
    # ... never on the tiny profile's task
    assert "results/tiny/runs/rank_grpo" not in out
    assert "results/tiny/runs/grpo/seed0/train.done" in out


def test_every_home_profile_has_a_module_block_in_the_snakefile():
    import re

    from grpo_core.config import list_profiles, list_reproductions, reproduction_meta

    text = (ROOT / "Snakefile").read_text()
    blocks = set(re.findall(r"^    module (\w+):$", text, flags=re.M))
    homes = {reproduction_meta(s).get("profile") for s in list_reproductions()} - {None, ""}
    assert homes, "no reproduction names a home profile"
    assert homes <= set(list_profiles()), homes - set(list_profiles())
    assert homes <= blocks, f"no module block for {homes - blocks}"
    m = re.search(r"MODULE_PROFILES = \{(.*?)\}", text, flags=re.S)
    assert blocks == set(re.findall(r'"(\w+)"', m[1]))


def test_a_committed_summary_without_its_runs_still_trains(tmp_path):
    """A fresh clone has results/<profile>/summary.csv (committed) but no runs and no .snakemake
    metadata: Snakemake alone would call the summary up to date and train nothing. The
    aggregate marker (named by the hash of the requested inputs, local-only) makes it run."""
    res = tmp_path / "results" / "tiny_agent"
    res.mkdir(parents=True)
    (res / "summary.csv").write_text((ROOT / "results/tiny_agent/summary.csv").read_text())
    (res / "report.md").write_text("# committed\n")
    env = {
        **os.environ,
        "GRPO_ROOT": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }

    def dry(seeds):
        cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(ROOT / "Snakefile")]
        cmd += ["-d", str(tmp_path), "--config", "profile=tiny_agent", "reproductions=[grpo]", seeds]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-3000:]
        return out

    out = dry("seeds=[0]")
    assert "results/tiny_agent/runs/grpo/seed0/train.done" in out, out[-3000:]
    assert "rule aggregate" in out
    # a marker from an earlier request (seed 0 only) does not hide a new seed's runs
    marks = [line.split("output: ")[1] for line in out.splitlines() if "aggregate-" in line and "output:" in line]
    assert marks, out[-3000:]
    mark = next(p.strip() for p in marks[0].split(",") if "aggregate-" in p)
    (tmp_path / mark).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / mark).touch()
    out = dry("seeds=[0,1]")
    assert "results/tiny_agent/runs/grpo/seed1/train.done" in out, out[-3000:]
