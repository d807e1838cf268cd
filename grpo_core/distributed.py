"""Data-parallel helpers (torch.distributed): every rank holds the whole model, samples its share
of the step's prompts and trains on its own rollouts; gradients are summed across ranks.

Launch with torchrun (``torchrun --nproc-per-node 2 -m grpo_core.cli train grpo ...``): the env
variables RANK / WORLD_SIZE / MASTER_ADDR select the process group (nccl on GPUs, gloo on CPU).
With one process every helper is the identity, so the single-process trainer is unchanged.

Loss normalisation: each micro-batch's loss share divides by the *minibatch-global* sequence and
token counts (``all_sum`` of the per-rank counts), so summing gradients over ranks (``sum_grads``,
not averaging) gives exactly the gradient of the single-process loss on the union of the batches.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init(device: str = "cpu") -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); no-op otherwise."""
    if (
        dist.is_available()
        and not dist.is_initialized()
        and int(os.environ.get("WORLD_SIZE", 1)) > 1
    ):
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shard_range(n: int) -> tuple[int, int]:
    """This rank's contiguous share [lo, hi) of n items (the first n % world ranks get one more)."""
    w, r = world(), rank()
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def all_sum(x: float) -> float:
    """Sum of a Python number over ranks."""
    if not active():
        return x
    t = torch.tensor([float(x)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())


def all_min(x: int) -> int:
    if not active():
        return x
    t = torch.tensor([x], dtype=torch.long)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-d/2-d CPU tensor of each rank along dim 0, in rank order (any length)."""
    if not active():
        return x
    parts: list = [None] * world()
    dist.all_gather_object(parts, x.cpu())
    return torch.cat(parts)


def sum_grads(model) -> None:
    """All-reduce (sum) every parameter's gradient, flattened into one buffer per dtype."""
    if not active():
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # a rank whose micro-batches never touched a parameter still takes part
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list] = {}
    for p in params:
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for ps in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in ps])
        dist.all_reduce(flat)
        off = 0
        for p in ps:
            n = p.grad.numel()
            p.grad.copy_(flat[off : off + n].view_as(p.grad))
            off += n


def broadcast_params(model) -> None:
    """Make every rank start from rank 0's weights."""
    if not active():
        return
    for p in model.parameters():
        dist.broadcast(p.data, 0)


def barrier() -> None:
    if active():
        dist.barrier()
