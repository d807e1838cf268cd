"""A decode loop over a pre-allocated KV cache with compaction (the ``hf_static`` rollout engine).

:func:`decode` samples a batch of left-padded prompts the way transformers' ``generate``
(the ``hf`` engine) does, without generate's per-step machinery (input preparation, logits
processor lists, stopping-criteria lists, growing ``torch.cat`` caches):

- prefill: one forward of the left-padded prompts [B, P] (position ids ``cumsum(mask) - 1``,
  padding positions 0, as generate) into :class:`PreallocCache`: per layer one K and one V
  buffer [B, H, P + max_new_tokens, D] allocated once; a step writes its column in place and
  attends over the filled prefix (a view, no copy);
- rows with the same prompt (a GRPO group) share one prefill: each distinct prompt runs once and
  its cache rows and last logits are copied to the rows that share it;
- each step: one forward of one token per row still running, position = the row's previous
  position + 1, the attention mask the prompt's padding mask with every generated column
  visible (a [b, 1, 1, L] mask built by slicing, for sdpa and eager attention);
- compaction: a row that emits an EOS id or completes a stop string (transformers'
  ``StopStringCriteria`` on prompt + generated ids, as generate) leaves the batch: its cache
  rows, mask and position are dropped (index_select), and later steps run only the rest;
- sampling (:func:`sample_next`): the same semantics and the same random draws as generate:
  float32 logits / temperature, top-p (transformers' ``TopPLogitsWarper``: ascending sort,
  drop tokens whose cumulative probability <= 1 - top_p, keep the top one), softmax, then
  ``argmax(probs / q)`` with ``q ~ Exp(1)`` of shape [B, V] drawn for the whole chunk each step
  while any row runs: this is exactly what ``torch.multinomial(probs, 1)`` computes (its
  one-sample path), so with the same seed the draws are the same numbers in the same order as
  generate's, whichever rows are still running. Greedy (temperature 0) is argmax, no draws.
- the sampled token's log-prob, ``log_softmax(logits / T)`` (T = 1 for greedy), before top-p:
  the distribution the trainer's policy pass computes (grpo_core.policy.sequence_logprobs).

Text-only, full-attention decoders (Llama / Qwen2 style); the engine falls back to generate for
media rows and for models with sliding-window layers (refused only when sampler log-probs are
asked of one).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from grpo_core.errors import UserError


class PreallocLayer(CacheLayerMixin):
    """One layer's K/V in buffers [B, H, max_len, D] allocated at the first update (the
    prefill); ``update`` writes the new columns in place and returns the filled prefix."""

    is_compileable = False
    is_sliding = False

    def __init__(self, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.length = 0

    def lazy_initialization(self, key_states, value_states) -> None:
        b, h, _, dk = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = key_states.new_zeros((b, h, self.max_len, dk))
        self.values = value_states.new_zeros((b, h, self.max_len, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        q = key_states.shape[-2]
        end = self.length + q
        if end > self.max_len:
            raise RuntimeError(f"PreallocLayer: {end} positions > the {self.max_len} allocated")
        self.keys[:, :, self.length : end] = key_states
        self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.max_len

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.keys = self.keys.index_select(0, indices)
            self.values = self.values.index_select(0, indices)


class PreallocCache(Cache):
    """A :class:`PreallocLayer` per decoder layer, all rows at the same length (left padding)."""

    def __init__(self, num_layers: int, max_len: int):
        super().__init__(layers=[PreallocLayer(max_len) for _ in range(num_layers)])


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """transformers' TopPLogitsWarper (min_tokens_to_keep=1): the smallest set of top tokens
    whose probability reaches top_p keeps its scores, the rest get -inf."""
    if top_p >= 1.0:
        return scores
    sorted_logits, sorted_idx = torch.sort(scores, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= (1 - top_p)
    remove[..., -1:] = False
    remove = remove.scatter(1, sorted_idx, remove)
    return scores.masked_fill(remove, -float("inf"))


def sample_next(
    logits: torch.Tensor,  # [b, V] float32
    temperature: float,
    top_p: float,
    noise: torch.Tensor | None = None,  # [b, V] Exp(1) draws; None: greedy
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [b], their log-probs [b]): greedy argmax at temperature 0, else argmax(probs /
    noise) over the temperature- and top-p-processed distribution (torch.multinomial's
    one-sample algorithm). Log-probs: log_softmax(logits / T) of the token, before top-p."""
    t = 1.0 if temperature == 0 else temperature
    scores = logits / t if t != 1.0 else logits
    logp_all = torch.log_softmax(scores, dim=-1)
    if temperature == 0:
        tok = torch.argmax(scores, dim=-1)
    else:
        probs = torch.softmax(top_p_filter(scores, top_p), dim=-1)
        tok = torch.argmax(probs / noise, dim=-1)
    return tok, logp_all.gather(-1, tok[:, None]).squeeze(-1)


def _unsupported_layers(model) -> list[str]:
    cfg = model.config.get_text_config(decoder=True)
    types = getattr(cfg, "layer_types", None) or ["full_attention"]
    bad = sorted({t for t in types if t != "full_attention"})
    if not bad and getattr(cfg, "use_sliding_window", False):
        bad = ["sliding_attention"]
    return bad


def supported(model) -> bool:
    """Whether the decode loop runs ``model``: full-attention decoder layers only."""
    return not _unsupported_layers(model)


def check_supported(model) -> None:
    bad = _unsupported_layers(model)
    if bad:
        raise UserError(
            f"rollout.engine=hf_static: the decode loop supports full-attention decoders only; "
            f"this model has {bad} layers; set rollout.engine: hf"
        )


def _decode_mask(amask: torch.Tensor, length: int, impl: str, dtype):
    """The attention mask of a one-token step over ``length`` cache columns: [b, 1, 1, L]
    (sdpa: bool, True = attend; eager: additive) or the 2D mask for other implementations."""
    m = amask[:, :length]
    if impl == "sdpa":
        return m[:, None, None, :]
    if impl == "eager":
        z = torch.zeros((), dtype=dtype, device=m.device)
        return torch.where(m, z, torch.finfo(dtype).min)[:, None, None, :]
    return m.long()


@torch.no_grad()
def decode(
    model,
    p_ids: torch.Tensor,  # [B, P] left-padded prompts (on the model's device)
    p_mask: torch.Tensor,  # [B, P]
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_ids: set[int],
    pad_id: int,
    stop_criteria=None,  # transformers StopStringCriteria, or None
    compact: bool = True,
    dedupe: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``max_new_tokens`` per row; returns (raw ids [B, S], log-probs [B, S]) on the
    CPU, S = the number of steps run (generate's width: it stops when every row finished),
    ``pad_id`` / 0 after a row's EOS or stop string. Draws from torch's global generator
    (seeded by the caller) exactly as generate's multinomial sampling does. ``compact``: drop
    finished rows from the batch; ``dedupe``: prefill each distinct prompt once and copy its
    cache rows to the rows that share it (the same numbers up to float rounding)."""
    dev = p_ids.device
    b_all, p_len = p_ids.shape
    cfg = model.config.get_text_config(decoder=True)
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    dtype = next(model.parameters()).dtype
    greedy = temperature == 0
    total = p_len + max_new_tokens
    cache = PreallocCache(cfg.num_hidden_layers, total)
    pos = (p_mask.long().cumsum(-1) - 1).masked_fill(p_mask == 0, 0)
    first = inv = None
    if dedupe:  # a GRPO batch holds each prompt G times: prefill each distinct prompt once
        uniq, inv = torch.unique(torch.cat([p_ids, p_mask.long()], 1), dim=0, return_inverse=True)
        if uniq.shape[0] < b_all:  # first[u]: the first row holding distinct prompt u
            first = torch.full((uniq.shape[0],), b_all, dtype=torch.long, device=dev)
            first = first.scatter_reduce(0, inv, torch.arange(b_all, device=dev), "amin")
    pre = slice(None) if first is None else first
    out = model(
        input_ids=p_ids[pre],
        attention_mask=p_mask[pre],
        position_ids=pos[pre],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    logits = out.logits[:, -1].float()
    del out
    if first is not None:  # distinct prompts [U] -> the chunk's rows [B]
        logits = logits.index_select(0, inv)
        cache.batch_select_indices(inv)
    vocab = logits.shape[-1]
    amask = torch.ones((b_all, total), dtype=torch.bool, device=dev)
    amask[:, :p_len] = p_mask.bool()
    next_pos = pos[:, -1:] + 1  # [b, 1]
    rows = torch.arange(b_all, device=dev)  # chunk row of each batch row
    alive = torch.ones(b_all, dtype=torch.bool, device=dev)  # (all True when compacting)
    eos_t = torch.tensor(sorted(eos_ids), dtype=torch.long, device=dev)
    ids = torch.full((b_all, total), pad_id, dtype=torch.long, device=dev)  # prompt + sampled
    ids[:, :p_len] = p_ids
    logps = torch.zeros((b_all, max_new_tokens), dtype=torch.float32, device=dev)
    steps = 0
    for t in range(max_new_tokens):
        noise = None
        if not greedy:  # generate's draw: Exp(1) for every row of the chunk, running or not
            noise = torch.empty((b_all, vocab), dtype=logits.dtype, device=dev).exponential_(1)
            noise = noise[rows] if rows.shape[0] != b_all else noise
        tok, lp = sample_next(logits, temperature, top_p, noise)
        tok = torch.where(alive, tok, pad_id)
        live_rows = rows[alive]
        ids[live_rows, p_len + t] = tok[alive]
        logps[live_rows, t] = lp[alive]
        steps = t + 1
        done = torch.isin(tok, eos_t)
        if stop_criteria is not None:
            done |= stop_criteria(ids[rows, : p_len + t + 1], None).to(dev)
        alive = alive & ~done
        if t == max_new_tokens - 1 or not bool(alive.any()):
            break
        if compact and not bool(alive.all()):
            keep = alive.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            rows, tok, next_pos, amask = rows[keep], tok[keep], next_pos[keep], amask[keep]
            alive = alive[keep]
        length = p_len + t + 1
        out = model(
            input_ids=tok[:, None],
            attention_mask=_decode_mask(amask, length, impl, dtype),
            position_ids=next_pos,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1].float()
        del out
        next_pos = next_pos + 1
    return ids[:, p_len : p_len + steps].cpu(), logps[:, :steps].cpu()
