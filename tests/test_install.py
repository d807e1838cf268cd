"""Installing the project: the wheel carries defaults.yaml, the profiles and the reproductions
(setup.py copies them to grpo_core/_data/), config.project_root() falls back to that copy outside
a checkout, a non-editable install runs `grpo list` and a smoke training from any directory, and
requirements.lock pins every dependency pyproject names within its range."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _git_files() -> list[str]:
    r = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in r.stdout.splitlines() if (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (no isolation, no downloads) from a copy of the checkout's files, so the
    checkout gets no build/ or egg-info and no stale build output gets in."""
    src = tmp_path_factory.mktemp("src")
    for f in _git_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_bytes((ROOT / f).read_bytes())
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("grpo_bench-*.whl")
    return whl


def test_wheel_ships_defaults_profiles_and_reproductions(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "grpo_core/defaults.yaml" in names
    profiles = sorted(p.name for p in (ROOT / "config" / "profiles").glob("*.yaml"))
    assert {"smoke.yaml", "tiny.yaml"} <= set(profiles)
    for p in profiles:
        assert f"grpo_core/_data/config/profiles/{p}" in names
    slugs = sorted(p.parent.name for p in (ROOT / "reproductions").glob("*/reproduction.yaml"))
    assert "grpo" in slugs
    for s in slugs:
        assert f"grpo_core/_data/reproductions/{s}/reproduction.yaml" in names
        if (ROOT / "reproductions" / s / "README.md").exists():
            assert f"grpo_core/_data/reproductions/{s}/README.md" in names
    # the package data pyproject used to name (folders that never existed) stays out
    assert not any(n.startswith(("grpo_core/configs/", "grpo_core/templates/")) for n in names)
    assert "grpo_core/environment.py" in names and "evals/evaluate.py" in names
    # the layers (tests/test_layers.py): the schema, the process set-up, tasks and grader
    for m in ("schema", "runtime", "tasks", "grader"):
        assert f"grpo_core/{m}.py" in names


def test_project_root_falls_back_to_the_packaged_copy(tmp_path, monkeypatch):
    """Outside a checkout (no $GRPO_ROOT, no reproductions/ + config/profiles/ above the cwd,
    none beside the package) the profiles and reproductions come from grpo_core/_data."""
    from grpo_core import config

    pkg = tmp_path / "site-packages" / "grpo_core"
    data = pkg / "_data"
    (data / "config" / "profiles").mkdir(parents=True)
    (data / "config" / "profiles" / "only.yaml").write_text("{}\n")
    (data / "reproductions" / "solo").mkdir(parents=True)
    (data / "reproductions" / "solo" / "reproduction.yaml").write_text("meta: {}\n")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.delenv("GRPO_ROOT", raising=False)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(config, "PACKAGE_DIR", pkg)
    monkeypatch.setattr(config, "PACKAGED_ROOT", data)
    assert config.project_root() == data
    assert config.profiles_dir() == data / "config" / "profiles"
    assert config.list_profiles() == ["only"]
    assert config.list_reproductions() == ["solo"]
    # a checkout in the cwd (or above it) still wins over the packaged copy
    (cwd / "reproductions").mkdir()
    (cwd / "config" / "profiles").mkdir(parents=True)
    assert config.project_root() == cwd.resolve()
    # and so does $GRPO_ROOT
    monkeypatch.setenv("GRPO_ROOT", str(tmp_path))
    assert config.project_root() == tmp_path.resolve()


def test_lock_pins_every_dependency_within_pyprojects_ranges():
    tomllib = pytest.importorskip("tomllib")  # python >= 3.11
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    lock = {}
    for ln in (ROOT / "requirements.lock").read_text().splitlines():
        if ln.strip() and not ln.startswith("#"):
            name, _, ver = ln.partition("==")
            assert ver, f"requirements.lock: {ln!r} is not an exact name==version pin"
            lock[canonicalize_name(name)] = Version(ver)
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in proj["dependencies"] + proj["optional-dependencies"]["dev"]]
    for r in reqs:
        name = canonicalize_name(r.name)
        assert name in lock, f"{r} (pyproject) is not pinned in requirements.lock"
        assert r.specifier.contains(lock[name], prereleases=True), (str(r), str(lock[name]))
    assert "grpo-bench" not in lock  # the project itself is installed from the checkout
    assert lock["torch"] == Version("2.13.0")  # the local label (+cpu) is dropped by lock.sh


def _venv_with_wheel(tmp_path: Path, whl: Path) -> Path:
    """A venv whose own site-packages holds only the wheel; the running interpreter's packages
    (torch, transformers, ...) are reachable behind it through a .pth line (no downloads). A
    venv's --system-site-packages would reach the base python's packages, not this venv's."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the wheel first (nothing else visible yet: pip sees no installed grpo-bench and never
    # touches another environment's; no PYTHONPATH, whose checkout may hold an egg-info)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRPO_ROOT")}
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps"]
        + ["--no-build-isolation", "--ignore-installed", str(whl)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_grpo_test_base.pth").write_text("".join(p + "\n" for p in sorted(here)))
    return venv


@pytest.mark.slow
def test_non_editable_install_lists_and_trains_outside_the_checkout(wheel, tmp_path):
    import json

    venv = _venv_with_wheel(tmp_path, wheel)
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("GRPO_ROOT", "PYTHONPATH")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")

    def run(*args):
        r = subprocess.run(
            [str(venv / "bin" / args[0]), *args[1:]],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        return r.stdout

    where = run("python", "-c", "import grpo_core.config as c; print(c.__file__, c.project_root())")
    code, root = where.split()
    assert code.startswith(str(venv)) and root.endswith("grpo_core/_data")  # not the checkout
    listing = run("grpo", "list")
    for slug in ("grpo", "dr_grpo", "dapo"):
        assert any(ln.split()[:1] == [slug] for ln in listing.splitlines()), listing
    run(
        "grpo",
        "train",
        "grpo",
        "--profile",
        "smoke",
        "--threads",
        "1",
        "--no-progress",
        "train.steps=1",
        f"run.results_dir={cwd / 'res'}",
    )
    run_dir = cwd / "res" / "smoke" / "runs" / "grpo" / "seed0"
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in rows] == [0]
    envinfo = json.loads((run_dir / "environment.json").read_text())
    assert envinfo["git"] == {"commit": None, "dirty": None}  # an installed wheel: no checkout
    assert envinfo["project_root"].endswith("grpo_core/_data")


# ------------------------------------------------------------------ the environment record


def _git_repo(d: Path) -> str:
    def g(*a):
        return subprocess.run(
            ["git", "-C", str(d), *a], capture_output=True, text=True, check=True
        ).stdout.strip()

    g("init", "-q")
    (d / "f.txt").write_text("a\n")
    g("add", "f.txt")
    g("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    return g("rev-parse", "HEAD")


def test_git_state_commit_dirty_and_not_a_checkout(tmp_path):
    from grpo_core.environment import git_state

    repo = tmp_path / "repo"
    repo.mkdir()
    sha = _git_repo(repo)
    assert git_state(repo) == {"commit": sha, "dirty": False}
    (repo / "f.txt").write_text("b\n")  # a tracked file changed
    git_state.cache_clear()
    assert git_state(repo) == {"commit": sha, "dirty": True}
    # a folder inside some other checkout (an installed package in a venv inside a repo) is not
    # the project's checkout: no commit rather than the enclosing repository's
    inner = repo / "venv" / "site-packages"
    inner.mkdir(parents=True)
    assert git_state(inner) == {"commit": None, "dirty": None}
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_state(outside) == {"commit": None, "dirty": None}


def test_environment_info_records_versions_cpu_capability_python_and_commit():
    import platform

    import torch

    from grpo_core.environment import environment_info, git_state

    info = environment_info("cpu")
    assert info["versions"]["torch"] == torch.__version__
    assert {"transformers", "math-verify", "datasets"} <= set(info["versions"])
    assert info["python"] == platform.python_version()
    assert info["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["git"] == git_state(ROOT)  # tests run from the checkout (editable or PYTHONPATH)


def test_trainer_environment_json_keeps_earlier_records_on_resume(tmp_path):
    import json

    from grpo_core.trainer import write_environment

    path = tmp_path / "environment.json"
    write_environment(path, "cpu", 0)
    first = json.loads(path.read_text())
    assert first["start_step"] == 0 and first["history"] == [] and first["device"] == "cpu"
    write_environment(path, "cpu", 3)  # a resume from step 3
    second = json.loads(path.read_text())
    assert second["start_step"] == 3
    assert [h["start_step"] for h in second["history"]] == [0]
    write_environment(path, "cpu", 5)
    assert [h["start_step"] for h in json.loads(path.read_text())["history"]] == [0, 3]
