import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GRPO_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> Path:
    """A results dir holding the smoke profile's prepared (built + SFT) base model."""
    from grpo_core.config import load_config
    from grpo_core.prepare import prepare

    res = tmp_path_factory.mktemp("results")
    # one shared start (base/model) for every seed; the seeded starts of the smoke profile are
    # tested in tests/test_seeded_start.py
    cfg = load_config(None, "smoke", [f"run.results_dir={res}", "workflow.seeded_start=false"])
    prepare(cfg, threads=1, log=lambda *a: None)
    return res


@pytest.fixture
def smoke_cfg(smoke_results):
    """Factory: a validated smoke config for a reproduction, writing under the shared results."""
    from grpo_core.config import load_config

    def make(repro="grpo", overrides=(), seed=0):
        return load_config(
            repro,
            "smoke",
            [
                f"run.results_dir={smoke_results}",
                "run.threads=1",
                "workflow.seeded_start=false",
                *overrides,
            ],
            seed=seed,
        )

    return make


@pytest.fixture(scope="session")
def prepared_start(tmp_path_factory):
    """Factory: ``prepared_start(profile, overrides)`` builds that profile's start (model +
    SFT, as `grpo prepare`) under a fresh results dir once per session and returns the dir
    (used by the env tests with a shrunken profile: tiny_gui, tiny_search)."""
    from grpo_core.config import load_config
    from grpo_core.prepare import prepare

    made: dict[tuple, Path] = {}

    def make(profile: str, overrides=()) -> Path:
        key = (profile, tuple(overrides))
        if key not in made:
            res = tmp_path_factory.mktemp(f"{profile}_results")
            cfg = load_config("grpo", profile, [f"run.results_dir={res}", *overrides])
            prepare(cfg, threads=1, log=lambda *a: None)
            made[key] = res
        return made[key]

    return make


@pytest.fixture
def spy_rollouts():
    """``seen = spy_rollouts(trainer)``: wraps ``trainer.episodes`` so that ``seen["ro"]``
    holds the first step's rollouts (and ``seen["ep"]`` its episodes) after training."""

    def install(tr) -> dict:
        seen: dict = {}
        orig = tr.episodes

        def spy(*a, **k):
            ro, ep = orig(*a, **k)
            seen.setdefault("ro", ro)
            seen.setdefault("ep", ep)
            return ro, ep

        tr.episodes = spy
        return seen

    return install
