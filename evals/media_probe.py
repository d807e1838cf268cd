"""Does a VLM checkpoint read its clips? The gold targets' log-likelihood with each problem's own
clip against the same targets with another problem's clip (the next one's, in a fixed order).

A policy that uses the video scores its own clip's target higher (a lower NLL); a policy that
has learned only the answer format and the answer prior scores both the same. tiny_video's SFT
start (400 x 32, 2026-12-02) is the second kind: summed target NLL 49.49 with the own clip and
49.50 with a shuffled one on 60 test problems, identical per token to 3 decimals. GRPO cannot
raise accuracy above chance on such a start by reading the clip it ignores.

    python -m evals.media_probe results/tiny_video/base/seed0/model [--profile tiny_video] [--n 60] [--split test] [--level L1]

Per problem: the prompt as the env shows it (video placeholder expanded by the processor, the
chat template), the task's SFT target + EOS; NLL summed over the target's tokens. Printed:
the mean NLL with the own and the shuffled clip, their paired difference with a 95% t CI, and
the same per level / question type.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from evals.metrics import paired_diff_ci


def target_nll(model, rows: list[tuple]) -> list[float]:
    """Summed NLL of each row's target ``(prompt ids, target ids, media)`` given its prompt and
    media, one row at a time (no padding)."""
    from grpo_core.vision import vlm_inputs

    out = []
    for prompt, target, media in rows:
        ids = torch.tensor([list(prompt) + list(target)])
        attn = torch.ones_like(ids)
        with torch.no_grad():
            logits = model(**vlm_inputs(model, ids, attn, [media])).logits[0]
        lp = torch.log_softmax(logits[len(prompt) - 1 : -1].float(), -1)
        out.append(-float(lp.gather(-1, torch.tensor(target)[:, None]).sum()))
    return out


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of b - a over the problems with its 95% t CI (evals.metrics.paired_diff_ci; NaN
    CI for fewer than 2 pairs)."""
    m, lo, hi, _mde, _n = paired_diff_ci(dict(enumerate(b)), dict(enumerate(a)))
    return m, lo, hi


def probe(model, tok, cfg, problems: list) -> dict:
    """{"own": [...], "shuffled": [...], "groups": [...]} for ``problems`` (at least 2)."""
    from grpo_core.prepare import media_rows
    from grpo_core.tasks import make_task

    task = make_task(cfg.task)
    rows = media_rows(cfg, task, problems, tok, model)
    if rows is None:
        from grpo_core.errors import UserError

        raise UserError(f"env {cfg.env.name}: its observations carry no media; nothing to probe")
    own = target_nll(model, [(r[0], r[1], r[3]) for r in rows])
    shuffled = target_nll(
        model, [(r[0], r[1], rows[(i + 1) % len(rows)][3]) for i, r in enumerate(rows)]
    )
    groups = [f"{p.meta.get('level', '')}/{p.meta.get('qtype', '')}" for p in problems]
    return {"own": own, "shuffled": shuffled, "groups": groups}


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from grpo_core.config import load_config
    from grpo_core.tasks import make_task

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--profile", default="tiny_video")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--split", choices=["train", "test"], default="test")
    ap.add_argument(
        "--level",
        help="only the problems of this meta level (video_mc: L1; L2 / L3 targets name unseen "
        "colours, whose NLL swamps the L1 difference in the pooled mean)",
    )
    a = ap.parse_args(argv)
    cfg = load_config("grpo", a.profile)
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    model = AutoModelForImageTextToText.from_pretrained(a.model_dir).eval()
    task = make_task(cfg.task)
    problems = task.train() if a.split == "train" else task.test()
    if a.level:
        problems = [p for p in problems if p.meta.get("level") == a.level]
    problems = problems[: a.n]
    r = probe(model, tok, cfg, problems)
    m, lo, hi = paired(r["own"], r["shuffled"])
    n = len(r["own"])
    print(
        f"{n} {a.split} problems: target NLL own clip {sum(r['own']) / n:.4f}, shuffled "
        f"{sum(r['shuffled']) / n:.4f}; shuffled - own {m:+.4f} [95% CI {lo:+.4f}, {hi:+.4f}] "
        "(> 0: the model reads the clip)"
    )
    for g in sorted(set(r["groups"])):
        ix = [i for i, x in enumerate(r["groups"]) if x == g]
        gm = paired([r["own"][i] for i in ix], [r["shuffled"][i] for i in ix])[0]
        own = sum(r["own"][i] for i in ix) / len(ix)
        print(f"  {g}: {len(ix)} problems, own {own:.3f}, shuffled - own {gm:+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
