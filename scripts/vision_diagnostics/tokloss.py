# ruff: noqa: E702  (one-off diagnostics, kept as they were run)
"""Per question type: NLL of the claim's content tokens and of the answer letter, own clip vs
another problem's clip (what the SFT start reads and what it guesses)."""

import sys

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer

from grpo_core.config import load_config
from grpo_core.prepare import media_rows
from grpo_core.tasks import make_task
from grpo_core.vision import vlm_inputs

torch.set_num_threads(1)
cfg = load_config("grpo", "tiny_video")
for kv in sys.argv[2:]:
    k, v = kv.split("=")
    exec(f"cfg.{k} = {v}")
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1]).eval()
task = make_task(cfg.task)
split = task.train()[:200]
rows = media_rows(cfg, task, split, tok, model)
res = {}
for i, (p, r) in enumerate(zip(split, rows)):
    prompt, target, _, media = r
    tgt = tok.decode(target[:-1])
    for kind, m in (("own", media), ("shuf", rows[(i + 1) % len(rows)][3])):
        ids = torch.tensor([prompt + target])
        attn = torch.ones_like(ids)
        with torch.no_grad():
            lg = model(**vlm_inputs(model, ids, attn, [m])).logits[0, len(prompt) - 1 : -1]
        nll = -torch.log_softmax(lg, -1).gather(-1, torch.tensor(target)[:, None])[:, 0].numpy()
        s = tgt.index("</think>")
        a = tgt.index("<answer>") + len("<answer>")
        d = res.setdefault((p.meta["qtype"], kind), [[], [], []])
        d[0].append(nll[len("<think>") : s].sum())
        d[1].append(nll[a])
        d[2].append(nll.sum())
for k in sorted(res):
    v = [np.mean(x) for x in res[k]]
    print(
        f"{k[0]:9s} {k[1]:5s} n={len(res[k][0])} claim {v[0]:.3f} letter {v[1]:.3f} total {v[2]:.3f}"
    )
