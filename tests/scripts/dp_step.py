"""One optimizer step of the trainer on a fixed hand-built batch; run plainly (one process) or
under torchrun (data parallel: each rank takes its contiguous share of the groups). Rank 0 saves
the summed loss and the (all-reduced) gradients to <out>.

    python tests/scripts/dp_step.py RESULTS_DIR REPRO OUT
    torchrun --nproc-per-node 2 tests/scripts/dp_step.py RESULTS_DIR REPRO OUT [fsdp]

With "fsdp" the model is FSDP2-sharded over the ranks (train.fsdp=true); the sharded gradients
are gathered to full tensors before saving.
"""

import sys

import torch

from grpo_core import distributed as dist
from grpo_core.config import load_config
from grpo_core.rollout import Rollouts
from grpo_core.trainer import Batch, Trainer

G, GROUPS, P, C = 4, 4, 5, 6


def hand_built_batch(trainer: Trainer) -> Batch:
    """16 sequences (4 groups of 4) with completion lengths 1..6 and fixed advantages."""
    g = torch.Generator().manual_seed(0)
    n = G * GROUPS
    vocab = trainer.model.config.vocab_size
    prompt_ids = torch.randint(7, vocab, (n, P), generator=g)
    prompt_mask = torch.ones(n, P, dtype=torch.long)
    prompt_mask[::3, :2] = 0  # some left padding
    completion_ids = torch.randint(7, vocab, (n, C), generator=g)
    lengths = torch.randint(1, C + 1, (n,), generator=g)
    completion_mask = (torch.arange(C)[None] < lengths[:, None]).long()
    advantages = torch.randn(n, generator=g)
    ro = Rollouts(prompt_ids, prompt_mask, completion_ids, completion_mask, ["stop"] * n, [""] * n)
    ref = trainer._logprobs_nograd(trainer.ref.model, ro) if trainer.ref is not None else None
    return Batch(ro, [None] * n, torch.zeros(n), advantages, None, ref)


def main(results: str, repro: str, out: str, mode: str = "ddp") -> None:
    torch.set_num_threads(1)
    cfg = load_config(
        repro,
        "smoke",
        [
            f"run.results_dir={results}",
            "workflow.seeded_start=false",  # the shared start prepared by tests/conftest.py
            "train.micro_batch_size=3",
            "train.minibatches=1",
            f"train.fsdp={mode == 'fsdp'}",
        ],
    )
    t = Trainer(cfg, None)
    batch = hand_built_batch(t)
    lo, hi = dist.shard_range(GROUPS)  # this rank's groups
    sel = list(range(lo * G, hi * G))
    ref = batch.ref_logp[sel] if batch.ref_logp is not None else None
    mine = Batch(
        batch.rollouts.select(sel),
        batch.problems[lo * G : hi * G],
        batch.rewards[sel],
        batch.advantages[sel],
        None,
        ref,
    )
    logs = t.optimize(mine)
    grads = {}
    for k, p in t.model.named_parameters():
        if p.grad is not None:  # (FSDP: every rank takes part in gathering the shards)
            g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            grads[k] = g.detach().clone()
    if dist.is_main():
        torch.save(
            {
                "loss": logs["loss"],
                "grad_norm": logs["grad_norm"],
                "grads": grads,
                "world": dist.world(),
                "sharded": t.fsdp,
                "n_local": len(sel),
            },
            out,
        )
    dist.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:5])
