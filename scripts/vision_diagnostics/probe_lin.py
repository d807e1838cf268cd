# ruff: noqa: E702  (one-off diagnostics, kept as they were run)
"""Linear probes on the vision tower's output (8 merged tokens x 128, flattened) of video_mc
train clips: can the tokens carry count / the answer-relevant attribute?"""

import sys

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from grpo_core.config import load_config
from grpo_core.models import build_tiny_vl_model, build_tiny_vl_tokenizer
from grpo_core.tasks import make_task
from grpo_core.vision import VideoProcessor, collate_media, render_clip

torch.set_num_threads(1)
cfg = load_config("grpo", "tiny_video")
cfg.task.n_train = 3000
tok = build_tiny_vl_tokenizer()
if len(sys.argv) > 1:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(sys.argv[1])
else:
    model = build_tiny_vl_model(cfg.model.tiny, tok, seed=0)
model.eval()
proc = VideoProcessor.from_model(model)
probs = make_task(cfg.task).train()
vis = model.model.visual
feats, raw = [], []
with torch.no_grad():
    for i in range(0, len(probs), 100):
        ms = [
            proc.process([proc.video_token_id], {"video": render_clip(p.meta["scene"])})[1]
            for p in probs[i : i + 100]
        ]
        c = collate_media(ms)
        f = vis(c["pixel_values_videos"], grid_thw=c["video_grid_thw"])
        f = getattr(f, "pooler_output", f)
        feats.append(f.reshape(len(ms), -1).numpy())
        raw.append(c["pixel_values_videos"].reshape(len(ms), -1).numpy())
X, R = np.concatenate(feats), np.concatenate(raw)
for qt in ("count", "direction", "order"):
    ix = [i for i, p in enumerate(probs) if p.meta["qtype"] == qt]
    # label: the claim's content word (count n / direction / gold colour), i.e. what to read
    y = np.array(
        [
            probs[i].meta["claim"].split()[-1] if qt != "order" else probs[i].meta["claim"]
            for i in ix
        ]
    )
    if qt == "direction":  # condition on the target colour: only clips with one moving shape
        ix2 = [k for k, i in enumerate(ix) if len(probs[i].meta["scene"]["objects"]) == 1]
    else:
        ix2 = list(range(len(ix)))
    n = len(ix2)
    tr, te = ix2[: int(0.7 * n)], ix2[int(0.7 * n) :]
    for name, M in (("vision out", X), ("raw pixels", R)):
        Z = M[ix]
        Z = (Z - Z[tr].mean(0)) / (Z[tr].std(0) + 1e-6)
        clf = LogisticRegression(max_iter=2000, C=0.1).fit(Z[tr], y[tr])
        print(
            f"{qt:9s} {name:10s} n={n} classes={len(set(y))} test acc {clf.score(Z[te], y[te]):.3f} (majority {max(np.mean(y[te] == c) for c in set(y)):.3f})"
        )
