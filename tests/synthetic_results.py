"""A fake results/<profile> tree for the report and claims tests: runs with metrics.jsonl,
resolved config.yaml (with meta.claims) and eval/<bench>.json, then summary.csv through the real
evals.aggregate.

Accuracies (arith_mix avg@4) per seed, chosen so that each verdict occurs:

  grpo    0.40 0.42 0.44
  better  0.60 0.62 0.64   delta +0.20, Welch CI [0.155, 0.245] (hand computation in
                           tests/test_claims.py)
  worse   0.20 0.22 0.24   delta -0.20, CI [-0.245, -0.155]
  noisy   0.30 0.55 0.50   delta +0.03, CI about [-0.30, 0.36]
  single  0.70             one seed: no CI
  sft_start 0.30           the starting checkpoint (seed 0 only)
"""

from __future__ import annotations

import json
from pathlib import Path

from evals.aggregate import aggregate
from grpo_core.config import Claim, load_config, save_config

ACC = {
    "grpo": [0.40, 0.42, 0.44],
    "better": [0.60, 0.62, 0.64],
    "worse": [0.20, 0.22, 0.24],
    "noisy": [0.30, 0.55, 0.50],
    "single": [0.70],
    "sft_start": [0.30],
}

CLAIMS = {
    "better": [
        Claim(text="better accuracy than GRPO", metric="avg@4", direction="higher"),
        Claim(
            text="same completion length",
            benchmark="train",
            metric="completion_len_mean",
            direction="equal",
            margin=1.0,
        ),
        Claim(text="accuracy within 2 points of GRPO", direction="equal", margin=0.02),
    ],
    "worse": [
        Claim(text="better accuracy than GRPO", direction="higher"),
        Claim(text="lower accuracy (a claim that it costs accuracy)", direction="lower"),
    ],
    "noisy": [
        Claim(text="better accuracy than GRPO", direction="higher"),
        Claim(text="a metric nobody measured", metric="pass@64", direction="higher"),
    ],
    "single": [Claim(text="better accuracy than GRPO", direction="higher")],
    "grpo": [Claim(text="the baseline's own claim is skipped", direction="higher")],
}

VERSIONS = {"python": "3.11.0", "torch": "2.13.0", "transformers": "5.19.0"}

# What every claim above must get (reproduction, claim text) -> verdict.
EXPECTED = {
    ("better", "better accuracy than GRPO"): "supported",
    ("better", "same completion length"): "supported",
    ("better", "accuracy within 2 points of GRPO"): "not supported",
    ("worse", "better accuracy than GRPO"): "not supported",
    ("worse", "lower accuracy (a claim that it costs accuracy)"): "supported",
    ("noisy", "better accuracy than GRPO"): "inconclusive",
    ("noisy", "a metric nobody measured"): "inconclusive",
    ("single", "better accuracy than GRPO"): "inconclusive",
}


def make_results(root: Path, profile: str = "synth") -> Path:
    """Write the tree under root/<profile>; return that directory (summary.csv included)."""
    prof = Path(root) / profile
    base = load_config("grpo", "smoke")
    for repro, accs in ACC.items():
        for seed, a in enumerate(accs):
            d = prof / "runs" / repro / f"seed{seed}"
            (d / "eval").mkdir(parents=True, exist_ok=True)
            (d / "eval" / "arith_mix.json").write_text(
                json.dumps(
                    {
                        "benchmark": "arith_mix",
                        "reproduction": repro,
                        "seed": seed,
                        "n_prompts": 50,
                        "k": 4,
                        "metrics": {
                            "avg@4": a,
                            "pass@1": a,
                            "pass@4": min(1.0, a + 0.2),
                            "maj@4": a,
                        },
                        "protocol": {
                            "temperature": 1.0,
                            "top_p": 1.0,
                            "max_new_tokens": 8,
                            "k": 4,
                            "template": "plain",
                            "engine": "hf",
                            "grader": "ArithMix.grade",
                            "versions": VERSIONS,
                        },
                    }
                )
            )
            if repro == "sft_start":
                continue
            cfg = base.model_copy(deep=True)
            cfg.reproduction = repro
            cfg.run.seed = seed
            cfg.meta.claims = list(CLAIMS.get(repro, []))
            save_config(cfg, d / "config.yaml")
            rows = [
                {
                    "step": i,
                    "reward_mean": a * i / 19,
                    "accuracy": a * i / 19,
                    "completion_len_mean": 3.0,
                    "entropy": 0.5 - 0.01 * i,
                    "kl": 0.001 * i,
                    "frac_zero_std_groups": 0.2,
                }
                for i in range(20)
            ]
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    aggregate(prof)
    return prof
