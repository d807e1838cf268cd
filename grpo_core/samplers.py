"""Samplers: which prompts a step trains on, and how many generation rounds fill the batch.

A sampler has ``next_prompts(n) -> list[int]`` (indices into the train split),
``group_sizes(indices, G) -> list[int]`` (rollouts per prompt; G each unless the sampler allocates
a budget), ``keep(groups: list of 1-D reward tensors) -> bool mask`` deciding which sampled groups
enter the batch, ``update(stats) -> dict | None`` after each step (stats: "indices", "problems",
"rewards" [N], "group_sizes", "step" of all kept groups; a returned dict is logged as
"sampler/<key>"), and ``state_dict`` / ``load_state_dict`` for exact resume.
"""

from __future__ import annotations

import random

import torch

from grpo_core.config import SamplerCfg
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


def make_sampler(cfg: SamplerCfg, n_items: int, seed: int):
    return SAMPLERS.get(cfg.name, "sampler.name")(n_items, cfg, seed)
