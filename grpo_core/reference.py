"""The reference policy: what KL terms, KL-in-reward and reference-reading components compare
the policy against. One interface, four kinds, chosen by the config:

- ``frozen``: another copy of the weights (``model.ref_name_or_path``, else the starting
  checkpoint), never trained: GRPO's reference; a teacher for KD-style regularisers (KDRL);
- ``adapter``: a LoRA policy with its adapter disabled (no second copy of the weights);
- ``ema``: a frozen copy moved towards the policy every ``model.ref_ema.every`` steps,
  ref <- decay * ref + (1 - decay) * policy (``model.ref_ema.decay``); its weights are training
  state, saved in the checkpoint;
- none: no reference is needed (``loss.kl.beta == 0``, no ``train.log_kl``, no EMA).

The trainer calls :meth:`Reference.context` around the reference's log-prob passes and
:meth:`Reference.after_step` after every optimizer step; a new kind (e.g. another run's
checkpoint as a reference, or a VLM's) implements the same four methods.
"""

from __future__ import annotations

import contextlib

import torch

from grpo_core.errors import UserError
from grpo_core.models import is_peft, load_model_and_tokenizer

STATE_FILE = "ref_ema.safetensors"  # in the checkpoint, when the reference is training state


class Reference:
    def __init__(self, model, kind: str, decay: float | None = None, every: int = 1):
        self.model, self.kind, self.decay, self.every = model, kind, decay, every

    def context(self):
        """A context in which :attr:`model` computes the reference's log-probs (the LoRA
        policy with its adapter disabled; any other reference as it is)."""
        if self.kind == "adapter" and is_peft(self.model):
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    @torch.no_grad()
    def after_step(self, step: int, policy_state) -> dict:
        """After optimizer step ``step`` (0-based): an EMA reference moves towards the policy
        every ``every`` steps; ``policy_state()`` gives the policy's full state dict. Returns
        what to log."""
        if self.kind != "ema" or (step + 1) % self.every:
            return {}
        src = policy_state()
        for k, v in self.model.state_dict().items():
            if k in src and v.is_floating_point():
                v.mul_(self.decay).add_(src[k].to(v.device, v.dtype), alpha=1.0 - self.decay)
        return {"ref_ema_update": 1.0}

    def state_tensors(self) -> dict[str, torch.Tensor] | None:
        """The reference's weights when they are training state (EMA), else None."""
        if self.kind != "ema":
            return None
        return {k: v.contiguous() for k, v in self.model.state_dict().items()}

    def load_state_tensors(self, sd: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(sd)


def make_reference(cfg, policy, model_path: str, ref_path: str | None) -> Reference | None:
    """The run's reference (see the module docstring), or None when nothing needs one."""
    ema = cfg.model.ref_ema
    if not (cfg.loss.kl.beta > 0 or cfg.train.log_kl or ema is not None):
        return None
    if cfg.model.lora is not None and cfg.model.ref_name_or_path is None:
        if ema is not None:
            raise UserError("model.ref_ema needs full fine-tuning (not model.lora)")
        return Reference(policy, "adapter")
    model, _ = load_model_and_tokenizer(ref_path or model_path, cfg.run.dtype, cfg.run.device)
    model.eval().requires_grad_(False)
    if ema is not None:
        return Reference(model, "ema", decay=ema.decay, every=ema.every)
    return Reference(model, "frozen")
