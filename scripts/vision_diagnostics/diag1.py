# ruff: noqa: E702  (one-off diagnostics, kept as they were run)
"""Pixel sensitivity of the tiny VLM's logits and the vision gradient / output statistics of
one SFT step (norm of the tower's output, its clip-dependent share): run on a fresh model, or
on a checkpoint given as the first argument."""

import sys

import torch

from grpo_core.config import load_config
from grpo_core.models import build_tiny_vl_model, build_tiny_vl_tokenizer
from grpo_core.prepare import media_rows
from grpo_core.tasks import make_task
from grpo_core.vision import vlm_inputs

torch.set_num_threads(1)
cfg = load_config("grpo", "tiny_video")
tok = build_tiny_vl_tokenizer()
if len(sys.argv) > 1:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(sys.argv[1])
else:
    model = build_tiny_vl_model(cfg.model.tiny, tok, seed=0)
task = make_task(cfg.task)
probs = task.train()[:16]
rows = media_rows(cfg, task, probs, tok, model)


def batch(rows, media):
    width = max(len(a) + len(b) for a, b, _, _ in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    attn = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (a, b, lab, _) in enumerate(rows):
        s = a + b
        off = width - len(s)
        ids[i, off:] = torch.tensor(s)
        attn[i, off:] = 1
        labels[i, off + len(a) :] = torch.tensor(lab)
    return vlm_inputs(model, ids, attn, media), labels


inp, labels = batch(rows, [r[3] for r in rows])
print({k: tuple(v.shape) for k, v in inp.items()})
print("video tokens per row", (inp["input_ids"] == model.config.video_token_id).sum(1).tolist())
model.eval()
with torch.no_grad():
    l0 = model(**inp).logits
    inp2 = dict(inp)
    inp2["pixel_values_videos"] = inp["pixel_values_videos"] + torch.randn_like(
        inp["pixel_values_videos"]
    )
    l1 = model(**inp2).logits
    inp3 = dict(inp)
    inp3["pixel_values_videos"] = inp["pixel_values_videos"][
        torch.randperm(len(inp["pixel_values_videos"]))
    ]
    l3 = model(**inp3).logits
    m = labels != -100
    print(
        "logit scale",
        l0[m].std().item(),
        "max abs diff noise",
        (l1 - l0)[m].abs().max().item(),
        "perm",
        (l3 - l0)[m].abs().max().item(),
    )
    # magnitude of the visual features vs text embeddings
    vis = model.model.visual if hasattr(model.model, "visual") else model.visual
    feats = vis(inp["pixel_values_videos"], grid_thw=inp["video_grid_thw"])
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    emb = model.get_input_embeddings().weight
    print(
        "vis feat",
        getattr(feats, "shape", None),
        "norm/token",
        feats.norm(dim=-1).mean().item(),
        "text emb norm",
        emb.norm(dim=-1).mean().item(),
    )
    print("vis feat std across tokens", feats.std(0).mean().item())
model.train()
out = model(**inp).logits[:, :-1]
loss = torch.nn.functional.cross_entropy(
    out.reshape(-1, out.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
)
loss.backward()
tot = {}
for n, p in model.named_parameters():
    if "visual" in n:
        print(
            f"  {n:60s} grad {0 if p.grad is None else p.grad.norm().item():.2e} param {p.norm().item():.2e}"
        )
g_text = (
    sum(
        (p.grad.norm() ** 2).item()
        for n, p in model.named_parameters()
        if "visual" not in n and p.grad is not None
    )
    ** 0.5
)
print("text grad norm", g_text, "loss", loss.item())
