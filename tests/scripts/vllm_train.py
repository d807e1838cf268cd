"""Run under the vLLM venv (spawned by tests/test_vllm.py): prepare the smoke profile's base
model, train grpo for a few steps with rollout.engine=vllm (token-level IS correction), then
`grpo eval` the checkpoint greedily on both engines (<run>/eval_vllm and <run>/eval_hf)."""

import sys

from grpo_core.cli import main

if __name__ == "__main__":
    results, steps = sys.argv[1], sys.argv[2]
    common = ["--profile", "smoke", "--threads", "1"]
    tiny = ["model.tiny.num_heads=1", "model.tiny.num_kv_heads=1", f"run.results_dir={results}"]
    rc = main(["prepare", *common, *tiny])
    if rc:
        sys.exit(rc)
    rc = main(
        [
            "train",
            "grpo",
            *common,
            "--no-progress",
            *tiny,
            "rollout.engine=vllm",
            "rollout.is_correction=token",
            # the smoke model rarely answers exactly: a format term gives every step a
            # reward spread, so the policy is sure to move
            "rewards=[{name: correctness, weight: 1.0}, {name: format, weight: 0.5}]",
            f"train.steps={steps}",
        ]
    )
    if rc:
        sys.exit(rc)
    run = f"{results}/smoke/runs/grpo/seed0"
    for engine in ("vllm", "hf"):
        rc = main(
            ["eval", "grpo", *common, *tiny, f"rollout.engine={engine}", "eval.temperature=0"]
            + ["eval.k=1", "--out", f"{run}/eval_{engine}"]
        )
        if rc:
            sys.exit(rc)
