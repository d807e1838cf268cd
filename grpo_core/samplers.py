"""Samplers: which prompts a step trains on, and how many generation rounds fill the batch.

A sampler has ``next_prompts(n) -> list[int]`` (indices into the train split),
``group_sizes(indices, G) -> list[int]`` (rollouts per prompt; G each unless the sampler allocates
a budget), ``keep(groups: list of 1-D reward tensors) -> bool mask`` deciding which sampled groups
enter the batch, ``update(stats) -> dict | None`` after each step (stats: "indices", "problems",
"rewards" [N], "group_sizes", "step" of all kept groups, and "entropy", the step's token-mean
policy entropy; a returned dict is logged as
"sampler/<key>"), and ``state_dict`` / ``load_state_dict`` for exact resume.
"""

from __future__ import annotations

import random

import torch

from grpo_core.config import SamplerCfg
from grpo_core.errors import UserError, closest
from grpo_core.registry import Registry

SAMPLERS: Registry = Registry("sampler")


@SAMPLERS.register("uniform")
class UniformSampler:
    """Epochs over the shuffled train split; every sampled group is kept."""

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        self.n, self.cfg = n_items, cfg
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.pos = 0
        self.epoch = 0

    def next_prompts(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if self.pos >= len(self.order):
                self.order = list(range(self.n))
                self.rng.shuffle(self.order)
                self.pos, self.epoch = 0, self.epoch + 1
            out.append(self.order[self.pos])
            self.pos += 1
        return out

    @property
    def max_rounds(self) -> int:
        return 1

    def group_sizes(self, indices: list[int], group_size: int) -> list[int]:
        return [group_size] * len(indices)

    def keep(self, groups: list[torch.Tensor]) -> torch.Tensor:
        return torch.ones(len(groups), dtype=torch.bool)

    def update(self, stats: dict) -> dict | None:
        return None

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.getstate(),
            "order": self.order,
            "pos": self.pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, s: dict) -> None:
        st = s["rng"]
        self.rng.setstate((st[0], tuple(st[1]), st[2]))
        self.order, self.pos, self.epoch = list(s["order"]), s["pos"], s["epoch"]


@SAMPLERS.register("dynamic")
class DynamicSampler(UniformSampler):
    """DAPO dynamic sampling (Yu et al. 2025): drop groups whose rewards are all equal (zero
    advantage, no gradient) and keep generating until the batch holds ``prompts_per_step`` groups,
    at most ``cfg.max_rounds`` rounds; if the cap is hit the batch is trained as it is."""

    @property
    def max_rounds(self) -> int:
        return self.cfg.max_rounds

    def keep(self, groups: list[torch.Tensor]) -> torch.Tensor:
        return torch.tensor([bool(r.max() - r.min() > 1e-8) for r in groups], dtype=torch.bool)


@SAMPLERS.register("aepo")
class EntropyTargetSampler(UniformSampler):
    """AEPO (Wang et al. 2025, arXiv:2510.08141; the authors' verl trainer): hold the policy's
    entropy at a target with a REINFORCE term on samples of a temperature-adjusted policy.
    After each step the measured token entropy H (the training pass's, logged as ``entropy``)
    sets the next step's extra round (:meth:`grpo_core.trainer.Trainer._extra_round`): the first
    ``frac`` of the batch's prompts are sampled again (G each) at ``t_high`` if H <= ``target``
    else at ``t_low``; the completions whose advantage within their new group exceeds
    ``min_adv`` join the batch with advantage ``advantage``, at most ``max_rows`` of them (half
    that when cooling). No extra round before the first entropy is measured. Prompt order is
    the uniform sampler's."""

    DEFAULTS = {
        "target": 0.5,
        "t_high": 1.2,
        "t_low": 0.8,
        "frac": 0.25,
        "min_adv": 0.05,
        "max_rows": 60,
        "advantage": 1.0,
    }

    def __init__(self, n_items: int, cfg: SamplerCfg, seed: int):
        super().__init__(n_items, cfg, seed)
        for k in cfg.params:
            if k not in self.DEFAULTS:
                raise UserError(
                    f"sampler.params (aepo): unknown parameter {k!r}; {closest(k, list(self.DEFAULTS))}"
                )
        self.p = {**self.DEFAULTS, **cfg.params}
        if not 0 < float(self.p["frac"]) <= 1:
            raise UserError(f"sampler.params.frac must be in (0, 1], got {self.p['frac']}")
        self.entropy: float | None = None

    def extra_round(self, step: int) -> dict | None:
        if self.entropy is None:
            return None
        hot = self.entropy <= float(self.p["target"])
        cap = int(self.p["max_rows"])
        return {
            "temperature": float(self.p["t_high"] if hot else self.p["t_low"]),
            "frac": float(self.p["frac"]),
            "min_adv": float(self.p["min_adv"]),
            "max_rows": cap if hot else cap // 2,
            "advantage": float(self.p["advantage"]),
        }

    def update(self, stats: dict) -> dict | None:
        e = stats.get("entropy")
        if e is None or e != e:  # missing or NaN (no batch this step)
            return None
        self.entropy = float(e)
        return {"entropy_gap": self.entropy - float(self.p["target"])}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "entropy": self.entropy}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.entropy = s.get("entropy")


def make_sampler(cfg: SamplerCfg, n_items: int, seed: int):
    return SAMPLERS.get(cfg.name, "sampler.name")(n_items, cfg, seed)
