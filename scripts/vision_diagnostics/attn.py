# ruff: noqa: E702  (one-off diagnostics, kept as they were run)
"""Where do the target positions attend (per layer: mass on <|user|>, on the video tokens, on
the rest), and the norm of the hidden states at the video tokens vs text tokens."""

import sys

import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer

from grpo_core.config import load_config
from grpo_core.prepare import media_rows
from grpo_core.tasks import make_task
from grpo_core.vision import vlm_inputs

torch.set_num_threads(1)
cfg = load_config("grpo", "tiny_video")
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], attn_implementation="eager").eval()
task = make_task(cfg.task)
probs = task.train()[:20]
rows = media_rows(cfg, task, probs, tok, model)
acc = None
for prompt, target, _, media in rows:
    ids = torch.tensor([prompt + target])
    attn = torch.ones_like(ids)
    with torch.no_grad():
        out = model(
            **vlm_inputs(model, ids, attn, [media]),
            output_attentions=True,
            output_hidden_states=True,
        )
    vid = ids[0] == model.config.video_token_id
    q = slice(len(prompt) - 1, ids.shape[1] - 1)
    per = []
    for a in out.attentions:  # [1, heads, S, S]
        w = a[0, :, q].mean(1)  # heads x S
        per.append(torch.stack([w[:, 0], w[:, vid].sum(-1), w[:, ~vid].sum(-1) - w[:, 0]], -1))
    per = torch.stack(per)  # layers x heads x 3
    acc = per if acc is None else acc + per
    hs = out.hidden_states[1][0]
print("layer x head: attention mass of the target positions on [<|user|>, video, other text]")
print((acc / len(rows)).numpy().round(2))
print(
    "hidden norm after layer 1: video",
    hs[vid].norm(dim=-1).mean().item(),
    "text",
    hs[~vid].norm(dim=-1).mean().item(),
)
