"""The policy: the model being trained, as the trainer sees it. One interface, which a VLM
policy (a processor, media inputs, the model's own 3-D position ids) and a diffusion policy
(per-denoising-step log-probs) will implement too:

    policy.logprobs(rollouts, need={"logp", "entropy", "dist"}, grad=False, model=None)
        -> {"logp": [N, C], "entropy": [N, C], "dist": [N, C, V]}   (what was asked)
    policy.forward_logprobs(prompt_ids, prompt_mask, completion_ids, completion_mask,
                            with_entropy)                            (one micro-batch, grad)

``model``: another model of the same kind to run the same computation on (the reference).
:class:`CausalLMPolicy` is a causal LM from a Hub id or a local directory (AutoModelForCausalLM);
with ``prefix_grouper`` its passes encode each group's shared prompt once
(:func:`grouped_sequence_logprobs`);
:class:`VLMPolicy` a Qwen2.5-VL model whose rows carry media (``Rollouts.media``,
grpo_core.vision) and whose positions are its own 3-D rotary ids.
"""

from __future__ import annotations

import math

import torch

from grpo_core.losses import entropy_from_logits


def sequence_logprobs(
    model,
    prompt_ids: torch.Tensor,  # [b, P]
    prompt_mask: torch.Tensor,  # [b, P]
    completion_ids: torch.Tensor,  # [b, C]
    completion_mask: torch.Tensor,  # [b, C]
    temperature: float = 1.0,
    with_entropy: bool | str = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log pi(o_t | q, o_<t) of the completion tokens [b, C] (and entropies [b, C];
    with ``with_entropy="dist"`` instead the full log-distributions [b, C, V]).

    Logits are divided by the sampling temperature so the log-probs are those of the
    distribution the completions were drawn from. Only the C+1 last positions go through the
    LM head. Position ids skip the left padding, as in generation.
    """
    dev = next(model.parameters()).device  # batches live on the CPU, the model may not
    ids = torch.cat([prompt_ids, completion_ids], dim=1).to(dev)
    attn = torch.cat([prompt_mask, completion_mask], dim=1).to(dev)
    completion_ids = completion_ids.to(dev)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    c = completion_ids.shape[1]
    out = model(
        input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=c + 1, use_cache=False
    )
    logits = out.logits[:, :-1].float()  # [b, C, V]
    if temperature != 1.0:
        logits = logits / temperature
    logp = logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    if with_entropy == "dist":
        return logp, torch.log_softmax(logits, -1)
    ent = entropy_from_logits(logits) if with_entropy else None
    return logp, ent


def prefix_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[list, torch.Tensor]:
    """Runs of consecutive rows with the same prompt (ids and mask): (the first row of each run,
    [b] the run of each row). A GRPO batch holds a prompt's G rows next to each other."""
    first, gid = [], []
    for r in range(prompt_ids.shape[0]):
        same = bool(first) and (
            torch.equal(prompt_ids[r], prompt_ids[first[-1]])
            and torch.equal(prompt_mask[r], prompt_mask[first[-1]])
        )
        if not same:
            first.append(r)
        gid.append(len(first) - 1)
    return first, torch.tensor(gid, dtype=torch.long)


def grouped_sequence_logprobs(
    model,
    prompt_ids: torch.Tensor,  # [b, P]
    prompt_mask: torch.Tensor,  # [b, P]
    completion_ids: torch.Tensor,  # [b, C]
    completion_mask: torch.Tensor,  # [b, C]
    temperature: float = 1.0,
    with_entropy: bool | str = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`sequence_logprobs` with each shared prompt encoded once (train.prefix_grouper).

    Pass 1 runs the U distinct prompts [U, P] (left padded, the columns that are padding in all
    of them dropped) and keeps their KV cache and the last prompt position's logits (they
    predict every row's first completion token). The cache is indexed out to the b rows
    (index_select: the backward sums the G rows' gradients into their prompt's keys and
    values). Pass 2 runs the completions but their last token [b, C-1] on that cache, with the
    attention mask [prompt mask of the row's prompt, completion mask] and position ids that
    continue the prompt's (n_prompt_tokens + cumsum(completion_mask) - 1, as in the ungrouped
    pass). Each completion token sees exactly the keys it sees in the ungrouped pass, so the
    log-probs and the gradients are the same up to float rounding; the linear layers see
    U x P + b x (C - 1) tokens instead of b x (P + C).
    """
    dev = next(model.parameters()).device
    first, gid = prefix_groups(prompt_ids, prompt_mask)
    p_mask = prompt_mask[first]
    lead = int((p_mask.sum(0) > 0).long().argmax()) if bool(p_mask.any()) else 0
    p_ids = prompt_ids[first, lead:].to(dev)
    p_mask = p_mask[:, lead:].to(dev)
    gid = gid.to(dev)
    completion_ids = completion_ids.to(dev)
    completion_mask = completion_mask.to(dev)
    c = completion_ids.shape[1]
    p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=p_ids,
        attention_mask=p_mask,
        position_ids=p_pos,
        logits_to_keep=1,
        use_cache=True,
    )
    first_logits = out.logits[:, -1:].index_select(0, gid)  # [b, 1, V]
    # pass 2 always runs (two model calls per micro-batch for every C); with C = 1 on the one
    # token, whose logits are not needed
    k = max(c - 1, 1)
    cache = out.past_key_values
    cache.reorder_cache(gid)  # [U, ...] -> [b, ...] per layer (index_select)
    row_mask = p_mask.index_select(0, gid)
    attn = torch.cat([row_mask, completion_mask[:, :k]], dim=1)
    n_p = row_mask.sum(-1, keepdim=True)
    pos = (n_p + completion_mask[:, :k].cumsum(-1) - 1).clamp(min=0)
    out2 = model(
        input_ids=completion_ids[:, :k],
        attention_mask=attn,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=k,
    )
    logits = torch.cat([first_logits, out2.logits[:, : c - 1]], dim=1).float()  # [b, C, V]
    if temperature != 1.0:
        logits = logits / temperature
    logp = logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    if with_entropy == "dist":
        return logp, torch.log_softmax(logits, -1)
    ent = entropy_from_logits(logits) if with_entropy else None
    return logp, ent


def longest_first(ro, rows: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``rows`` of ``ro`` ordered by their token count, longest first (ties in batch
    order), so that each micro-batch holds rows of similar length (train.micro_batches:
    by_length). With ``groups`` (each row's group id; a loss that needs whole groups) the
    groups are ordered by their longest row and each keeps its rows together, in batch order."""
    n_tok = ro.prompt_mask[rows].sum(-1) + ro.completion_mask[rows].sum(-1)
    if groups is None:
        return rows[torch.argsort(-n_tok, stable=True)]
    g = groups[rows]
    longest = torch.zeros(int(g.max()) + 1, dtype=n_tok.dtype).scatter_reduce(0, g, n_tok, "amax")
    rank = torch.empty_like(longest, dtype=torch.long)
    rank[torch.argsort(-longest, stable=True)] = torch.arange(len(longest))
    return rows[torch.argsort(rank[g], stable=True)]


def trimmed(seq_logprobs):
    """``seq_logprobs`` (:func:`sequence_logprobs` or :func:`grouped_sequence_logprobs`) run on
    the rows' columns that hold a token in at least one row (train.micro_batches: by_length):
    the leading prompt columns and the trailing completion columns that are padding in every
    row are dropped, and the outputs are padded back to the completion width C. The dropped
    positions are padding (mask 0) in every row; they get log-prob 0 and entropy 0 (a
    log-distribution there is the uniform one), so a ratio of two such passes is 1 there.
    Kept positions see the same keys and position ids as in the untrimmed pass."""

    def run(
        model,
        prompt_ids,
        prompt_mask,
        completion_ids,
        completion_mask,
        temperature=1.0,
        with_entropy=False,
    ):
        c = completion_ids.shape[1]
        p_any, c_any = prompt_mask.any(0), completion_mask.any(0)
        lead = int(p_any.long().argmax())  # (no prompt token in any row: 0, nothing dropped)
        width = int(torch.nonzero(c_any).max()) + 1 if bool(c_any.any()) else 1
        logp, extra = seq_logprobs(
            model,
            prompt_ids[:, lead:],
            prompt_mask[:, lead:],
            completion_ids[:, :width],
            completion_mask[:, :width],
            temperature,
            with_entropy=with_entropy,
        )
        if width == c:
            return logp, extra
        logp = torch.nn.functional.pad(logp, (0, c - width))
        if extra is not None and with_entropy == "dist":
            v = extra.shape[-1]
            fill = torch.full(
                (*extra.shape[:1], c - width, v),
                -math.log(v),
                dtype=extra.dtype,
                device=extra.device,
            )
            extra = torch.cat([extra, fill], dim=1)
        elif extra is not None:
            extra = torch.nn.functional.pad(extra, (0, c - width))
        return logp, extra

    return run


class CausalLMPolicy:
    """A causal LM policy: the per-token log-probs of sampled completions at the sampling
    temperature (:func:`sequence_logprobs`), in micro-batches of ``micro_batch_size`` rows
    without gradient, or one micro-batch with it."""

    kind = "causal_lm"

    def __init__(
        self,
        model,
        tokenizer,
        temperature: float,
        micro_batch_size: int,
        prefix_grouper: bool = False,
        trim: bool = False,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.micro_batch_size = temperature, micro_batch_size
        # train.prefix_grouper: each shared prompt encoded once (grouped_sequence_logprobs)
        self.seq_logprobs = grouped_sequence_logprobs if prefix_grouper else sequence_logprobs
        # train.micro_batches: by_length: columns that are padding in all rows dropped, and the
        # no-grad passes take their micro-batches longest first
        self.trim = trim
        if trim:
            self.seq_logprobs = trimmed(self.seq_logprobs)

    def forward_logprobs(
        self, prompt_ids, prompt_mask, completion_ids, completion_mask, with_entropy=False
    ):
        """One micro-batch through the policy (gradient as the caller's context says):
        (log-probs [b, C], entropies / log-distributions or None)."""
        return self.seq_logprobs(
            self.model,
            prompt_ids,
            prompt_mask,
            completion_ids,
            completion_mask,
            self.temperature,
            with_entropy=with_entropy,
        )

    def logprobs(self, ro, need=("logp",), grad: bool = False, model=None) -> dict:
        """What ``need`` asks of rollouts ``ro`` (see the module docstring), on the CPU; without
        ``grad`` in micro-batches under no_grad. ``model``: run on this model instead of the
        policy's (the reference)."""
        need = set(need)
        if not need <= {"logp", "entropy", "dist"}:
            raise ValueError(f"unknown needs {sorted(need - {'logp', 'entropy', 'dist'})}")
        extra = "dist" if "dist" in need else ("entropy" in need)
        if "dist" in need and "entropy" in need:
            raise ValueError("ask for entropy and dist in separate calls")
        m = self.model if model is None else model
        mb = len(ro) if grad else self.micro_batch_size
        order = None  # by_length: rows longest first, put back in batch order at the end
        if self.trim and len(ro) > mb:
            order = longest_first(ro, torch.arange(len(ro)))
        lps, exs = [], []
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            for s in range(0, len(ro), mb):
                if order is None:
                    lp, ex = self._slice_logprobs(m, ro, s, s + mb, extra)
                else:
                    ix = order[s : s + mb]
                    lp, ex = self.seq_logprobs(
                        m,
                        ro.prompt_ids[ix],
                        ro.prompt_mask[ix],
                        ro.completion_ids[ix],
                        ro.completion_mask[ix],
                        self.temperature,
                        with_entropy=extra,
                    )
                lps.append(lp)
                exs.append(ex)

        def joined(parts):
            x = torch.cat(parts) if grad else torch.cat(parts).cpu()
            if order is not None:
                x = torch.empty_like(x).index_copy_(0, order.to(x.device), x)
            return x

        out = {}
        if "logp" in need:
            out["logp"] = joined(lps)
        if extra:
            out["dist" if extra == "dist" else "entropy"] = joined(exs)
        return out

    def _slice_logprobs(self, m, ro, s: int, e: int, extra):
        """Rows ``s:e`` of ``ro`` through model ``m`` (one micro-batch of :meth:`logprobs`)."""
        return self.seq_logprobs(
            m,
            ro.prompt_ids[s:e],
            ro.prompt_mask[s:e],
            ro.completion_ids[s:e],
            ro.completion_mask[s:e],
            self.temperature,
            with_entropy=extra,
        )


def vlm_sequence_logprobs(
    model,
    prompt_ids: torch.Tensor,  # [b, P]
    prompt_mask: torch.Tensor,  # [b, P]
    completion_ids: torch.Tensor,  # [b, C]
    completion_mask: torch.Tensor,  # [b, C]
    media: list[dict | None] | None,
    temperature: float = 1.0,
    with_entropy: bool | str = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`sequence_logprobs` of a VLM (Qwen2.5-VL): the rows' media tensors fill their
    prompts' video tokens and positions are the model's own 3-D rotary ids
    (grpo_core.vision.vlm_inputs: get_rope_index over the attention mask, left padding
    skipped)."""
    from grpo_core.vision import vlm_inputs

    dev = next(model.parameters()).device
    ids = torch.cat([prompt_ids, completion_ids], dim=1).to(dev)
    attn = torch.cat([prompt_mask, completion_mask], dim=1).to(dev)
    completion_ids = completion_ids.to(dev)
    c = completion_ids.shape[1]
    kw = vlm_inputs(model, ids, attn, media or [None] * len(ids))
    out = model(**kw, logits_to_keep=c + 1, use_cache=False)
    logits = out.logits[:, :-1].float()  # [b, C, V]
    if temperature != 1.0:
        logits = logits / temperature
    logp = logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    if with_entropy == "dist":
        return logp, torch.log_softmax(logits, -1)
    ent = entropy_from_logits(logits) if with_entropy else None
    return logp, ent


class VLMPolicy(CausalLMPolicy):
    """A vision-language policy (Qwen2.5-VL architecture): the same two methods, with each
    row's media (``Rollouts.media``) passed with its token ids (:func:`vlm_sequence_logprobs`).
    The reference is a model of the same kind (``model=``)."""

    kind = "vlm"

    def forward_logprobs(
        self,
        prompt_ids,
        prompt_mask,
        completion_ids,
        completion_mask,
        with_entropy=False,
        media=None,
    ):
        return vlm_sequence_logprobs(
            self.model,
            prompt_ids,
            prompt_mask,
            completion_ids,
            completion_mask,
            media,
            self.temperature,
            with_entropy=with_entropy,
        )

    def _slice_logprobs(self, m, ro, s: int, e: int, extra):
        media = ro.media[s:e] if ro.media is not None else [None] * len(ro.prompt_ids[s:e])
        return vlm_sequence_logprobs(
            m,
            ro.prompt_ids[s:e],
            ro.prompt_mask[s:e],
            ro.completion_ids[s:e],
            ro.completion_mask[s:e],
            media,
            self.temperature,
            with_entropy=extra,
        )


def make_policy(model, tokenizer, temperature: float, micro_batch_size: int):
    """:class:`VLMPolicy` for a model with a vision tower, else :class:`CausalLMPolicy`."""
    vc = getattr(getattr(model, "config", None), "vision_config", None)
    cls = VLMPolicy if vc is not None else CausalLMPolicy
    return cls(model, tokenizer, temperature, micro_batch_size)
