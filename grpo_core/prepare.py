"""Prepare a profile's starting model: build (tiny) or convert (smollm2) it, then SFT warm-start
it on the task's train split so that GRPO starts from a policy that solves part of the test set.

Writes <results>/<profile>/base/init (the untrained model) and <results>/<profile>/base/model
(the GRPO starting point, after SFT when sft.steps > 0). With workflow.seeded_start each run
seed has its own start: base/seed<S>/{init,model}, built (initial weights of the tiny model) and
SFT'd (batch order) with run.seed = S (`grpo prepare --seed S`).
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import torch

from grpo_core.config import Config, base_dir
from grpo_core.episodes import (
    Env,
    SingleTurnEnv,
    chat_ids,
    episode_seed,
    make_envs,
    observation_ids,
    single_turn_prompts,
)
from grpo_core.errors import UserError
from grpo_core.models import (
    build_bpe_tokenizer,
    build_char_tokenizer,
    build_tiny_model,
    build_tiny_vl_model,
    build_tiny_vl_tokenizer,
    convert_smollm2,
    load_model_and_tokenizer,
    param_count,
)
from grpo_core.runtime import setup_torch
from grpo_core.tasks import make_task


def prepare(cfg: Config, threads: int | None = None, log=print) -> Path:
    setup_torch(cfg, threads)
    out = base_dir(cfg)
    init, final = out / "init", out / "model"
    name = cfg.model.name_or_path
    if name == "tiny":
        if cfg.model.tiny.tokenizer == "bpe":
            tok = build_bpe_tokenizer(tokenizer_corpus(cfg), cfg.model.tiny.vocab_size)
        else:
            tok = build_char_tokenizer()
        model = build_tiny_model(cfg.model.tiny, tok, seed=cfg.run.seed)
        model.save_pretrained(init, safe_serialization=True)
        tok.save_pretrained(init)
    elif name == "tiny_vl":  # a tiny Qwen2.5-VL: model.tiny's text sizes, the char tokenizer
        tok = build_tiny_vl_tokenizer()
        model = build_tiny_vl_model(cfg.model.tiny, tok, seed=cfg.run.seed)
        model.save_pretrained(init, safe_serialization=True)
        tok.save_pretrained(init)
    elif name == "smollm2":
        convert_smollm2(init)
    else:
        init = Path(name)
    model, tok = load_model_and_tokenizer(str(init), cfg.run.dtype, cfg.run.device)
    log(f"base model {name}: {param_count(model) / 1e6:.2f}M parameters")
    if cfg.sft.steps > 0:
        sft(model, tok, cfg, log=log)
        tmp = final.with_name("model.tmp")
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    else:
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(init, final)
    return final


def tokenizer_corpus(cfg: Config) -> list[str]:
    """The texts a fitted tiny tokenizer is trained on: per train problem, the text of its gold
    conversation when the env is multi-turn and gives gold actions (every observation's
    messages and every action), else the task prompt's messages and the SFT target. Only the
    train split: test problems are tokenized with what the train text taught."""
    task = make_task(cfg.task)
    train = task.train()
    texts: list[str] = []
    if cfg.env.name == "single_turn":
        env = SingleTurnEnv(None, cfg.task.template, {})
    else:
        (env,) = make_envs(cfg.env, task, cfg.task.template, 1)
    gold = type(env).gold_actions is not Env.gold_actions
    for i, p in enumerate(train):
        texts += [m["content"] for m in env.reset(p, episode_seed(cfg.run.seed, i)).messages]
        if not gold:
            texts.append(task.sft_target(p))
            continue
        for a in (env.gold_actions(p) or [])[: cfg.env.max_turns]:
            texts.append(a)
            res = env.step(a)
            if res.done or res.observation is None:
                break
            texts += [m["content"] for m in res.observation.messages]
    return texts


def gold_conversation(
    env: Env, problem, seed: int, tok, max_turns: int, max_tokens=None, processor=None
):
    """``(prompt, completion, labels)`` of the episode that plays ``env.gold_actions(problem)``
    in ``env`` (reset here): the first observation's ids, then per action its tokens + EOS
    (labelled) and, while the game goes on, the observation's tokens (labels -100), exactly the
    trajectory grpo_core.episodes.run_episodes builds for a policy that emits those actions (it
    stops at the game's end, after ``max_turns`` actions, or where the next observation would
    make the trajectory reach ``max_tokens``). None when the env has no gold actions.
    ``processor`` (a VLM's, grpo_core.vision.VideoProcessor): observations with media have
    their placeholder expanded and the row's media tensors are returned as a 4th element
    (first observation's, then each later one's, as grpo_core.episodes.run_episodes builds)."""
    from grpo_core.rollout import eos_token_ids

    first = env.reset(problem, seed)
    prompt = chat_ids(tok, first.messages)
    media = None
    if first.media is not None:
        from grpo_core.episodes import media_prompts

        (prompt,), (media,) = media_prompts(processor, [prompt], [first.media])
    actions = env.gold_actions(problem)
    if actions is None:
        return None
    if not actions:
        raise UserError(f"env {type(env).__name__}: no gold actions for problem {problem.id}")
    eos, end = eos_token_ids(tok), tok.eos_token_id
    comp: list[int] = []
    labels: list[int] = []
    for t, a in enumerate(actions[:max_turns]):
        ids = tok(a, add_special_tokens=False).input_ids + [end]
        comp, labels = comp + ids, labels + ids
        res = env.step(a)
        if res.done or res.observation is None or t + 1 >= max_turns or t + 1 >= len(actions):
            break
        obs = observation_ids(tok, res.observation.messages, eos)
        shown = None
        if res.observation.media is not None:
            if processor is None:
                raise UserError(
                    "the env shows media in a later observation: its gold conversation needs "
                    "a VLM processor (model.name_or_path: tiny_vl, or a Qwen2.5-VL checkpoint)"
                )
            obs, shown = processor.process(obs, res.observation.media)
        if max_tokens is not None and len(prompt) + len(comp) + len(obs) >= max_tokens:
            break
        comp, labels = comp + obs, labels + [-100] * len(obs)
        if shown is not None:
            from grpo_core.vision import append_media

            media = append_media(media, shown)
    if processor is not None:
        return prompt, comp, labels, media
    return prompt, comp, labels


def multi_turn_rows(cfg: Config, task, problems: list, tok, model=None) -> list[tuple] | None:
    """SFT rows of the whole gold conversations when ``cfg.env`` is multi-turn and its env
    gives gold actions (:meth:`grpo_core.episodes.Env.gold_actions`); None otherwise. With a
    VLM ``model`` each row has its media tensors as a 4th element (None where it shows none)."""
    if cfg.env.name == "single_turn":
        return None
    (env,) = make_envs(cfg.env, task, cfg.task.template, 1)
    if type(env).gold_actions is Env.gold_actions:
        return None
    from grpo_core.vision import VideoProcessor

    proc = None if model is None else VideoProcessor.from_model(model)
    rows = []
    for i, p in enumerate(problems):
        row = gold_conversation(
            env,
            p,
            episode_seed(cfg.run.seed, i),
            tok,
            cfg.env.max_turns,
            cfg.env.max_tokens,
            **({} if proc is None else {"processor": proc}),
        )
        if row is None:
            raise UserError(f"env.name={cfg.env.name}: no gold actions for problem {p.id}")
        rows.append(row)
    return rows


def media_rows(cfg: Config, task, problems: list, tok, model) -> list[tuple] | None:
    """SFT rows ``(prompt, target, labels, media)`` when the env's first observations carry
    media (video_mc): the prompt with its video tokens expanded by the VLM's processor
    (grpo_core.vision), the task's SFT target + EOS; None for an env without media."""
    if cfg.env.name == "single_turn" or not problems:
        return None
    from grpo_core.episodes import media_prompts
    from grpo_core.vision import VideoProcessor

    (env,) = make_envs(cfg.env, task, cfg.task.template, 1)
    obs = env.reset(problems[0], episode_seed(cfg.run.seed, 0))
    if obs.media is None:
        return None
    proc = VideoProcessor.from_model(model)
    rows = []
    for i, p in enumerate(problems):
        obs = env.reset(p, episode_seed(cfg.run.seed, i))
        (prompt,), (m,) = media_prompts(proc, [chat_ids(tok, obs.messages)], [obs.media])
        target = tok(task.sft_target(p), add_special_tokens=False).input_ids + [tok.eos_token_id]
        rows.append((prompt, target, target, m))
    return rows


REFEREE_DISTRACTORS = (10, -10, 1, -1)  # a lost / extra carry, a wrong last digit


def referee_rows(cfg: Config, task, train: list, tok) -> list[tuple]:
    """URPO's referee warm start (``sft.referee_frac``): for the first round(frac x n) train
    problems with an integer answer, the pairwise referee prompt of the urpo sampler
    (:meth:`grpo_core.samplers.UrpoSampler.referee_prompt`) over the answer and the distractor
    answer + d, d = 10, -10, 1, -1 in turn (the answer + 10 when that would be negative), in
    the sampler's seeded order (run seed, step 0, problem index); the target is the answer."""
    from grpo_core.samplers import UrpoSampler
    from grpo_core.schema import SamplerCfg
    from grpo_core.tasks import render_prompt

    judge = UrpoSampler(len(train), SamplerCfg(name="urpo"), cfg.run.seed)
    eos = tok.eos_token_id
    rows = []
    for i, p in enumerate(train[: round(cfg.sft.referee_frac * len(train))]):
        try:
            g = int(p.answer)
        except ValueError:
            continue
        w = g + REFEREE_DISTRACTORS[i % len(REFEREE_DISTRACTORS)]
        a, b, _ = judge.referee_pair(p.answer, [str(w if w >= 0 else g + 10)], [False], 0, i)
        msg = judge.referee_prompt(render_prompt(cfg.task.template, p), a, b)
        target = tok(task.sft_target(p), add_special_tokens=False).input_ids + [eos]
        rows.append((chat_ids(tok, [{"role": "user", "content": msg}]), target, target))
    return rows


def sft_param_groups(model, sft_cfg) -> list[dict]:
    """AdamW parameter groups of the SFT warm start: the text model at ``sft.lr``, a VLM's
    vision tower and merger (names containing ``visual``) at ``sft.lr * sft.vision_lr_mult``
    (lr 0, so unchanged, when the multiplier is 0); with ``sft.merger_lr_mult`` set, the
    merger (``visual.merger``) at ``sft.lr * sft.merger_lr_mult`` instead."""
    vis, merger, rest = [], [], []
    for n, p in model.named_parameters():
        parts = n.split(".")
        if "visual" not in parts:
            rest.append(p)
        elif sft_cfg.merger_lr_mult is not None and "merger" in parts:
            merger.append(p)
        else:
            vis.append(p)
    groups = [{"params": rest, "lr": sft_cfg.lr}]
    if vis:
        groups.append({"params": vis, "lr": sft_cfg.lr * sft_cfg.vision_lr_mult})
    if merger:
        groups.append({"params": merger, "lr": sft_cfg.lr * sft_cfg.merger_lr_mult})
    return groups


def sft(model, tok, cfg: Config, log=print) -> None:
    """Supervised warm start: cross-entropy (optionally label-smoothed) on the gold answer (the
    task's sft_target) + EOS, prompt tokens masked out; AdamW with a linear decay to
    lr * min_lr_ratio. With a multi-turn env that has gold actions: on the whole gold
    conversation (:func:`gold_conversation`; the env's observations masked out too)."""
    task = make_task(cfg.task)
    train = task.train()
    eos = tok.eos_token_id
    rows = multi_turn_rows(cfg, task, train, tok, model)
    media = None  # per row a VLM's media tensors (an env that shows video)
    if rows is not None and rows and len(rows[0]) == 4:  # gold conversations with media
        if all(r[3] is None for r in rows):
            rows = [r[:3] for r in rows]
        else:
            rows, media = [r[:3] for r in rows], [r[3] for r in rows]
    if rows is None and (mrows := media_rows(cfg, task, train, tok, model)) is not None:
        rows, media = [r[:3] for r in mrows], [r[3] for r in mrows]
    if rows is None:
        rows = []
        # the first observation of the single-turn episode on each problem
        prompts = single_turn_prompts(tok, cfg.task.template, train)
        for p, prompt in zip(train, prompts):
            target = tok(task.sft_target(p), add_special_tokens=False).input_ids + [eos]
            rows.append((prompt, target, target))
        if cfg.sft.referee_frac > 0:  # URPO's referee format, taught beside the player's
            rows += referee_rows(cfg, task, train, tok)
    opt = torch.optim.AdamW(sft_param_groups(model, cfg.sft), weight_decay=0.0)
    rng = random.Random(cfg.run.seed)
    model.train()
    t0 = time.perf_counter()
    steps = cfg.sft.steps
    floor = cfg.sft.min_lr_ratio
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: floor + (1.0 - floor) * (1.0 - s / max(steps, 1))
    )
    order = list(range(len(rows)))
    for step in range(steps):
        if media is not None:  # (the same draws as rng.sample(rows, k): rows by index)
            pick = rng.sample(order, min(cfg.sft.batch_size, len(rows)))
            batch, batch_media = [rows[i] for i in pick], [media[i] for i in pick]
        else:
            batch = rng.sample(rows, min(cfg.sft.batch_size, len(rows)))
        width = max(len(a) + len(b) for a, b, _ in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (a, b, lab) in enumerate(batch):
            seq = a + b
            off = width - len(seq)  # left padding, as in rollouts
            ids[i, off:] = torch.tensor(seq)
            attn[i, off:] = 1
            labels[i, off + len(a) :] = torch.tensor(lab)
        if media is not None:  # the VLM's pixel inputs and 3-D rotary positions
            from grpo_core.vision import vlm_inputs

            logits = model(**vlm_inputs(model, ids, attn, batch_media)).logits[:, :-1]
        else:
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels[:, 1:].reshape(-1),
            ignore_index=-100,
            label_smoothing=cfg.sft.label_smoothing,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"sft step {step}/{steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)")
        if cfg.sft.max_seconds and time.perf_counter() - t0 > cfg.sft.max_seconds:
            log(f"sft stopped at step {step} (sft.max_seconds)")
            break
    model.eval()
