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

Carried caches across the turns of an episode (:class:`KVCarry`, ``rollout.carry_kv``, off by
default): a multi-turn rollout re-sends each episode's whole trajectory every turn, so without
a carry every turn prefills it again. With a carry, every row's K/V over its real tokens is kept
when the row leaves the batch, and the next call prefills only the tokens after the longest
common prefix with a kept row (the new observation and the last sampled token). The cached and
the new columns sit in one pre-allocated cache, the cached ones right-aligned before column
``C``, the new ones left-padded in the next ``S`` columns (padding between them, masked out by
an explicit [B, 1, S, C + S] mask). Not bitwise equal to the uncarried path: the cached K/V come
from matmuls of other shapes, so log-probs differ in the last bits (benchmarks/README.md,
multiturn_prefill.py: |d log p| ~3e-6), and a sampled token differs when a uniform draw falls
that close to a cumulative-probability boundary; the random draws are the same numbers.
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


class KVCarry:
    """The K/V of rows that left :func:`decode`, for the next call of the same episodes (one
    :func:`grpo_core.episodes.run_episodes` call: the weights do not change inside it). Each
    entry is a row's real token ids (prompt + the sampled tokens that were forwarded) and per
    layer its K and V over them [H, L, D]. :meth:`match` finds for each new row the entry with
    the longest common token prefix; the entries of one call replace the previous call's."""

    def __init__(self):
        self.ids: list[torch.Tensor] = []  # per entry [L] token ids
        self.kv: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # per entry, per layer
        self._next_ids: list[torch.Tensor] = []
        self._next_kv: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self.hits = self.reused = self.prefilled = 0  # rows matched, tokens reused / prefilled

    def add(self, ids: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._next_ids.append(ids)
        self._next_kv.append(kv)

    def commit(self) -> None:
        """The rows kept in this call become the entries for the next one."""
        self.ids, self.kv = self._next_ids, self._next_kv
        self._next_ids, self._next_kv = [], []

    def match(self, rows: list[torch.Tensor]) -> tuple[list[int], list[int]]:
        """(entry index or -1, tokens to reuse) per row: the longest common prefix with an entry,
        at most the row's length - 1 (the last token is prefilled for its logits)."""
        if not self.ids or not rows:
            return [-1] * len(rows), [0] * len(rows)
        width = min(max(len(r) for r in rows), max(len(e) for e in self.ids))
        r = torch.full((len(rows), width), -1, dtype=torch.long)
        e = torch.full((len(self.ids), width), -2, dtype=torch.long)
        for i, x in enumerate(rows):
            x = x[:width]
            r[i, : len(x)] = x.cpu()
        for j, x in enumerate(self.ids):
            x = x[:width]
            e[j, : len(x)] = x.cpu()
        lcp = (r[:, None, :] == e[None, :, :]).long().cumprod(-1).sum(-1)  # [rows, entries]
        best, idx = lcp.max(-1)
        lengths = torch.tensor([len(x) for x in rows]) - 1
        use = torch.minimum(best, lengths)
        return [int(j) if u > 0 else -1 for j, u in zip(idx, use)], [int(u) for u in use]


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


def _mask_4d(allowed: torch.Tensor, impl: str, dtype):
    """A [b, 1, q, L] attention mask from ``allowed`` [b, q, L] (True = attend): bool for sdpa,
    additive for eager."""
    if impl == "eager":
        z = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, z, torch.finfo(dtype).min)[:, None]
    return allowed[:, None]


def _decode_mask(amask: torch.Tensor, length: int, impl: str, dtype):
    """The attention mask of a one-token step over ``length`` cache columns: [b, 1, 1, L]
    (sdpa: bool, True = attend; eager: additive) or the 2D mask for other implementations."""
    m = amask[:, :length]
    if impl in ("sdpa", "eager"):
        return _mask_4d(m[:, None, :], impl, dtype)
    return m.long()


def _carried_prefill(model, rows, entry, reuse, carry, max_new_tokens, pad_id, impl, dtype, dev):
    """A cache for C + S + max_new_tokens columns holding the reused K/V of each row
    (right-aligned before column C), then the rest of each row prefilled (left-padded in
    columns C..C+S). Returns (cache, last logits [B, V], attention mask [B, total]: the real
    columns and every generated one, next position [B, 1], C + S)."""
    b = len(rows)
    c_len = max(reuse)
    s_lens = [len(x) - u for x, u in zip(rows, reuse)]
    s_len = max(s_lens)
    width = c_len + s_len
    cfg = model.config.get_text_config(decoder=True)
    cache = PreallocCache(cfg.num_hidden_layers, width + max_new_tokens)
    amask = torch.ones((b, width + max_new_tokens), dtype=torch.bool, device=dev)
    amask[:, :width] = False
    new_ids = torch.full((b, s_len), pad_id, dtype=torch.long, device=dev)
    pos = torch.zeros((b, s_len), dtype=torch.long, device=dev)
    for layer_i, layer in enumerate(cache.layers):
        k0, v0 = next(carry.kv[j][layer_i] for j in entry if j >= 0)
        h, dk, dv = k0.shape[0], k0.shape[-1], v0.shape[-1]
        layer.dtype, layer.device = k0.dtype, dev
        layer.keys = k0.new_zeros((b, h, layer.max_len, dk), device=dev)
        layer.values = v0.new_zeros((b, h, layer.max_len, dv), device=dev)
        layer.is_initialized = True
        layer.length = c_len
        for i, (j, u) in enumerate(zip(entry, reuse)):
            if u > 0:
                k, v = carry.kv[j][layer_i]
                layer.keys[i, :, c_len - u : c_len] = k[:, :u]
                layer.values[i, :, c_len - u : c_len] = v[:, :u]
    for i, (x, u, n) in enumerate(zip(rows, reuse, s_lens)):
        amask[i, c_len - u : c_len] = True
        amask[i, width - n :] = True
        new_ids[i, s_len - n :] = x[u:].to(dev)
        pos[i, s_len - n :] = torch.arange(u, u + n, device=dev)
    # query q (column c_len + q) sees the real columns up to its own; a padding query sees
    # itself too (no row without a visible column: no NaN in its K/V at the next layer)
    cols = torch.arange(width, device=dev)
    causal = cols[None, :] <= (c_len + torch.arange(s_len, device=dev))[:, None]  # [S, W]
    allowed = amask[:, None, :width] & causal[None]
    pad_q = ~amask[:, c_len:width]  # [B, S]
    diag = torch.zeros_like(allowed)
    diag[:, torch.arange(s_len), c_len + torch.arange(s_len)] = True
    allowed = allowed | (diag & pad_q[:, :, None])
    out = model(
        input_ids=new_ids,
        attention_mask=_mask_4d(allowed, impl, dtype),
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    logits = out.logits[:, -1].float()
    carry.hits += sum(1 for u in reuse if u > 0)
    carry.reused += sum(reuse)
    carry.prefilled += sum(s_lens)
    next_pos = torch.tensor([len(x) for x in rows], dtype=torch.long, device=dev)[:, None]
    return cache, logits, amask, next_pos, width


def _keep_rows(carry, cache, batch_idx, amask, width, ids, p_mask, rows, p_len, steps):
    """Add the cache's batch rows ``batch_idx`` to ``carry``: their real token ids (prompt +
    the ``steps`` sampled tokens forwarded so far; ``rows``: each batch row's chunk row) and
    their K/V over the real columns of the first ``width``."""
    for b in batch_idx.tolist():
        r = int(rows[b])
        cols = amask[b, :width].nonzero().squeeze(-1)
        tok = torch.cat([ids[r, :p_len][p_mask[r].bool()], ids[r, p_len : p_len + steps]])
        kv = [
            (layer.keys[b, :, cols].clone(), layer.values[b, :, cols].clone())
            for layer in cache.layers
        ]
        carry.add(tok.cpu(), kv)


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
    carry: KVCarry | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``max_new_tokens`` per row; returns (raw ids [B, S], log-probs [B, S]) on the
    CPU, S = the number of steps run (generate's width: it stops when every row finished),
    ``pad_id`` / 0 after a row's EOS or stop string. Draws from torch's global generator
    (seeded by the caller) exactly as generate's multinomial sampling does. ``compact``: drop
    finished rows from the batch; ``dedupe``: prefill each distinct prompt once and copy its
    cache rows to the rows that share it (the same numbers up to float rounding). ``carry``
    (:class:`KVCarry`): reuse the K/V of the previous call's rows for the longest common token
    prefix of each row and keep this call's rows for the next (not bitwise equal: see the
    module docstring); rows that match nothing are prefilled whole."""
    dev = p_ids.device
    b_all, p_len = p_ids.shape
    cfg = model.config.get_text_config(decoder=True)
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    dtype = next(model.parameters()).dtype
    greedy = temperature == 0
    entry, reuse = [-1] * b_all, [0] * b_all
    if carry is not None:
        real = [p_ids[i][p_mask[i].bool()] for i in range(b_all)]
        entry, reuse = carry.match(real)
    if any(u > 0 for u in reuse):  # carried K/V for some rows: prefill the rest of each row
        cache, logits, amask, next_pos, width = _carried_prefill(
            model, real, entry, reuse, carry, max_new_tokens, pad_id, impl, dtype, dev
        )
    else:
        width = p_len
        total = p_len + max_new_tokens
        cache = PreallocCache(cfg.num_hidden_layers, total)
        pos = (p_mask.long().cumsum(-1) - 1).masked_fill(p_mask == 0, 0)
        first = inv = None
        if dedupe:  # a GRPO batch holds each prompt G times: prefill each distinct prompt once
            uniq, inv = torch.unique(
                torch.cat([p_ids, p_mask.long()], 1), dim=0, return_inverse=True
            )
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
        if carry is not None:
            carry.prefilled += int(p_mask.sum())
        amask = torch.ones((b_all, total), dtype=torch.bool, device=dev)
        amask[:, :p_len] = p_mask.bool()
        next_pos = pos[:, -1:] + 1  # [b, 1]
    vocab = logits.shape[-1]
    rows = torch.arange(b_all, device=dev)  # chunk row of each batch row
    alive = torch.ones(b_all, dtype=torch.bool, device=dev)  # (all True when compacting)
    eos_t = torch.tensor(sorted(eos_ids), dtype=torch.long, device=dev)
    # prompt + sampled (left-padded prompt columns, whatever layout the cache has)
    ids = torch.full((b_all, p_len + max_new_tokens), pad_id, dtype=torch.long, device=dev)
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
            if carry is not None:  # the leaving rows' K/V: prefill + the t tokens forwarded
                gone = (~alive).nonzero().squeeze(-1)
                _keep_rows(carry, cache, gone, amask, width + t, ids, p_mask, rows, p_len, t)
            cache.batch_select_indices(keep)
            rows, tok, next_pos, amask = rows[keep], tok[keep], next_pos[keep], amask[keep]
            alive = alive[keep]
        length = width + t + 1
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
    if carry is not None:  # the rows still in the batch: their last sampled token not forwarded
        every = torch.arange(rows.shape[0], device=dev)
        _keep_rows(
            carry, cache, every, amask, width + steps - 1, ids, p_mask, rows, p_len, steps - 1
        )
    return ids[:, p_len : p_len + steps].cpu(), logps[:, :steps].cpu()
