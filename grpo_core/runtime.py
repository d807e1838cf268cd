"""Process set-up shared by training, preparation and evaluation: torch's threads and
determinism (:func:`setup_torch`) and the per-step seeds (:func:`derive_seed`)."""

from __future__ import annotations

import torch

from grpo_core.schema import Config


def setup_torch(cfg: Config, threads: int | None = None) -> None:
    n = threads or cfg.run.threads
    if n:
        torch.set_num_threads(n)
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from (run seed, step, round, ...): generation is reproducible per step,
    so a resumed run samples exactly what an uninterrupted one would."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h
