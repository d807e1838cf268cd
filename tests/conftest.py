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
