"""LoRA through peft (model.lora): only the adapter trains, the reference is the policy with the
adapter disabled (no second copy), checkpoints hold a merged plain HF model and resume exactly."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from grpo_core.models import load_model_and_tokenizer, merged_state_dict  # noqa: E402
from grpo_core.trainer import Trainer, sequence_logprobs  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "dp_step", Path(__file__).parent / "scripts" / "dp_step.py"
)
_dp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_dp)
hand_built_batch = _dp.hand_built_batch  # 4 groups of 4, lengths 1..6, fixed advantages

LORA = ["model.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}"]


def _lp(model, ro):
    with torch.no_grad():
        lp, _ = sequence_logprobs(
            model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask
        )
    return lp


def test_lora_trains_only_the_adapter_and_uses_the_disabled_adapter_as_reference(
    smoke_cfg, tmp_path
):
    t = Trainer(smoke_cfg("grpo", [*LORA, "train.steps=3", "train.lr=0.05"]), tmp_path)
    assert t.ref.model is t.model and t.ref.kind == "adapter"  # no second model
    trainable = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # 2 layers x (q_proj, v_proj) x (A, B) = 8 adapter tensors in the optimizer
    assert sum(len(g["params"]) for g in t.opt.param_groups) == 8 == len(trainable)
    base0 = {
        k: v.clone() for k, v in t.model.get_base_model().state_dict().items() if "lora_" not in k
    }
    t.train(progress=False)  # the loop runs with LoRA (smoke rewards are flat: no update)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-7)  # B = 0: policy == reference at start
    # updates on a fixed batch with non-zero advantages move the adapter
    batch = hand_built_batch(t)
    for _ in range(3):
        t.optimize(batch)
    t.save_checkpoint(tmp_path / "checkpoint")
    ro = batch.rollouts
    base, _ = load_model_and_tokenizer(t.model_path)
    with t.model.disable_adapter():  # the reference: exactly the untouched base model
        torch.testing.assert_close(_lp(t.model, ro), _lp(base, ro))
    assert (_lp(t.model, ro) - _lp(base, ro)).abs().max() > 1e-3  # the policy moved
    # frozen base weights did not change
    for k, v in t.model.get_base_model().state_dict().items():
        if k in base0:
            assert torch.equal(v, base0[k]), k
    # the checkpoint is a plain HF model equal to the merged policy
    merged, _ = load_model_and_tokenizer(str(tmp_path / "checkpoint"))
    torch.testing.assert_close(_lp(merged, ro), _lp(t.model, ro), rtol=1e-4, atol=1e-5)
    sd = merged_state_dict(t.model)
    assert not any("lora_" in k or "base_layer" in k for k in sd)


def test_lora_resume_restores_the_adapter(smoke_cfg, tmp_path):
    cfg = smoke_cfg("grpo", [*LORA, "train.steps=2", "train.lr=0.05"])
    t = Trainer(cfg, tmp_path)
    t.train(progress=False)
    t.optimize(hand_built_batch(t))  # move the adapter (B != 0) before saving
    t.save_checkpoint(tmp_path / "checkpoint")
    t2 = Trainer(cfg, tmp_path)  # resumes from the checkpoint
    assert t2.step == 2
    assert any(v.abs().max() > 0 for k, v in t2.model.named_parameters() if "lora_B" in k)
    a = {k: v for k, v in t.model.named_parameters() if "lora_" in k}
    b = {k: v for k, v in t2.model.named_parameters() if "lora_" in k}
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_unknown_lora_target_is_a_clear_error(smoke_cfg):
    from grpo_core.errors import UserError

    with pytest.raises(UserError, match="target_modules.*not module names"):
        Trainer(smoke_cfg("grpo", ["model.lora={target_modules: [qkv]}"]), None)
