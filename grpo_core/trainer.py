"""The GRPO training loop, readable top to bottom.

    resolved config -> sampler picks prompts -> rollout engine generates G completions per prompt
      -> reward functions score them -> advantage estimator -> policy loss (+ KL, entropy) over
      mu epochs of minibatches -> optimizer step -> sampler.update -> metrics.jsonl -> checkpoint

Shapes: N = sequences in the step's batch (groups of G, contiguous), P prompt width (left
padded), C completion width (right padded), V vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from grpo_core import distributed as dist
from grpo_core import rundir
from grpo_core.advantages import (
    ADVANTAGES,
    TurnAdvantages,
    assert_groups,
    compute_advantages_logged,
)
from grpo_core.async_rollout import RolloutJob, RolloutWorker
from grpo_core.config import Config, resolve_model_path, resolve_ref_path, save_config
from grpo_core.environment import environment_info
from grpo_core.episodes import Episodes, episode_seed, play, single_turn_prompts
from grpo_core.errors import UserError
from grpo_core.losses import (
    POLICY_LOSSES,
    REGULARISERS,
    TOKEN_ADVANTAGE_LOSSES,
    TOKEN_WEIGHTS,
    WHOLE_GROUP_LOSSES,
    LossContext,
    aggregate,
    kl_estimate,
    row_groups,
    schedule_value,
    token_weight_target,
)
from grpo_core.models import (
    apply_lora,
    is_peft,
    is_vlm,
    load_model_and_tokenizer,
    memory_estimate,
    merged_state_dict,
    vlm_state_dict,
)
from grpo_core.policy import (
    CausalLMPolicy,
    VLMPolicy,
    longest_first,
    sequence_logprobs,  # noqa: F401 (the log-prob pass, re-exported)
)
from grpo_core.reference import STATE_FILE as REF_STATE_FILE
from grpo_core.reference import make_reference
from grpo_core.rewards import REWARDS, GroupContext, compute_rewards, task_grades
from grpo_core.rollout import Rollouts, SamplingParams, make_engine
from grpo_core.runtime import derive_seed, setup_torch
from grpo_core.samplers import make_sampler
from grpo_core.tasks import Problem, grade_texts, make_task
from grpo_core.vision import VideoProcessor

STATE_FILE = rundir.STATE_JSON  # in the checkpoint: training_state/state.json (+ .safetensors)
# metrics that measure wall-clock time: the only fields that differ between identical runs
TIMING_FIELDS = ("rollout_s", "logprob_s", "train_s", "tokens_per_s", "step_s", "wall_cum_s")
CURVE_FILE = "curve.jsonl"  # held-out curve points (eval.curve), one row per evaluated step
CURVE_SEED_TAG = 0xC0C0  # the curve's sampling seed: derive_seed(run seed, step, CURVE_SEED_TAG)
# cumulative compute counters (metrics.jsonl *_cum fields; checkpoint state "compute")
COMPUTE_CUM = ("tokens_generated_cum", "tokens_trained_cum", "flops_cum", "wall_cum_s")


def flop_params(model) -> int:
    """N of the FLOP estimate: the model's parameters (shared ones once) without the input
    embedding matrix when it is not tied to the LM head (a lookup, not a matmul). With LoRA:
    the base model's weights plus the adapter's."""
    n = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is not None and (out is None or out.weight is not emb.weight):
        n -= emb.weight.numel()
    return int(n)


def has_dropout(model) -> bool:
    """Whether a forward pass in train mode draws dropout masks (a Dropout module with p > 0,
    or a config's attention / hidden dropout above 0)."""
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return True
    c = getattr(model, "config", None)
    keys = ("attention_dropout", "hidden_dropout", "dropout", "attn_pdrop", "resid_pdrop")
    return any(float(getattr(c, k, 0) or 0) > 0 for k in keys)


def processed_tokens(ro: Rollouts) -> int:
    """Tokens a forward pass over ``ro`` computes on: prompt + completion tokens, padding not
    counted (the FLOP estimate's token count)."""
    return int(ro.prompt_mask.sum()) + int(ro.completion_mask.sum())


def make_optimizer(params, t) -> torch.optim.Optimizer:
    """AdamW (the default, as in TRL and verl) or plain SGD with optional momentum."""
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)


def sampler_mismatch(
    train_logp: torch.Tensor,  # [N, C] training model, before the update
    sampler_logp: torch.Tensor,  # [N, C] what the rollout engine reported
    mask: torch.Tensor,  # [N, C]
    mode: str = "none",
    cap: float = 2.0,
    more: bool = False,
) -> tuple[torch.Tensor | None, dict]:
    """Train-vs-sampler mismatch metrics and truncated importance weights (TIS).

    Per token, rho_t = pi_train(o_t) / pi_sampler(o_t) = exp(train_logp - sampler_logp).
    mismatch_kl = mean over tokens of the k3 estimate of KL(sampler || train), rho - 1 - log rho
    (>= 0, samples come from the sampler); mismatch_ratio_max = max rho_t.
    mode "token": w_t = min(rho_t, cap); "sequence": w_i = min(prod_t rho_t, cap) on every token
    of sequence i; "none": no weights. The weights carry no gradient. Rows whose sampler
    log-probs are NaN (rows the engine did not sample at the training temperature: a sampler's extra
    round) take no part: weight 1, left out of the metrics.
    ``more`` (asynchronous rollouts) adds is_weight_max (the largest weight) and is_clip_frac
    (the share of the tokens whose weight the cap truncated: rho_t > cap, or, per sequence,
    every token of a sequence whose ratio product exceeds it).
    """
    has = ~torch.isnan(sampler_logp).any(-1, keepdim=True)  # [N, 1]
    sampler_logp = torch.where(has, sampler_logp, train_logp)
    m = mask.to(train_logp.dtype) * has.to(train_logp.dtype)
    log_rho = ((train_logp - sampler_logp) * m).detach()
    rho = log_rho.exp()
    n = m.sum().clamp(min=1)
    stats = {
        "mismatch_kl": float(((rho - 1 - log_rho) * m).sum() / n),
        "mismatch_ratio_max": float(rho[m.bool()].max()) if m.any() else 1.0,
    }
    if mode == "none":
        return None, stats
    if mode == "token":
        w = rho.clamp(max=cap)
    elif mode == "sequence":
        w = log_rho.sum(-1, keepdim=True).exp().clamp(max=cap).expand_as(rho)
    else:
        raise ValueError(f"unknown is_correction {mode!r}")
    w = w * m
    stats["is_weight_mean"] = float(w.sum() / n)
    if more:
        raw = rho if mode == "token" else log_rho.sum(-1, keepdim=True).exp().expand_as(rho)
        stats["is_weight_max"] = float(w[m.bool()].max()) if m.any() else 1.0
        stats["is_clip_frac"] = float(((raw > cap).to(m.dtype) * m).sum() / n)
    w = torch.where(has, w, mask.to(w.dtype))  # rows without sampler log-probs: weight 1
    return w, stats


@dataclass
class Batch:
    """The step's training batch: rollouts plus what the loss needs, all [N] or [N, C]."""

    rollouts: Rollouts
    problems: list[Problem]
    rewards: torch.Tensor  # [N] total reward (before KL-in-reward)
    advantages: torch.Tensor  # [N]
    old_logp: torch.Tensor | None  # [N, C]
    ref_logp: torch.Tensor | None  # [N, C]
    is_weight: torch.Tensor | None = None  # [N, C] truncated train/sampler ratios (TIS)
    group_sizes: list[int] | None = None  # contiguous groups of this rank's rows
    indices: list[int] | None = None  # [N] train-set index of each row's prompt
    token_weight: torch.Tensor | None = None  # [N, C] from loss.token_weights
    adv_override: torch.Tensor | None = None  # [N] fixed advantages (NaN: the estimator's)
    # no-grad passes already computed on exactly these rollouts (the generation round's, when
    # the batch is that one round with every row kept): the step does not run them again
    passes: dict[str, torch.Tensor] | None = None
    # the kept groups of all ranks (one process: the same as problems / rewards), for the sampler
    all_problems: list[Problem] | None = None
    all_rewards: torch.Tensor | None = None
    all_group_sizes: list[int] | None = None
    all_indices: list[int] | None = None
    all_texts: list[str] | None = None
    all_infos: list[dict] | None = None  # the episodes' last infos (a sampler's wants_infos)
    # the episodes of the rows (per-turn rewards, actions, observations): step-level advantages
    episodes: Episodes | None = None
    # [N, C] per-token advantages from a step-level estimator (advantages.TurnAdvantages mapped
    # through turn_ids); None: the per-sequence advantages broadcast over the tokens
    token_advantages: torch.Tensor | None = None
    # [N] rows that were not sampled from the training prompt (a refinement round's rows): the
    # policy loss treats them as off-policy (LossContext.off_policy); None: every row on-policy
    off_policy: torch.Tensor | None = None
    # [N, C] stored behaviour log-probs of replayed rows (a replay round's, sampler arpo), NaN
    # rows: the batch's own; the PPO ratio of a replayed row is then pi_theta / pi_behaviour.
    # None: the old log-probs are the training model's for every row
    behaviour_logp: torch.Tensor | None = None
    # train.reuse_old_logprobs: the gradient pass over the whole batch (log-probs, entropies
    # with their graphs), run in :meth:`Trainer.score`; the one micro-batch's loss uses it
    grad_forward: tuple[torch.Tensor, torch.Tensor] | None = None
    # asynchronous rollouts (rollout.max_staleness > 0): the policy version (training steps
    # completed) of the oldest weights that sampled the batch's rows; None: the synchronous loop
    policy_version: int | None = None


# the IS statistics of an on-policy batch under asynchronous rollouts (no weights computed)
ON_POLICY_IS_STATS = {
    "mismatch_kl": 0.0,
    "mismatch_ratio_max": 1.0,
    "is_weight_mean": 1.0,
    "is_weight_max": 1.0,
    "is_clip_frac": 0.0,
}

ENV_FILE = "environment.json"

# the Episodes fields a replay entry keeps (one row each; media is refused)
_EPISODE_FIELDS = (
    "turn_rewards",
    "n_turns",
    "infos",
    "turn_texts",
    "end_reasons",
    "media",
    "obs_texts",
)


def replay_entry(ro: Rollouts, ep: Episodes | None, i: int, reward: float, logp) -> dict:
    """Row ``i`` of a batch as a replay-buffer entry of plain lists (JSON, for the sampler's
    checkpoint state): its prompt and completion tokens (padding dropped), loss mask, turn ids,
    text, finish reason, reward, the per-token log-probs of its completion under the policy
    that sampled it, and its episode."""
    pm = ro.prompt_mask[i].bool()
    cm = ro.completion_mask[i]
    n = int(cm.nonzero().max()) + 1 if bool(cm.any()) else 0
    return {
        "prompt_ids": ro.prompt_ids[i][pm].tolist(),
        "completion_ids": ro.completion_ids[i, :n].tolist(),
        "completion_mask": cm[:n].tolist(),
        "loss_mask": None if ro.loss_mask is None else ro.loss_mask[i, :n].tolist(),
        "turn_ids": None if ro.turn_ids is None else ro.turn_ids[i, :n].tolist(),
        "text": ro.texts[i],
        "finish_reason": ro.finish_reasons[i],
        "reward": float(reward),
        "logp": [float(x) for x in logp[:n].tolist()],
        "episode": None
        if ep is None
        else {f: getattr(ep, f)[i] for f in _EPISODE_FIELDS if getattr(ep, f)},
    }


def replay_rollouts(e: dict, like: Rollouts) -> Rollouts:
    """A one-row Rollouts of replay entry ``e`` (loss mask / turn ids / sampler log-probs
    present where the batch ``like`` has them; sampler log-probs NaN: not this engine's)."""
    n = len(e["completion_ids"])

    def row(x, dtype=torch.long):
        return torch.tensor([x], dtype=dtype)

    return Rollouts(
        prompt_ids=row(e["prompt_ids"]),
        prompt_mask=torch.ones(1, len(e["prompt_ids"]), dtype=like.prompt_mask.dtype),
        completion_ids=row(e["completion_ids"]),
        completion_mask=row(e["completion_mask"], like.completion_mask.dtype),
        finish_reasons=[e["finish_reason"]],
        texts=[e["text"]],
        sampler_logp=None if like.sampler_logp is None else torch.full((1, n), float("nan")),
        loss_mask=None if e["loss_mask"] is None else row(e["loss_mask"], like.policy_mask.dtype),
        turn_ids=None if e["turn_ids"] is None else row(e["turn_ids"]),
    )


def replay_episodes(e: dict) -> Episodes:
    ep = e["episode"] or {}
    return Episodes(
        [ep.get("turn_rewards", [])],
        [ep.get("n_turns", 1)],
        [ep.get("infos", {})],
        [ep.get("turn_texts", [])],
        [ep.get("end_reasons", "done")],
        media=[ep["media"]] if "media" in ep else [],
        obs_texts=[ep["obs_texts"]] if "obs_texts" in ep else [],
    )


def pick_refinement(correct: list[bool], rewards: list[float]) -> int:
    """Which of a prompt's refinements joins its group (the authors' process_refinement_groups):
    the first correct one, else the one of highest reward (the first on ties)."""
    for i, c in enumerate(correct):
        if c:
            return i
    return max(range(len(rewards)), key=lambda i: (rewards[i], -i))


def write_environment(path: Path, device: str, step: int) -> None:
    """<run>/environment.json: where this run ran (package versions, torch CPU capability / GPU,
    python, git commit + dirty flag of the code; grpo_core.environment), from which step. A resume
    rewrites it and keeps the earlier records under "history" (oldest first)."""
    history = []
    if path.exists():
        try:
            old = json.loads(path.read_text())
            history = [*old.pop("history", []), old]
        except (json.JSONDecodeError, AttributeError):
            history = []
    rec = {**environment_info(device), "start_step": step, "time": time.time(), "history": history}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rec, indent=2))
    tmp.replace(path)


def _single_turn_round(cfg, kind: str) -> None:
    """A round that builds prompts of its own (refinement, referee) needs one process and env
    single_turn."""
    name = cfg.sampler.name
    if dist.active():
        raise UserError(f"sampler {name!r}: {kind} rounds need one process")
    if cfg.env.name != "single_turn":
        raise UserError(
            f"sampler {name!r}: {kind} rounds need env single_turn, got {cfg.env.name!r}"
        )


class Trainer:
    """GRPO and its variants: one loop, components chosen by the config."""

    def __init__(
        self,
        cfg: Config,
        out_dir: Path | str | None = None,
        resume: bool = True,
        if_changed: str = "error",
    ):
        """``out_dir``: the run directory, locked for this trainer (released when ``train``
        returns). A run of the same config there is resumed (finished: ``train`` does nothing);
        ``resume=False`` moves an earlier run aside first; a run of another config is refused
        (``if_changed="replace"``: moved aside). See grpo_core.rundir."""
        self.cfg = cfg
        self.out_dir = Path(out_dir) if out_dir else None
        self._lock: rundir.RunLock | None = None
        self._stop_signal: int | None = None
        setup_torch(cfg)
        dist.init(cfg.run.device)
        if self.out_dir and dist.is_main():
            self._lock = rundir.RunLock(self.out_dir).acquire()
            try:
                rundir.prepare(self.out_dir, cfg, fresh=not resume, if_changed=if_changed)
            except BaseException:
                self._lock.release()
                raise
        if self.out_dir:
            dist.barrier()
        self.task = make_task(cfg.task)
        self.train_set = self.task.train()
        self.model_path = resolve_model_path(cfg)
        self.model, self.tok = load_model_and_tokenizer(
            self.model_path, cfg.run.dtype, cfg.run.device
        )
        dist.broadcast_params(self.model)
        if cfg.train.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}  # works with frozen inputs
            )
            self.model.config.use_cache = False
        if cfg.model.lora is not None:
            self.model = apply_lora(self.model, cfg.model.lora)
        self.n_flop_params = flop_params(self.model)  # (before FSDP shards the parameters)
        self.rollout_model = self.model  # what the hf engine samples from
        self.fsdp = cfg.train.fsdp and dist.active()
        if self.fsdp:
            if cfg.model.lora is not None:
                raise UserError("train.fsdp with model.lora is not supported; use one or the other")
            # generation runs on a plain full copy (no collectives, ranks may stop at different
            # lengths); it is refreshed from the shards after every optimizer step
            import copy

            self.rollout_model = copy.deepcopy(self.model).requires_grad_(False)
            dist.shard_model(self.model)
        self.model.train()
        # what the trainer asks of the model: per-token log-probs of sampled completions
        self.processor = VideoProcessor.from_model(self.model)  # a VLM's; None for text
        if self.processor is None:
            self.policy = CausalLMPolicy(
                self.model,
                self.tok,
                cfg.rollout.temperature,
                cfg.train.micro_batch_size,
                prefix_grouper=cfg.train.prefix_grouper,
                trim=cfg.train.micro_batches == "by_length",
            )
        else:  # a VLM: media inputs next to the token ids (grpo_core.vision)
            if cfg.train.prefix_grouper:
                raise UserError(
                    "train.prefix_grouper: not built for a VLM policy (rows with media); set "
                    "train.prefix_grouper: false"
                )
            self.policy = VLMPolicy(
                self.model, self.tok, cfg.rollout.temperature, cfg.train.micro_batch_size
            )
        if self.processor is not None and cfg.rollout.engine not in ("hf", "hf_static"):
            raise UserError(
                f"rollout.engine={cfg.rollout.engine}: a VLM policy (video) samples with the hf "
                "engine only (hf_static hands its rows to it); set rollout.engine: hf"
            )
        # frozen / adapter-disabled / EMA reference, or None (grpo_core.reference)
        self.ref = make_reference(cfg, self.model, self.model_path, resolve_ref_path(cfg))
        t = cfg.train
        # only trainable parameters (all of them, or the LoRA adapter's)
        self.opt = make_optimizer([p for p in self.model.parameters() if p.requires_grad], t)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min(1.0, (s + 1) / t.warmup_steps) if t.warmup_steps else 1.0
        )
        self.sampler = make_sampler(cfg.sampler, len(self.train_set), cfg.run.seed)
        bind = getattr(self.sampler, "bind_generate", None)
        if bind is not None:  # a sampler that writes text with the policy (experience library)
            bind(self._generate_texts)
        bind = getattr(self.sampler, "bind_problems", None)
        if bind is not None:  # a sampler that reads the train problems (seagent's curriculum)
            bind(self.train_set)
        self.engine = make_engine(
            cfg.rollout.engine, self.rollout_model, self.tok, cfg=cfg, model_path=self.model_path
        )
        self.pg_loss = POLICY_LOSSES.get(cfg.loss.name, "loss.name")
        self.regs = [
            (r, REGULARISERS.get(r.name, f"loss.regularisers[{i}].name"))
            for i, r in enumerate(cfg.loss.regularisers)
        ]
        tw = cfg.loss.token_weights
        self.token_weight_fn = TOKEN_WEIGHTS.get(tw.name, "loss.token_weights.name") if tw else None
        self.token_weight_on = (
            token_weight_target(self.token_weight_fn, tw.params) if tw else "policy"
        )
        # what the configured components read from the no-grad passes (registry needs=); the
        # token weights are handed the policy's log-probs; "dist" is served a group at a time
        self.reward_needs = set().union(*(REWARDS.needs_of(t.name, t.params) for t in cfg.rewards))
        self.advantage_needs = ADVANTAGES.needs_of(cfg.advantage.name, cfg.advantage.params)
        self.token_weight_needs = (
            ({"policy"} | TOKEN_WEIGHTS.needs_of(tw.name, tw.params)) - {"dist"} if tw else set()
        )
        self.passes: dict[str, int] = {}  # no-grad passes per model in the current step
        # compute of the current step (tokens; trainer.compute_stats) and of the run so far
        self._tokens: dict[str, int] = {}
        self.compute_cum: dict[str, float] = {k: 0 for k in COMPUTE_CUM}
        self._curve_prompts: list[list[int]] | None = None
        self._prompt_cache: dict[int, list[int]] = {}
        self.step = 0
        self._stop = False
        # asynchronous rollouts (rollout.max_staleness; grpo_core.async_rollout): the pipeline
        # depth (None: the synchronous loop), the worker (while train runs), the in-flight jobs
        # by (step, round) and the policy version last queued to the worker
        self._async_k: int | None = cfg.rollout.max_staleness or None
        self._async: RolloutWorker | None = None
        self._inflight: dict[tuple[int, int], RolloutJob] = {}
        self._async_version = 0
        self._async_first: RolloutJob | None = None  # the current step's first round
        if self._async_k and (self.processor is not None or dist.active()):
            raise UserError(
                "rollout.max_staleness > 0: asynchronous rollouts are built for one process and "
                "a text policy; set rollout.max_staleness: 0"
            )
        ck = self.out_dir / "checkpoint" if self.out_dir else None
        if ck is not None and resume and ck.exists():
            try:
                rundir.check_state_present(ck)  # weights without their state: not a restart
                self.load_checkpoint(ck)
            except BaseException:
                self.release()
                raise

    @property
    def finished(self) -> bool:
        return self.step >= self.cfg.train.steps

    def release(self) -> None:
        """Release the run directory's lock (``train`` does this when it returns)."""
        if self._lock is not None:
            self._lock.release()

    # ---------------------------------------------------------------- rollouts and rewards

    def prompt_ids(self, i: int) -> list[int]:
        """Token ids of train problem ``i``'s prompt as a single-turn env shows it."""
        if i not in self._prompt_cache:
            (self._prompt_cache[i],) = single_turn_prompts(
                self.tok, self.cfg.task.template, [self.train_set[i]]
            )
        return self._prompt_cache[i]

    def row_problems(self, row_idx: list[int]) -> list[Problem]:
        """The train problems of the rows as the policy is shown them: with the sampler's hint
        appended to the prompt when it gives one (``sampler.hint(index, problem, task) -> text
        | None``: scaf, seele, difficulty_aug; grpo_core.tasks.Task.hinted), then, for a sampler
        with ``augment(index, problem, task) -> Problem``, its input changed (difficulty_aug:
        a perturbed clip, Task.perturbed), else the problems themselves."""
        augment = getattr(self.sampler, "augment", None)
        if augment is not None:
            return [augment(i, p, self.task) for i, p in zip(row_idx, self._hinted(row_idx))]
        return self._hinted(row_idx)

    def _hinted(self, row_idx: list[int]) -> list[Problem]:
        hint = getattr(self.sampler, "hint", None)
        prefix = getattr(self.sampler, "prefix", None)
        if prefix is not None:  # a prior before the prompt (training_free_grpo's library)
            return [
                dataclasses.replace(
                    self.train_set[i], prefix=prefix(i, self.train_set[i], self.task)
                )
                for i in row_idx
            ]
        if hint is None:
            return [self.train_set[i] for i in row_idx]
        return [
            self.task.hinted(self.train_set[i], hint(i, self.train_set[i], self.task))
            for i in row_idx
        ]

    def episodes(
        self, row_idx: list[int], params: SamplingParams, turn_seed=None
    ) -> tuple[Rollouts, Episodes]:
        """One episode per row (train problem index ``row_idx[r]``) in the configured env
        (grpo_core.episodes.play): the step's only way to a trajectory."""
        cfg = self.cfg
        single = cfg.env.name == "single_turn"  # the same prompt every visit: cached
        problems = self.row_problems(row_idx)

        def prompt(r: int) -> list[int]:
            if problems[r].hint is None and problems[r].prefix is None:
                return self.prompt_ids(row_idx[r])
            (ids,) = single_turn_prompts(self.tok, cfg.task.template, [problems[r]])
            return ids

        ro, ep = play(
            cfg.env,
            self.task,
            cfg.task.template,
            problems,
            [episode_seed(cfg.run.seed, i) for i in row_idx],
            self.engine,
            self.tok,
            params,
            turn_seed=turn_seed,
            prompt_fn=prompt if single else None,
            **({} if self.processor is None else {"processor": self.processor}),
        )
        self._count("generated", int(ro.policy_mask.sum()))
        self._count("gen_processed", processed_tokens(ro))
        return ro, ep

    def _count(self, key: str, n: int) -> None:
        self._tokens[key] = self._tokens.get(key, 0) + n

    def collect(self, step: int) -> tuple[Batch | None, dict]:
        """Sample groups until the batch holds prompts_per_step kept groups (the sampler decides
        which groups are kept; uniform keeps all) or the sampler's round cap is reached."""
        cfg = self.cfg
        want = cfg.rollout.prompts_per_step
        kept_ro: list[Rollouts] = []
        kept_passes: list[dict] = []
        kept_pb: list[Problem] = []
        kept_r: list[torch.Tensor] = []
        kept_sizes: list[int] = []
        kept_idx: list[int] = []
        kept_ep: list[Episodes] = []
        all_r, all_acc, all_len, term_logs, n_zero, n_groups = [], [], [], [], 0, 0
        all_tc: list[torch.Tensor] = []  # tool calls per episode (an env that counts them)
        # over all ranks (for the sampler's update)
        n_kept_groups, kept_all, kept_all_r, kept_all_sizes, kept_all_idx = 0, [], [], [], []
        kept_all_texts: list[str] = []
        # the episodes' last infos, for a sampler that reads them (``wants_infos``: seagent's
        # curriculum learns what the agent explored from the env's state diffs)
        want_infos = bool(getattr(self.sampler, "wants_infos", False))
        kept_all_infos: list[dict] = []
        versions: list[int] = []  # policy version of each kept round (asynchronous rollouts)
        for rnd in range(self.sampler.max_rounds):
            need = want - n_kept_groups
            if need <= 0:
                break
            # asynchronous rollouts: the round sampled by the worker (grpo_core.async_rollout)
            job = self._async_job(step, rnd, need) if self._async is not None else None
            idx = self.sampler.next_prompts(need) if job is None else job.idx  # same on all ranks
            sizes = self._group_sizes(idx) if job is None else job.sizes
            lo, hi = dist.shard_range(len(idx))  # data parallel: this rank's groups
            row_idx = [i for i, g in zip(idx[lo:hi], sizes[lo:hi]) for _ in range(g)]
            # (with the sampler's hints, if any)
            problems = self.row_problems(row_idx) if job is None else job.problems
            assert_groups([p.id for p in problems], sizes[lo:hi])
            params, turn_seed = self._round_sampling(step, rnd)
            if job is None:
                ro, ep = self.episodes(row_idx, params, turn_seed)
            else:
                ro, ep = self._async_wait(job)
            lengths = ro.policy_mask.sum(-1).tolist()
            passes = self.no_grad_passes(ro, self.reward_needs)
            ctx = self._group_context(ro, problems, sizes[lo:hi], row_idx, step, passes, ep)
            rewards, logs = compute_rewards(cfg.rewards, ctx)
            succ = ep.success()
            if all(x is not None for x in succ):  # the env says which episodes succeeded
                acc = torch.tensor([float(x) for x in succ])
            else:  # the task's grade, as the reward
                acc = torch.tensor([float(g.score >= 1.0) for g in task_grades(ctx)])
            # stats and keep decisions over all ranks' groups (identical on every rank)
            local_rewards, rewards = rewards, dist.gather_cat(rewards)
            texts = dist.gather_list(ro.texts)
            infos = dist.gather_list(ep.infos) if want_infos else None
            acc = dist.gather_cat(acc)
            lengths = dist.gather_cat(torch.tensor(lengths, dtype=torch.float32))
            logs = {k: dist.all_sum(v) / dist.world() for k, v in logs.items()}
            starts = [0]
            for g in sizes:
                starts.append(starts[-1] + g)
            groups = [rewards[starts[k] : starts[k + 1]] for k in range(len(sizes))]
            zero = [bool(r.max() - r.min() <= 1e-8) for r in groups]
            n_zero += sum(zero)
            n_groups += len(groups)
            all_r.append(rewards)
            all_acc.append(acc)
            all_len.append(lengths)
            tc = ep.tool_calls()
            if tc is not None:
                all_tc.append(dist.gather_cat(torch.tensor(tc, dtype=torch.float32)))
            term_logs.append(logs)
            acc_groups = [acc[starts[k] : starts[k + 1]] for k in range(len(sizes))]
            keep = self.sampler.keep(groups, acc=acc_groups)
            kept_groups = [k for k in range(len(groups)) if keep[k]][: want - n_kept_groups]
            n_kept_groups += len(kept_groups)
            mine = []
            for k in kept_groups:
                rows = list(range(starts[k], starts[k + 1]))
                kept_all += [self.train_set[idx[k]]] * sizes[k]
                kept_all_r += [float(rewards[i]) for i in rows]
                kept_all_sizes.append(sizes[k])
                kept_all_idx += [idx[k]] * sizes[k]
                kept_all_texts += [texts[i] for i in rows]
                if infos is not None:
                    kept_all_infos += [infos[i] for i in rows]
                if lo <= k < hi:
                    mine += [i - starts[lo] for i in rows]
                    kept_sizes.append(sizes[k])
                    kept_idx += [idx[k]] * sizes[k]
            if mine:
                if job is not None:
                    versions.append(job.version)
                if mine == list(range(len(ro))):  # every row of the round, in order
                    kept_passes.append(passes)
                kept_ro.append(ro.select(mine))
                kept_ep.append(ep.select(mine))
                kept_pb += [problems[i] for i in mine]
                kept_r.append(local_rewards[mine])
        rewards_all = torch.cat(all_r)
        stats = {
            "reward_mean": float(rewards_all.mean()),
            "reward_std": float(rewards_all.std()) if len(rewards_all) > 1 else 0.0,
            "accuracy": float(torch.cat(all_acc).mean()),
            "completion_len_mean": float(torch.cat(all_len).mean()),
            "frac_zero_std_sampled": n_zero / max(n_groups, 1),
            "gen_rounds": len(all_r),
            "n_sampled": int(len(rewards_all)),
        }
        if all_tc:
            stats["tool_calls_mean"] = float(torch.cat(all_tc).mean())
        for k in term_logs[0]:
            stats[k] = sum(t[k] for t in term_logs) / len(term_logs)
        if not kept_pb:  # (distributed: needs every rank to keep some groups, as uniform does)
            stats["frac_zero_std_groups"] = 1.0
            return None, stats
        ro = kept_ro[0] if len(kept_ro) == 1 else Rollouts.concat(kept_ro, self.tok.pad_token_id)
        rewards = torch.cat(kept_r)
        all_rewards = torch.tensor(kept_all_r)
        s, zero = 0, 0
        for g in kept_all_sizes:
            zero += int(all_rewards[s : s + g].max() - all_rewards[s : s + g].min() <= 1e-8)
            s += g
        stats["frac_zero_std_groups"] = zero / len(kept_all_sizes)
        stats["n_train_seqs"] = len(kept_all_r)
        batch = Batch(ro, kept_pb, rewards, torch.empty(0), None, None)
        batch.episodes = kept_ep[0] if len(kept_ep) == 1 else Episodes.concat(kept_ep)
        if len(kept_ro) == 1 and len(kept_passes) == 1:  # one round, all kept: reuse its passes
            batch.passes = kept_passes[0]
        batch.group_sizes, batch.indices = kept_sizes, kept_idx
        batch.all_problems, batch.all_rewards = kept_all, all_rewards
        batch.all_group_sizes, batch.all_indices = kept_all_sizes, kept_all_idx
        batch.all_texts = kept_all_texts
        batch.all_infos = kept_all_infos if want_infos else None
        if versions:  # the oldest weights among the batch's rows
            batch.policy_version = min(versions)
        return batch, stats

    def _round_sampling(self, step: int, rnd: int):
        """(SamplingParams, turn seed function) of generation round ``rnd`` of ``step``."""
        cfg = self.cfg
        params = SamplingParams(
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            stop=list(cfg.rollout.stop),
            # each rank samples its own prompts with its own stream (one process: as before)
            seed=derive_seed(cfg.run.seed, step, rnd, *([dist.rank()] if dist.active() else [])),
        )
        turn_seed = lambda t, rnd=rnd: derive_seed(  # noqa: E731
            cfg.run.seed, step, rnd, *([dist.rank()] if dist.active() else []), 1 << 24, t
        )
        return params, turn_seed

    # ---------------------------------------------------------------- asynchronous rollouts

    def _gen_lock(self):
        """The worker's generation lock while one runs (the trainer's own generations take it
        too: hf's generate uses torch's global generator), else nothing."""
        return self._async.lock if self._async is not None else nullcontext()

    def _async_submit(self, step: int, rnd: int, need: int) -> RolloutJob:
        """Plan round ``rnd`` of ``step`` now (the sampler's prompts, group sizes and hints, as
        :meth:`collect` would) and queue it to the worker, behind the weights queued last."""
        cfg = self.cfg
        idx = self.sampler.next_prompts(need)
        sizes = self._group_sizes(idx)
        row_idx = [i for i, g in zip(idx, sizes) for _ in range(g)]
        problems = self.row_problems(row_idx)
        assert_groups([p.id for p in problems], sizes)
        params, turn_seed = self._round_sampling(step, rnd)
        prompts = None
        if cfg.env.name == "single_turn":  # (cached ids, made here: the cache is not shared)
            prompts = [
                self.prompt_ids(i)
                if p.hint is None
                else single_turn_prompts(self.tok, cfg.task.template, [p])[0]
                for i, p in zip(row_idx, problems)
            ]
        version = self._async_version
        # a stale batch needs the behaviour log-probs; a later round of a step follows its first
        first = self._async_first
        if rnd > 0 and first is not None and first.step == step:
            behaviour = first.behaviour
        else:
            behaviour = version < step
        seeds = [episode_seed(cfg.run.seed, i) for i in row_idx]

        def run(engine, model, tok, at_version):
            if at_version != version:  # (the queue is FIFO: a bug if it happens)
                raise RuntimeError(f"rollout job of step {step} on version {at_version}")
            ro, ep = play(
                cfg.env,
                self.task,
                cfg.task.template,
                problems,
                seeds,
                engine,
                tok,
                params,
                turn_seed=turn_seed,
                prompt_fn=(lambda r: prompts[r]) if prompts is not None else None,
            )
            counts = {"generated": int(ro.policy_mask.sum()), "gen_processed": processed_tokens(ro)}
            if behaviour:  # the sampling policy's per-token log-probs (temperature applied)
                ro.sampler_logp = self.policy.logprobs(ro, {"logp"}, model=model)["logp"]
                counts["nograd_processed"] = processed_tokens(ro)
            return ro, ep, counts

        job = RolloutJob(step, rnd, version, idx, sizes, row_idx, problems, behaviour)
        job.future = self._async.submit(run)
        self._inflight[(step, rnd)] = job
        return job

    def _async_job(self, step: int, rnd: int, need: int) -> RolloutJob:
        """The worker's round ``rnd`` of ``step``: the first one was queued ahead; a refill
        round is queued now (behind what is in flight, so on the current weights)."""
        job = self._inflight.get((step, rnd))
        if job is None:
            job = self._async_submit(step, rnd, need)
        return job

    def _async_wait(self, job: RolloutJob) -> tuple[Rollouts, Episodes]:
        """The job's rollouts and episodes; its token counts join this step's."""
        ro, ep, counts = job.wait()
        del self._inflight[(job.step, job.rnd)]
        if job.rnd == 0:
            self._async_first = job
        for k, v in counts.items():
            self._count(k, int(v))
        return ro, ep

    def _async_start(self) -> None:
        """Start the worker on the current weights (version = the step reached) and queue the
        first rounds of the steps up to k ahead that are not in flight (a resumed run has them
        from its checkpoint)."""
        if self._async_k is None:
            return
        cfg = self.cfg
        self._async_version = self.step
        self._async = RolloutWorker(
            self.model,
            self.tok,
            self.step,
            lambda m, tok: make_engine(
                cfg.rollout.engine, m, tok, cfg=cfg, model_path=self.model_path
            ),
        )
        for s in range(self.step, min(self.step + self._async_k, cfg.train.steps - 1) + 1):
            if (s, 0) not in self._inflight:
                self._async_submit(s, 0, cfg.rollout.prompts_per_step)

    def _async_after_update(self, step: int) -> None:
        """After step ``step``'s update: the new weights (version step + 1) to the worker, and
        the first round of step step + 1 + k behind them."""
        self._async_version = step + 1
        self._async.sync(self.model, self._async_version)
        s = step + 1 + self._async_k
        if s < self.cfg.train.steps:
            self._async_submit(s, 0, self.cfg.rollout.prompts_per_step)

    def _async_close(self) -> None:
        """Stop the worker (jobs not started are cancelled and dropped from the in-flight
        ones; finished ones are kept for the checkpoint)."""
        if self._async is None:
            return
        worker, self._async = self._async, None
        worker.close()
        for key, job in list(self._inflight.items()):
            if job.result is None and (job.future is None or not job.future.done()):
                del self._inflight[key]
            elif job.result is None:
                try:
                    job.wait()
                except BaseException:  # noqa: BLE001 - cancelled or failed: not kept
                    del self._inflight[key]

    def _extra_round(self, batch: Batch, step: int) -> dict:
        """A sampler's extra generation round, from the plan its ``extra_round(step)`` returns
        (None: none this step): {"temperature", "frac", "min_adv", "max_rows", "advantage",
        optional "keep_frac"}. The first ceil(frac * groups) prompts of the batch are sampled
        again, G each, at that temperature; of the completions whose advantage (the run's
        estimator, within their new group) exceeds min_adv, the first max_rows, then the first
        int(n * keep_frac) of those n, join the batch (one group per prompt) with the fixed
        advantage, a REINFORCE term whose log-probs are the policy's at the rollout
        temperature. Training metrics (reward, accuracy) stay those of the main batch."""
        req = self.sampler.extra_round(step)
        if not req:
            return {}
        if req.get("kind") == "refine":
            return self._refine_round(batch, step, req)
        if req.get("kind") == "reference":
            return self._reference_round(batch, step, req)
        if req.get("kind") == "referee":
            return self._referee_round(batch, step, req)
        if req.get("kind") == "replay":
            return self._replay_round(batch, step, req)
        if dist.active():
            raise UserError(f"sampler {self.cfg.sampler.name!r}: extra rounds need one process")
        cfg, G = self.cfg, self.cfg.rollout.group_size
        starts = [0, *torch.tensor(batch.group_sizes).cumsum(0).tolist()]
        n_p = min(len(batch.group_sizes), math.ceil(float(req["frac"]) * len(batch.group_sizes)))
        row_idx = [batch.indices[starts[k]] for k in range(n_p) for _ in range(G)]
        params = SamplingParams(
            temperature=float(req["temperature"]),
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            stop=list(cfg.rollout.stop),
            seed=derive_seed(cfg.run.seed, step, 1 << 20),
        )
        ro, ep = self.episodes(row_idx, params)
        # drawn at another temperature: no train/sampler mismatch to correct on these rows. When
        # the main batch has sampler log-probs (vLLM), mark these rows NaN so that TIS still
        # applies to the main rows (sampler_mismatch gives NaN rows weight 1)
        has_slp = batch.rollouts.sampler_logp is not None
        ro.sampler_logp = torch.full(ro.completion_ids.shape, float("nan")) if has_slp else None
        problems = [self.train_set[i] for i in row_idx]
        needs = self.reward_needs | self.advantage_needs
        ctx = self._group_context(
            ro, problems, [G] * n_p, row_idx, step, self.no_grad_passes(ro, needs)
        )
        rewards, _ = compute_rewards(cfg.rewards, ctx)
        ctx.episodes = ep
        adv, _ = compute_advantages_logged(rewards, [G] * n_p, cfg.advantage, ctx)
        if isinstance(adv, TurnAdvantages):
            raise UserError(
                f"advantage {cfg.advantage.name!r} gives per-turn advantages, which a sampler's "
                f"extra round (sampler {cfg.sampler.name!r}) cannot rank; use another sampler"
            )
        keep = [i for i in range(len(ro)) if float(adv[i]) > float(req["min_adv"])]
        keep = keep[: int(req["max_rows"])]
        keep = keep[: int(len(keep) * float(req.get("keep_frac", 1.0)))]
        logs = {"extra/temperature": float(req["temperature"]), "extra/n_kept": float(len(keep))}
        if not keep:
            return logs
        sizes = [n for n in (sum(1 for i in keep if i // G == k) for k in range(n_p)) if n]
        n_old = len(batch.rollouts)
        batch.passes = None  # rows joined: the round's passes do not cover them
        batch.rollouts = Rollouts.concat([batch.rollouts, ro.select(keep)], self.tok.pad_token_id)
        batch.problems = batch.problems + [problems[i] for i in keep]
        if batch.episodes is not None:
            batch.episodes = Episodes.concat([batch.episodes, ep.select(keep)])
        batch.rewards = torch.cat([batch.rewards, rewards[keep]])
        batch.group_sizes = batch.group_sizes + sizes
        batch.indices = batch.indices + [row_idx[i] for i in keep]
        if batch.all_texts is not None:
            batch.all_texts = batch.all_texts + [ro.texts[i] for i in keep]
        batch.adv_override = torch.cat(
            [torch.full((n_old,), float("nan")), torch.full((len(keep),), float(req["advantage"]))]
        )
        return logs

    def _refine_round(self, batch: Batch, step: int, req: dict) -> dict:
        """A refinement round (plan ``kind: refine``, e.g. the critique sampler's): for the first
        ceil(frac * groups) prompts of the batch, every first attempt gets a critique,
        ``req["critique"](answer, correct, gold)``, and the policy writes one refinement from
        the user message ``req["prompt"](question, attempt, critique)`` at the rollout
        temperature. Per prompt the first correct refinement (task grade 1), else the one of
        highest reward (the first on ties), joins that prompt's group (its last row) as a
        response to the original prompt, marked off-policy (``Batch.off_policy``); the group's
        advantage is then the estimator's over first attempts and refinement together.
        Training metrics stay those of the main batch."""
        from grpo_core.episodes import chat_ids
        from grpo_core.tasks import grade_texts, render_prompt

        cfg = self.cfg
        _single_turn_round(cfg, "refinement")
        starts = [0, *torch.tensor(batch.group_sizes).cumsum(0).tolist()]
        n_p = min(len(batch.group_sizes), math.ceil(float(req["frac"]) * len(batch.group_sizes)))
        rows = list(range(starts[n_p]))
        ro0 = batch.rollouts
        grades = grade_texts(self.task, [ro0.texts[i] for i in rows], batch.problems[: len(rows)])
        prompts = []
        for i in rows:
            p = batch.problems[i]
            crit = req["critique"](grades[i].pred, grades[i].score >= 1.0, p.answer)
            q = render_prompt(cfg.task.template, p)
            msg = req["prompt"](q, ro0.texts[i], crit)
            prompts.append(chat_ids(self.tok, [{"role": "user", "content": msg}]))
        params = SamplingParams(
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            stop=list(cfg.rollout.stop),
            seed=derive_seed(cfg.run.seed, step, 1 << 21),
        )
        row_idx = [batch.indices[i] for i in rows]
        ro, _ = play(
            cfg.env,
            self.task,
            cfg.task.template,
            [batch.problems[i] for i in rows],
            [episode_seed(cfg.run.seed, j) for j in row_idx],
            self.engine,
            self.tok,
            params,
            prompt_fn=lambda r: prompts[r],
        )
        sizes = batch.group_sizes[:n_p]
        ctx = self._group_context(
            ro,
            batch.problems[: len(rows)],
            sizes,
            row_idx,
            step,
            self.no_grad_passes(ro, self.reward_needs),
        )
        rewards, _ = compute_rewards(cfg.rewards, ctx)
        ref_grades = grade_texts(self.task, ro.texts, batch.problems[: len(rows)])
        picks = [
            pick_refinement(
                [g.score >= 1.0 for g in ref_grades[starts[k] : starts[k + 1]]],
                rewards[starts[k] : starts[k + 1]].tolist(),
            )
            + starts[k]
            for k in range(n_p)
        ]
        self._join_off_policy(batch, ro.select(picks), rewards[picks])
        first_ok = [
            any(g.score >= 1.0 for g in grades[starts[k] : starts[k + 1]]) for k in range(n_p)
        ]
        ref_ok = [ref_grades[j].score >= 1.0 for j in picks]
        failed = [k for k in range(n_p) if not first_ok[k]]
        return {
            "extra/n_refined": float(n_p),
            "extra/refine_acc": sum(ref_ok) / max(n_p, 1),
            "extra/refine_acc_all": sum(g.score >= 1.0 for g in ref_grades) / max(len(rows), 1),
            # prompts whose first attempts all failed and whose refinement is correct
            "extra/frac_failed_groups": len(failed) / max(n_p, 1),
            "extra/solved_failed": sum(ref_ok[k] for k in failed) / max(len(failed), 1),
        }

    def _replay_round(self, batch: Batch, step: int, req: dict) -> dict:
        """A replay round (plan ``kind: replay``, sampler arpo): every group of the batch that
        the buffer calls failed (``buf.failed``) and whose task has buffered successes gets
        ``n_replay`` (at most G - 1) of them, ``buf.draw``, in place of its first rows, marked
        off-policy (``Batch.off_policy``) with their stored rewards and episodes; with
        ``importance: stored`` their stored behaviour log-probs become the rows' old log-probs
        (``Batch.behaviour_logp``). Then each on-policy row whose reward ``buf.is_success`` is
        stored in its task's buffer with its log-probs under the policy that sampled it (one
        no-grad pass over those rows). Training metrics stay those of the main batch."""
        buf, stored = req["buffer"], req["importance"] == "stored"
        if dist.active():
            raise UserError(f"sampler {self.cfg.sampler.name!r}: replay rounds need one process")
        ro0, ep0 = batch.rollouts, batch.episodes
        if ro0.media is not None:
            raise UserError(f"sampler {self.cfg.sampler.name!r}: no replay of rows with media")
        starts = [0, *torch.tensor(batch.group_sizes).cumsum(0).tolist()]
        groups = [batch.rewards[starts[k] : starts[k + 1]] for k in range(len(starts) - 1)]
        failed = buf.failed(groups)
        k_max = int(buf.p["n_replay"])
        if k_max >= min(batch.group_sizes):
            raise UserError(
                f"sampler.params.n_replay {k_max}: must be below the group size "
                f"{min(batch.group_sizes)} (rollout.group_size): a replayed group keeps at least "
                "one on-policy row"
            )
        # draw first (the buffer before this step), then store this step's successes
        drawn = {
            k: buf.draw(batch.indices[starts[k]], min(k_max, g.numel() - 1))
            for k, g in enumerate(groups)
            if failed[k] and g.numel() > 1
        }
        drawn = {k: v for k, v in drawn.items() if v}
        succ = [i for i in range(len(ro0)) if buf.is_success(batch.rewards[i])]
        if succ:
            lp = self.no_grad_passes(ro0.select(succ), {"policy"})["policy"]
            for j, i in enumerate(succ):
                buf.store(
                    batch.indices[i], replay_entry(ro0, ep0, i, float(batch.rewards[i]), lp[j])
                )
        logs = {
            "replay_failed_groups": float(sum(failed)),
            "replay_used": float(len(drawn)),
            "buffer_size": float(buf.size()),
        }
        if not drawn:
            return logs
        rows, used = [], []
        rewards = batch.rewards.clone()
        for k, entries in drawn.items():
            for j, e in enumerate(entries):
                rows.append(starts[k] + j)
                used.append(e)
                rewards[starts[k] + j] = float(e["reward"])
        parts = [replay_rollouts(e, ro0) for e in used]
        n = len(ro0)
        keep = [i for i in range(n) if i not in set(rows)]
        # the batch's rows, then the replayed ones, put back in their places
        merged = Rollouts.concat([ro0.select(keep), *parts], self.tok.pad_token_id)
        order = keep + rows
        back = [order.index(i) for i in range(n)]
        batch.rollouts = merged.select(back)
        if ep0 is not None:
            ep_m = Episodes.concat([ep0.select(keep), *[replay_episodes(e) for e in used]])
            batch.episodes = ep_m.select(back)
        batch.rewards = rewards
        batch.passes = None  # rows replaced: the round's passes do not cover them
        off = (
            batch.off_policy.clone()
            if batch.off_policy is not None
            else torch.zeros(n, dtype=torch.bool)
        )
        off[rows] = True
        batch.off_policy = off
        if stored:
            C = batch.rollouts.completion_ids.shape[1]
            beh = torch.full((n, C), float("nan"))
            for i, e in zip(rows, used):
                beh[i] = 0.0
                beh[i, : len(e["logp"])] = torch.tensor(e["logp"])
            batch.behaviour_logp = beh
        return logs

    def _join_off_policy(self, batch: Batch, extra: Rollouts, rewards: torch.Tensor) -> None:
        """Row k of ``extra`` (its completion, with reward ``rewards[k]``) joins the batch's
        group k as its last row, with that group's prompt (its first row's), marked off-policy
        (``Batch.off_policy``); groups past ``len(extra)`` are unchanged. The round's passes
        no longer cover the batch."""
        ro0, n_p = batch.rollouts, len(extra)
        starts = [0, *torch.tensor(batch.group_sizes).cumsum(0).tolist()]
        was_off = (
            batch.off_policy
            if batch.off_policy is not None
            else torch.zeros(len(ro0), dtype=torch.bool)
        )
        parts, problems, rew, idx, new_sizes, off = [], [], [], [], [], []
        for k, g in enumerate(batch.group_sizes):
            grp = list(range(starts[k], starts[k + 1]))
            parts.append(ro0.select(grp))
            problems += [batch.problems[i] for i in grp]
            rew.append(batch.rewards[grp])
            idx += [batch.indices[i] for i in grp]
            off += was_off[grp].tolist()
            if k < n_p:
                one, head = extra.select([k]), ro0.select([starts[k]])
                parts.append(
                    Rollouts(
                        prompt_ids=head.prompt_ids,
                        prompt_mask=head.prompt_mask,
                        completion_ids=one.completion_ids,
                        completion_mask=one.completion_mask,
                        finish_reasons=one.finish_reasons,
                        texts=one.texts,
                        # not sampled by the engine: no train / sampler mismatch on this row
                        sampler_logp=None
                        if ro0.sampler_logp is None
                        else torch.full(one.completion_ids.shape, float("nan")),
                        media=head.media,  # the prompt's clip (a VLM batch), else None
                    )
                )
                problems.append(batch.problems[starts[k]])
                rew.append(rewards[k : k + 1].to(batch.rewards.dtype))
                idx.append(batch.indices[starts[k]])
                off.append(True)
                g += 1
            new_sizes.append(g)
        batch.passes = None  # rows joined: the round's passes do not cover them
        batch.rollouts = Rollouts.concat(parts, self.tok.pad_token_id)
        batch.problems, batch.rewards, batch.indices = problems, torch.cat(rew), idx
        batch.group_sizes = new_sizes
        batch.off_policy = torch.tensor(off)

    def _drop_last_rows(self, batch: Batch, n_p: int) -> None:
        """Remove the last row of each of the batch's first ``n_p`` groups (a reference round
        in mode replace, before the reference joins as the new last row). Episodes are kept
        as they are: the reference takes the dropped row's place, and its episode entry is the
        dropped sample's (no component of a reference round reads episodes)."""
        starts = [0, *torch.tensor(batch.group_sizes).cumsum(0).tolist()]
        drop = {starts[k + 1] - 1 for k in range(n_p)}
        keep = [i for i in range(len(batch.rollouts)) if i not in drop]
        batch.rollouts = batch.rollouts.select(keep)
        batch.problems = [batch.problems[i] for i in keep]
        batch.rewards = batch.rewards[keep]
        batch.indices = [batch.indices[i] for i in keep]
        if batch.off_policy is not None:
            batch.off_policy = batch.off_policy[keep]
        batch.group_sizes = [g - 1 if k < n_p else g for k, g in enumerate(batch.group_sizes)]
        batch.passes = None

    def _reference_round(self, batch: Batch, step: int, req: dict) -> dict:
        """A reference round (plan ``kind: reference``): the first ceil(frac * groups) prompts
        of the batch get the task's reference completion (``task.sft_target``, what SFT
        teaches, + EOS) as one more row of their group, scored by the reward functions like a
        sample and marked off-policy (:meth:`_join_off_policy`); with ``mode: replace`` it
        takes the place of the group's last sampled row (:meth:`_drop_last_rows`), so the
        group keeps its size. Training metrics stay those of the main batch (the replaced
        samples included)."""
        from grpo_core.tasks import grade_texts

        cfg = self.cfg
        starts = [0, *torch.tensor(batch.group_sizes).cumsum(0).tolist()]
        n_p = min(len(batch.group_sizes), math.ceil(float(req["frac"]) * len(batch.group_sizes)))
        replace = req.get("mode", "add") == "replace"
        if replace and min(batch.group_sizes[:n_p]) < 2:
            raise UserError(
                f"sampler {cfg.sampler.name!r} with params.mode replace: a group of "
                f"{min(batch.group_sizes[:n_p])} row(s) would keep no sampled row; use "
                "rollout.group_size >= 2 or mode add"
            )
        problems = [batch.problems[starts[k]] for k in range(n_p)]
        eos = self.tok.eos_token_id
        ids = [
            self.tok(self.task.sft_target(p), add_special_tokens=False).input_ids + [eos]
            for p in problems
        ]
        C = max(len(x) for x in ids)
        pad = self.tok.pad_token_id
        head = batch.rollouts.select([starts[k] for k in range(n_p)])
        ro = Rollouts(
            prompt_ids=head.prompt_ids,
            prompt_mask=head.prompt_mask,
            completion_ids=torch.tensor([x + [pad] * (C - len(x)) for x in ids]),
            completion_mask=torch.tensor([[1] * len(x) + [0] * (C - len(x)) for x in ids]).to(
                batch.rollouts.completion_mask.dtype
            ),
            finish_reasons=["stop"] * n_p,
            texts=[self.task.sft_target(p) for p in problems],
            media=head.media,  # the prompts' clips (a VLM batch), else None
        )
        row_idx = [batch.indices[starts[k]] for k in range(n_p)]
        ctx = self._group_context(
            ro, problems, [1] * n_p, row_idx, step, self.no_grad_passes(ro, self.reward_needs)
        )
        rewards, _ = compute_rewards(cfg.rewards, ctx)
        ok = [g.score >= 1.0 for g in grade_texts(self.task, ro.texts, problems)]
        logs = {}
        if replace:
            # how often the injected ground truth supplies the group's only correct row
            acc = [g.score for g in grade_texts(self.task, batch.rollouts.texts, batch.problems)]
            miss = [all(a < 1.0 for a in acc[starts[k] : starts[k + 1] - 1]) for k in range(n_p)]
            logs["extra/frac_groups_missed"] = sum(miss) / max(n_p, 1)
            self._drop_last_rows(batch, n_p)
        self._join_off_policy(batch, ro, rewards)
        return {
            "extra/n_reference": float(n_p),
            "extra/reference_acc": sum(ok) / max(n_p, 1),
            "extra/reference_reward": float(rewards.mean()) if n_p else 0.0,
            **logs,
        }

    def _referee_round(self, batch: Batch, step: int, req: dict) -> dict:
        """A referee round (plan ``kind: referee``, URPO's sampler): the first ceil(frac *
        groups) prompts of the batch become referee prompts: ``req["pair"](gold, preds,
        correct, k)`` picks two candidate answers from group k's graded player answers (or
        None: no referee prompt for it), ``req["prompt"](question, a, b)`` is the user message.
        The policy samples ``req["group_size"]`` (else G) verdicts per referee prompt at the
        rollout temperature; each is scored by the run's reward functions against the label
        (the right candidate, the problem's answer), and the referee groups join the batch as
        groups of their own, on-policy, so that the estimator gives them advantages like any
        group. Training metrics stay those of the main batch; the referee's are logged."""
        from grpo_core.episodes import chat_ids
        from grpo_core.tasks import render_prompt

        cfg = self.cfg
        _single_turn_round(cfg, "referee")
        G = int(req.get("group_size") or cfg.rollout.group_size)
        starts = [0, *torch.tensor(batch.group_sizes).cumsum(0).tolist()]
        n_p = min(len(batch.group_sizes), math.ceil(float(req["frac"]) * len(batch.group_sizes)))
        grades = grade_texts(
            self.task, batch.rollouts.texts[: starts[n_p]], batch.problems[: starts[n_p]]
        )
        msgs, probs, idx, own = [], [], [], []
        for k in range(n_p):
            rows = range(starts[k], starts[k + 1])
            p = self.train_set[batch.indices[starts[k]]]  # the plain problem (no hint)
            pair = req["pair"](
                p.answer, [grades[i].pred for i in rows], [grades[i].score >= 1.0 for i in rows], k
            )
            if pair is None:
                continue
            a, b, mine = pair
            msgs.append(req["prompt"](render_prompt(cfg.task.template, p), a, b))
            probs.append(dataclasses.replace(p, id=f"{p.id}/referee"))
            idx.append(batch.indices[starts[k]])
            own.append(mine)
        if not msgs:
            return {"extra/n_referee": 0.0}
        prompts = [chat_ids(self.tok, [{"role": "user", "content": m}]) for m in msgs]
        rows = [r for r in range(len(msgs)) for _ in range(G)]
        params = SamplingParams(
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            stop=list(cfg.rollout.stop),
            seed=derive_seed(cfg.run.seed, step, 1 << 22),
        )
        problems = [probs[r] for r in rows]
        row_idx = [idx[r] for r in rows]
        ro, ep = play(
            cfg.env,
            self.task,
            cfg.task.template,
            problems,
            [episode_seed(cfg.run.seed, j) for j in row_idx],
            self.engine,
            self.tok,
            params,
            prompt_fn=lambda r: prompts[rows[r]],
        )
        self._count("generated", int(ro.policy_mask.sum()))
        self._count("gen_processed", processed_tokens(ro))
        sizes = [G] * len(msgs)
        ctx = self._group_context(
            ro, problems, sizes, row_idx, step, self.no_grad_passes(ro, self.reward_needs), ep
        )
        rewards, _ = compute_rewards(cfg.rewards, ctx)
        ok = [g.score >= 1.0 for g in grade_texts(self.task, ro.texts, problems)]
        has_slp = batch.rollouts.sampler_logp is not None
        ro.sampler_logp = torch.full(ro.completion_ids.shape, float("nan")) if has_slp else None
        n_old = len(batch.rollouts)
        batch.passes = None  # rows joined: the round's passes do not cover them
        batch.rollouts = Rollouts.concat([batch.rollouts, ro], self.tok.pad_token_id)
        batch.problems = batch.problems + problems
        if batch.episodes is not None:
            batch.episodes = Episodes.concat([batch.episodes, ep])
        batch.rewards = torch.cat([batch.rewards, rewards.to(batch.rewards.dtype)])
        batch.group_sizes = batch.group_sizes + sizes
        batch.indices = batch.indices + row_idx
        if batch.off_policy is not None:
            batch.off_policy = torch.cat([batch.off_policy, torch.zeros(len(ro), dtype=torch.bool)])
        if batch.adv_override is not None:
            batch.adv_override = torch.cat(
                [batch.adv_override, torch.full((len(ro),), float("nan"))]
            )
        assert len(batch.rollouts) == n_old + len(rows)
        # the player's accuracy on the same prompts, for the referee's comparison
        player = [grades[i].score >= 1.0 for i in range(starts[n_p])]
        return {
            "extra/n_referee": float(len(msgs)),
            "extra/referee_acc": sum(ok) / len(ok),
            "extra/referee_player_acc": sum(player) / max(len(player), 1),
            # referee prompts whose wrong candidate is one of the player's own answers
            "extra/referee_own_frac": sum(own) / len(own),
            "extra/referee_reward": float(rewards.mean()),
        }

    def _generate_texts(self, messages: list[str], max_new_tokens: int) -> list[str]:
        """Greedy completions of user messages by the rollout engine: a sampler's model-written
        text (the experience sampler's policy summariser). Counted as generated tokens."""
        from grpo_core.episodes import chat_ids

        cfg = self.cfg
        if not messages:
            return []
        prompts = [chat_ids(self.tok, [{"role": "user", "content": m}]) for m in messages]
        params = SamplingParams(
            temperature=0.0,
            top_p=1.0,
            max_new_tokens=int(max_new_tokens),
            stop=[],
            seed=derive_seed(cfg.run.seed, self.step, 1 << 23),
        )
        ro = self.engine.generate(prompts, params)
        self._count("generated", int(ro.policy_mask.sum()))
        return list(ro.texts)

    def _sampler_update(self, batch: Batch, step: int, entropy) -> dict:
        """The sampler sees the step's groups (its state: difficulty estimates, buffers, an
        experience library); returns its logs as ``sampler/<key>`` stats."""
        samp_logs = self.sampler.update(
            {
                "indices": batch.all_indices,
                "problems": batch.all_problems,
                "rewards": batch.all_rewards,
                "group_sizes": batch.all_group_sizes,
                "texts": batch.all_texts,
                "infos": batch.all_infos,
                "step": step,
                "entropy": entropy,
            }
        )
        return {f"sampler/{k}": float(v) for k, v in (samp_logs or {}).items()}

    def _no_update_step(self, batch: Batch, step: int, stats: dict, t0: float, t_roll: float):
        """``train.optimize: false`` (Training-Free GRPO): the sampler sees the step's kept
        groups (``sampler.update``: an experience library learns from them); no advantages,
        loss, optimizer or scheduler step, so the weights stay those of the start."""
        stats.update(self._sampler_update(batch, step, entropy=None))
        stats.update(
            loss=0.0,
            grad_norm=0.0,
            clip_frac=0.0,
            entropy=float("nan"),
            kl=float("nan"),
            lr=0.0,
            rollout_s=t_roll,
            train_s=0.0,
            tokens_per_s=0.0,
        )
        stats.update(self.compute_stats(time.perf_counter() - t0))
        return stats

    def _group_sizes(self, idx: list[int]) -> list[int]:
        """Rollouts per prompt: the sampler's allocation if it makes one, else G each."""
        G = self.cfg.rollout.group_size
        fn = getattr(self.sampler, "group_sizes", None)
        sizes = list(fn(idx, G)) if fn is not None else [G] * len(idx)
        if len(sizes) != len(idx) or any(int(g) < 1 for g in sizes):
            raise UserError(
                f"sampler {self.cfg.sampler.name!r} allocated {sizes} rollouts for {len(idx)} "
                "prompts; want one size >= 1 per prompt"
            )
        return [int(g) for g in sizes]

    def _group_context(
        self,
        ro: Rollouts,
        problems: list[Problem],
        sizes: list[int],
        indices: list[int],
        step: int,
        passes: dict[str, torch.Tensor] | None = None,
        episodes: Episodes | None = None,
    ) -> GroupContext:
        """The context rewards and advantage estimators see: the rollouts, and what their
        declared needs asked of the step's no-grad passes (``passes``: "policy", "entropy",
        "ref"; :meth:`no_grad_passes`). The full distributions ("dist") are the one source
        computed on demand, a group of rows at a time (too large to hold for the batch)."""

        def dist_rows(which: str, rows: list[int]) -> torch.Tensor:
            if which != "dist":
                raise UserError(
                    f"a component read {which!r} log-probs without declaring it (needs= at "
                    "registration, grpo_core.registry.NEEDS)"
                )
            was_training = self.model.training
            self.model.eval()
            try:
                return self._logprobs_nograd(self.model, ro.select(rows), entropy="dist")
            finally:
                self.model.train(was_training)

        ctx = GroupContext(
            texts=ro.texts,
            problems=problems,
            finish_reasons=ro.finish_reasons,
            lengths=ro.policy_mask.sum(-1).tolist(),
            group_sizes=list(sizes),
            max_new_tokens=self.cfg.rollout.max_new_tokens,
            task=self.task,
            step=step,
            total_steps=self.cfg.train.steps,
            indices=list(indices),
            completion_ids=ro.completion_ids,
            completion_mask=ro.policy_mask,  # the policy's tokens (multi-turn: not observations)
            rows_fn=dist_rows,
            tokenizer=self.tok,
            seed=self.cfg.run.seed,
            env_rewards=None
            if episodes is None or all(r is None for rs in episodes.turn_rewards for r in rs)
            else episodes.env_reward(),
            episodes=episodes,
            rm_root=str(Path(self.cfg.run.results_dir) / self.cfg.profile / "rm"),
        )
        for k, v in (passes or {}).items():
            ctx._cache[f"logp/{k}"] = v
        return ctx

    def no_grad_passes(self, ro: Rollouts, needs: set[str]) -> dict[str, torch.Tensor]:
        """What ``needs`` asks of the rollouts ``ro``, in one no-grad pass per model: the
        policy's per-token log-probs (with the entropies from the same pass when "entropy" is
        needed) and the reference's. Counted in :attr:`passes` (per model, this step)."""
        out: dict[str, torch.Tensor] = {}
        if needs & {"policy", "entropy"}:
            was_training = self.model.training
            self.model.eval()  # no dropout in log-prob passes
            try:
                lp, ent = self._nograd_pass(self.model, ro, entropy="entropy" in needs)
            finally:
                self.model.train(was_training)
            out["policy"] = lp
            if ent is not None:
                out["entropy"] = ent
            self.passes["policy"] = self.passes.get("policy", 0) + 1
        if "ref" in needs:
            if self.ref is None:
                raise UserError(
                    "a component needs reference log-probs but there is no reference model; "
                    "set train.log_kl: true or loss.kl.beta > 0"
                )
            with self.ref.context():
                out["ref"], _ = self._nograd_pass(self.ref.model, ro)
            self.passes["ref"] = self.passes.get("ref", 0) + 1
        return out

    def reuse_old_logprobs_valid(self, ro: Rollouts, behaviour: bool = False) -> bool:
        """train.reuse_old_logprobs: auto and the update is on-policy: one epoch of one
        minibatch that is one micro-batch (the gradient pass covers the batch at the weights
        that sampled it), no engine copy with its own sampler log-probs, no FSDP, no dropout
        (a pass in train mode computes what the eval-mode no-grad pass does). ``behaviour``:
        the sampler log-probs are an asynchronous batch's behaviour log-probs; its old
        (proximal) log-probs are the current weights', which the gradient pass computes."""
        t = self.cfg.train
        return (
            t.reuse_old_logprobs == "auto"
            and t.mu == 1
            and t.minibatches == 1
            and len(ro) <= t.micro_batch_size
            and (ro.sampler_logp is None or behaviour)
            and not self.fsdp
            and not has_dropout(self.model)
            and ro.media is None  # the score-time pass carries no media (a VLM's rows)
        )

    def kl_beta(self, step: int | None = None) -> float:
        kl = self.cfg.loss.kl
        return schedule_value(
            kl.beta, kl.schedule, self.step if step is None else step, self.cfg.train.steps
        )

    def _nograd_pass(
        self, model, ro: Rollouts, entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """([N, C] per-token log-probs, [N, C] entropies or None) of ``model`` (the policy's or
        the reference's), in micro-batches, no grad."""
        self._fsdp_align(model, ro)
        self._count("nograd_processed", processed_tokens(ro))
        out = self.policy.logprobs(ro, {"logp", "entropy"} if entropy else {"logp"}, model=model)
        return out["logp"], out.get("entropy")

    def _logprobs_nograd(self, model, ro: Rollouts, entropy: bool | str = False) -> torch.Tensor:
        """[N, C] per-token log-probs of the completions (or, with ``entropy``, the per-token
        entropies of the model's distribution; with ``entropy="dist"`` the [N, C, V]
        log-distributions), in micro-batches, no gradient."""
        self._fsdp_align(model, ro)
        self._count("nograd_processed", processed_tokens(ro))
        key = "dist" if entropy == "dist" else ("entropy" if entropy else "logp")
        return self.policy.logprobs(ro, {key}, model=model)[key]

    def _fsdp_align(self, model, ro: Rollouts) -> None:
        """Under FSDP every rank runs the same number of policy passes: pad with empty ones."""
        if self.fsdp and model is self.model:
            n_iter = math.ceil(len(ro) / self.cfg.train.micro_batch_size)
            for _ in range(dist.all_max(n_iter) - n_iter):
                self._empty_pass(ro, backward=False)

    # ---------------------------------------------------------------- one training step

    def train_step(self, step: int) -> dict:
        """One step, top to bottom: episodes and their rewards (:meth:`collect`, the sampler's
        extra round), the no-grad passes and advantages (:meth:`score`), the update
        (:meth:`optimize`), then what follows it (:meth:`after_update`)."""
        self.passes = {}
        self._tokens = {}
        t0 = time.perf_counter()
        batch, stats = self.collect(step)
        if batch is not None and hasattr(self.sampler, "extra_round"):
            with self._gen_lock():
                stats.update(self._extra_round(batch, step))
        t_roll = time.perf_counter() - t0
        if batch is not None and not self.cfg.train.optimize:
            return self._no_update_step(batch, step, stats, t0, t_roll)
        if batch is None:  # every group had zero reward variance and the round cap was hit
            stats.update(
                loss=0.0,
                grad_norm=0.0,
                clip_frac=0.0,
                entropy=float("nan"),
                kl=float("nan"),
                lr=self.opt.param_groups[0]["lr"],
                rollout_s=t_roll,
                train_s=0.0,
                tokens_per_s=0.0,
            )
            self.sched.step()
            if self._async is not None:  # (no update: the same weights, the schedule goes on)
                self._async_after_update(step)
            stats.update(self.compute_stats(time.perf_counter() - t0))
            return stats
        t_lp = self.score(batch, step, stats)
        t1 = time.perf_counter()
        logs = self.optimize(batch)
        t_train = time.perf_counter() - t1
        stats.update(self.after_update(batch, logs, step))
        stats.update(logs)
        ro = batch.rollouts
        n_tok = dist.all_sum(int(ro.completion_mask.sum()) + int(ro.prompt_mask.sum()))
        stats.update(
            lr=self.opt.param_groups[0]["lr"],
            kl_beta=self.kl_beta(step),
            adv_abs_mean=float(batch.advantages.abs().mean()),
            frac_truncated=sum(f == "length" for f in ro.finish_reasons) / len(ro),
            rollout_s=t_roll,
            logprob_s=t_lp,  # the no-grad passes (old / reference / component needs)
            train_s=t_train,
            tokens_per_s=n_tok / max(time.perf_counter() - t0, 1e-9),
        )
        stats.update(self.compute_stats(time.perf_counter() - t0))
        return stats

    def compute_stats(self, step_s: float) -> dict:
        """The step's compute (summed over ranks) and the run's so far, for metrics.jsonl:

        - ``tokens_generated``: policy tokens sampled (every generation round, extra rounds too);
        - ``tokens_trained``: loss-mask tokens through forward + backward (each of the mu epochs);
        - FLOPs (the usual estimate, Kaplan et al. 2020: 2 N per token of a forward pass, 6 N of
          a forward + backward; N = :func:`flop_params`, no attention-context term):
          ``flops_generation`` = 2 N x (prompt + completion tokens of every sampled sequence),
          ``flops_nograd`` = 2 N x tokens of the no-grad log-prob passes (old / reference /
          components' needs, each pass counted), ``flops_train`` = 6 N x (prompt + completion
          tokens) of each training micro-batch per epoch; ``flops`` their sum;
        - ``*_cum``: sums over the steps so far (resumed from the checkpoint), ``step_s`` this
          step's wall seconds and ``wall_cum_s`` their sum (curve evaluation and checkpoints
          not included). Timing fields (TIMING_FIELDS) differ between identical runs."""
        tk = {
            k: int(dist.all_sum(self._tokens.get(k, 0)))
            for k in (
                "generated",
                "gen_processed",
                "nograd_processed",
                "trained",
                "train_processed",
            )
        }
        n = float(self.n_flop_params)
        fl_gen = 2.0 * n * tk["gen_processed"]
        fl_ng = 2.0 * n * tk["nograd_processed"]
        fl_tr = 6.0 * n * tk["train_processed"]
        c = self.compute_cum
        c["tokens_generated_cum"] += tk["generated"]
        c["tokens_trained_cum"] += tk["trained"]
        c["flops_cum"] += fl_gen + fl_ng + fl_tr
        c["wall_cum_s"] += step_s
        return {
            "tokens_generated": tk["generated"],
            "tokens_trained": tk["trained"],
            "flops_generation": fl_gen,
            "flops_nograd": fl_ng,
            "flops_train": fl_tr,
            "flops": fl_gen + fl_ng + fl_tr,
            "tokens_generated_cum": int(c["tokens_generated_cum"]),
            "tokens_trained_cum": int(c["tokens_trained_cum"]),
            "flops_cum": float(c["flops_cum"]),
            "step_s": step_s,
            "wall_cum_s": float(c["wall_cum_s"]),
        }

    def score(self, batch: Batch, step: int, stats: dict) -> float:
        """Everything the loss needs besides the gradient pass, into ``batch`` (logs into
        ``stats``): the no-grad passes of the union of needs (old log-probs when the batch is
        reused, the reference's, what the advantage estimator and token weights declared), the
        train/sampler importance weights, KL in the reward, advantages and token weights.
        Returns the seconds spent in the passes."""
        cfg = self.cfg
        ro = batch.rollouts
        mask = ro.policy_mask  # the policy's tokens: what losses, KL and entropy count
        # "old" log-probs come from the training model's forward pass (needed when the batch is
        # reused: mu > 1 or several minibatches); on-policy they equal logp.detach().
        # A separate rollout engine (vLLM) samples from its own copy of the weights: the
        # training model's log-probs of the batch are then needed to measure the mismatch.
        off_policy = cfg.train.mu > 1 or cfg.train.minibatches > 1 or ro.sampler_logp is not None
        kl_cfg = cfg.loss.kl
        beta = self.kl_beta(step)
        kl_in_reward = self.ref is not None and beta > 0 and kl_cfg.placement == "reward"
        # the union of what this step's parts need, one no-grad pass per model
        needs = set(self.advantage_needs) | self.token_weight_needs
        needs |= {"policy"} if off_policy or kl_in_reward else set()
        needs |= {"ref"} if self.ref is not None else set()
        t_lp = time.perf_counter()
        have = batch.passes or {}
        todo = needs - set(have)
        reused = {}
        behaviour = batch.policy_version is not None  # (asynchronous rollouts)
        if todo & {"policy", "entropy"} and self.reuse_old_logprobs_valid(ro, behaviour):
            # on-policy: the log-probs the components need are the gradient pass's, detached;
            # the pass runs now and the loss uses it (no separate no-grad policy pass)
            with torch.enable_grad():
                logp, ent = self.policy.forward_logprobs(
                    ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask, True
                )
            batch.grad_forward = (logp, ent)
            reused["policy"] = logp.detach().cpu()
            if "entropy" in todo:
                reused["entropy"] = ent.detach().cpu()
            todo = todo - {"policy", "entropy"}
        passes = {**self.no_grad_passes(ro, todo), **reused, **have}
        t_lp = time.perf_counter() - t_lp
        batch.old_logp = passes["policy"] if off_policy else None
        batch.ref_logp = passes.get("ref")
        if ro.sampler_logp is not None:
            batch.is_weight, mismatch = sampler_mismatch(
                batch.old_logp,
                ro.sampler_logp,
                mask,
                cfg.rollout.is_correction,
                cfg.rollout.is_cap,
                more=batch.policy_version is not None,
            )
            stats.update(mismatch)
        if batch.policy_version is not None:  # asynchronous rollouts: how stale, which weights
            stats.update(staleness=step - batch.policy_version, policy_version=batch.policy_version)
            if ro.sampler_logp is None:  # sampled by the current weights: on-policy
                stats.update(ON_POLICY_IS_STATS)
        rewards = batch.rewards
        if kl_in_reward:
            # KL in the reward: r_i <- r_i - beta * sum_t kl_t under the sampling policy
            kl_seq = (kl_estimate(passes["policy"], batch.ref_logp, kl_cfg) * mask).sum(-1)
            rewards = rewards - beta * kl_seq
        gctx = self._group_context(
            ro, batch.problems, batch.group_sizes, batch.indices, step, passes
        )
        gctx.episodes = batch.episodes
        batch.advantages, adv_logs = compute_advantages_logged(
            rewards, batch.group_sizes, cfg.advantage, gctx
        )
        stats.update(adv_logs)
        if isinstance(batch.advantages, TurnAdvantages):  # step-level: per turn, onto tokens
            if cfg.loss.name not in TOKEN_ADVANTAGE_LOSSES:
                raise UserError(
                    f"advantage {cfg.advantage.name!r} gives per-turn advantages, but loss.name "
                    f"{cfg.loss.name!r} takes one advantage per sequence; use one of "
                    f"{list(TOKEN_ADVANTAGE_LOSSES)}"
                )
            turns = batch.advantages
            batch.token_advantages = turns.to_tokens(ro.turn_ids, mask)
            batch.advantages = turns.seq()
            stats["adv_token_abs_mean"] = float(
                (batch.token_advantages.abs() * mask).sum() / mask.sum().clamp(min=1)
            )
        if batch.adv_override is not None:  # rows that joined with a fixed advantage
            fixed = ~torch.isnan(batch.adv_override)
            batch.advantages = torch.where(fixed, batch.adv_override, batch.advantages)
        # share of the batch's sequences with a non-zero advantage (they carry a gradient)
        nonzero = batch.advantages.abs() > 1e-8
        if nonzero.dim() > 1:  # per-token advantages [N, C]: a sequence with any non-zero one
            nonzero = nonzero.any(-1)
        stats["frac_nonzero_adv"] = dist.all_sum(float(nonzero.sum())) / max(
            dist.all_sum(len(batch.advantages)), 1
        )
        if self.token_weight_fn is not None:
            tw = cfg.loss.token_weights
            batch.token_weight, tw_logs = self.token_weight_fn(
                gctx, batch.advantages, gctx.logprobs("policy"), mask, **tw.params
            )
            stats.update({f"tw/{k}": float(v) for k, v in tw_logs.items()})
        return t_lp

    def after_update(self, batch: Batch, logs: dict, step: int) -> dict:
        """After the optimizer steps: the reference follows the policy if it moves, the rollout
        engine gets the new weights, the schedule steps, the sampler sees the kept groups.
        Returns what to log."""
        out = {}
        if self.ref is not None:  # a moving reference follows the policy
            out.update(
                self.ref.after_step(
                    step,
                    lambda: (
                        dist.full_state_dict(self.model) if self.fsdp else self.model.state_dict()
                    ),
                )
            )
        if self.fsdp:  # gather the new shards into the rollout copy
            dist.copy_full_weights(self.model, self.rollout_model)
            self.engine.sync_weights(self.rollout_model)
        else:
            self.engine.sync_weights(self.model)  # the next rollouts sample from the new weights
        self.sched.step()
        # entropy: the token mean over the batch (entropy control)
        out.update(self._sampler_update(batch, step, entropy=logs.get("entropy")))
        if self._async is not None:  # the new weights to the worker, the next job behind them
            self._async_after_update(step)
        return out

    def optimize(self, batch: Batch) -> dict:
        """mu epochs over minibatches; each minibatch is one optimizer step, accumulated over
        micro-batches whose loss shares sum exactly to the minibatch loss."""
        cfg, lc = self.cfg, self.cfg.loss
        ro = batch.rollouts
        n = len(ro)
        n_mb = max(1, min(cfg.train.minibatches, dist.all_min(n)))  # same step count on all ranks
        mb_size = math.ceil(n / n_mb)
        micro = cfg.train.micro_batch_size
        norm_c = lc.norm_constant or cfg.rollout.max_new_tokens
        gen = torch.Generator().manual_seed(derive_seed(cfg.run.seed, self.step, 7))
        sums = {"loss": 0.0, "entropy": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": 0.0}
        tok_total, n_opt = 0.0, 0
        for epoch in range(cfg.train.mu):
            order = torch.randperm(n, generator=gen) if epoch > 0 else torch.arange(n)
            for s in range(0, n, mb_size):
                mb = order[s : s + mb_size]
                # minibatch-global denominators: the sums over all ranks' shares
                n_seqs = int(dist.all_sum(len(mb)))
                n_tokens = int(dist.all_sum(int(ro.policy_mask[mb].sum())))
                self.opt.zero_grad(set_to_none=True)
                mb_loss = 0.0
                if self.fsdp:  # pad to the same number of backward passes on every rank
                    n_iter = math.ceil(len(mb) / micro)
                    for _ in range(dist.all_max(n_iter) - n_iter):
                        self._empty_pass(ro, backward=True)
                mb_stats = self._minibatch_stats(batch, mb, first=n_opt == 0)
                if cfg.train.micro_batches == "by_length" and len(mb) > micro:
                    whole = cfg.loss.name in WHOLE_GROUP_LOSSES  # groups kept together
                    gid = row_groups(batch.group_sizes or [n])[0] if whole else None
                    mb = longest_first(ro, mb, gid)
                for u in range(0, len(mb), micro):
                    ix = mb[u : u + micro]
                    loss, st = self.micro_loss(batch, ix, n_seqs, n_tokens, norm_c, mb_stats)
                    loss.backward()
                    self._count("trained", int(ro.policy_mask[ix].sum()))
                    self._count(
                        "train_processed",
                        int(ro.prompt_mask[ix].sum()) + int(ro.completion_mask[ix].sum()),
                    )
                    mb_loss += float(loss.detach())
                    if epoch == 0:  # metrics of the policy that generated the batch
                        for k in st:
                            if k != "tokens":
                                sums[k] = sums.get(k, 0.0) + st[k]
                        tok_total += st["tokens"]
                gn = self._clip_and_step()
                sums["loss"] += dist.all_sum(mb_loss)
                sums["grad_norm"] += gn
                n_opt += 1
        tok_keys = [k for k in sums if k not in ("loss", "grad_norm")]
        for k in tok_keys:  # (every rank has the same keys: the same components)
            sums[k] = dist.all_sum(sums[k])
        tok_total = dist.all_sum(tok_total)
        out = {"loss": sums["loss"] / n_opt, "grad_norm": sums["grad_norm"] / n_opt}
        out.update({k: sums[k] / max(tok_total, 1) for k in tok_keys})  # token-weighted means
        return out

    def _minibatch_stats(self, batch: Batch, mb: torch.Tensor, first: bool) -> dict | None:
        """Minibatch-global statistics for a policy loss that declares ``minibatch_stats``
        (e.g. a KL hinge on the whole minibatch): its sums over this rank's micro-batches at
        the current weights, without gradient, summed over ranks. Before the step's first
        optimizer step the weights are those of the old log-probs (no extra pass)."""
        decl = getattr(self.pg_loss, "minibatch_stats", None)
        fn = decl(self.cfg.loss) if decl is not None else None
        if fn is None:
            return None
        sub = batch.rollouts.select(mb.tolist())
        if batch.old_logp is None:  # on-policy: the loss's old log-probs are the current ones
            old = cur = torch.zeros(sub.policy_mask.shape)
        else:
            old = cur = batch.old_logp[mb]
            if not first:  # the weights moved since the old log-probs: one no-grad pass
                was_training = self.model.training
                self.model.eval()
                try:
                    cur = self._logprobs_nograd(self.model, sub)
                finally:
                    self.model.train(was_training)
        out = fn(cur, old, sub.policy_mask)
        return {k: dist.all_sum(v) for k, v in out.items()}

    def micro_loss(
        self,
        batch: Batch,
        ix: torch.Tensor,
        n_seqs: int,
        n_tokens: int,
        norm_c: float,
        mb_stats: dict | None = None,
    ):
        """Loss share of micro-batch ``ix`` and token-summed stats (entropy, kl, clipped);
        ``mb_stats``: the minibatch-global statistics of :meth:`_minibatch_stats`."""
        lc, ro = self.cfg.loss, batch.rollouts
        mask = ro.policy_mask[ix]  # loss tokens (the policy's); attention covers them all
        need_ent_grad = lc.entropy_coef != 0
        if batch.grad_forward is not None and ix.tolist() == list(range(len(ro))):
            logp, ent = batch.grad_forward  # run in score (train.reuse_old_logprobs), once
            batch.grad_forward = None
        else:
            logp, ent = self.policy.forward_logprobs(
                ro.prompt_ids[ix],
                ro.prompt_mask[ix],
                ro.completion_ids[ix],
                ro.completion_mask[ix],
                with_entropy=True,
                **({} if ro.media is None else {"media": [ro.media[i] for i in ix.tolist()]}),
            )
        dev = logp.device
        mask = mask.to(dev)
        old = batch.old_logp[ix].to(dev) if batch.old_logp is not None else logp.detach()
        if batch.behaviour_logp is not None:  # replayed rows: their behaviour policy's
            beh = batch.behaviour_logp[ix].to(dev)
            old = torch.where(torch.isnan(beh), old, beh.to(old.dtype))
        adv = batch.advantages[ix].to(dev)
        # the policy loss's advantages: per token from a step-level estimator, else per sequence
        adv_pg = batch.token_advantages[ix].to(dev) if batch.token_advantages is not None else adv
        ref = batch.ref_logp[ix].to(dev) if batch.ref_logp is not None else None
        tw = batch.token_weight[ix].to(dev) if batch.token_weight is not None else None
        gid, gsize = row_groups(batch.group_sizes or [len(ro)])
        lctx = LossContext(
            entropy=ent,
            ref_logp=ref,
            rewards=batch.rewards[ix].to(dev),
            seq_index=ix,
            token_weight=tw,
            completion_ids=ro.completion_ids[ix].to(dev),
            step=self.step,
            total_steps=self.cfg.train.steps,
            group_ids=gid[ix].to(dev),
            group_sizes=gsize[ix].to(dev),
            minibatch=mb_stats,
            off_policy=batch.off_policy[ix].to(dev) if batch.off_policy is not None else None,
            tokenizer=self.tok,
        )
        loss_tok, clipped = self.pg_loss(logp, old, adv_pg, mask, lc, ctx=lctx)
        if tw is not None and self.token_weight_on == "policy":  # on the policy term only
            loss_tok = loss_tok * tw
        if batch.is_weight is not None:  # train-vs-sampler importance weights (no gradient)
            loss_tok = loss_tok * batch.is_weight[ix].to(dev)
        m = mask.to(logp.dtype)
        st = {}
        kl_tok = None
        if ref is not None:
            kl_tok = kl_estimate(logp, ref, lc.kl)
            beta = self.kl_beta()
            if beta > 0 and lc.kl.placement == "loss":
                loss_tok = loss_tok + beta * kl_tok
        if tw is not None and self.token_weight_on == "policy_kl":  # (policy + beta KL) * w
            loss_tok = loss_tok * tw
        for r, fn in self.regs:
            term, logs = fn(logp, old, adv, mask, lctx, **r.params)
            w = schedule_value(r.weight, r.schedule, self.step, self.cfg.train.steps)
            loss_tok = loss_tok + w * term
            st[f"reg/{r.name}"] = float((term.detach() * m).sum())
            for k, v in logs.items():  # per-token means of the micro-batch, re-weighted
                st[f"reg/{r.name}/{k}"] = float(v) * float(m.sum())
        if need_ent_grad:
            loss_tok = loss_tok - lc.entropy_coef * ent
        loss = aggregate(loss_tok, mask, lc.agg, n_seqs, n_tokens, norm_c)
        st.update(
            entropy=float((ent.detach() * m).sum()),
            kl=float((kl_tok.detach() * m).sum()) if kl_tok is not None else 0.0,
            clip_frac=float((clipped.to(m.dtype) * m).sum()),
            tokens=float(m.sum()),
        )
        return loss, st

    def _empty_pass(self, ro: Rollouts, backward: bool) -> None:
        """A forward (and backward) pass that contributes nothing: it keeps the FSDP collectives
        of a rank with fewer micro-batches in step with the others."""
        ctx = torch.enable_grad() if backward else torch.no_grad()
        with ctx:
            logp, _ = self.policy.forward_logprobs(
                ro.prompt_ids[:1],
                ro.prompt_mask[:1],
                ro.completion_ids[:1],
                ro.completion_mask[:1],
                **({} if ro.media is None else {"media": ro.media[:1]}),
            )
            if backward:
                (logp.sum() * 0.0).backward()

    def _clip_and_step(self) -> float:
        dist.sum_grads(self.model)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.train.max_grad_norm:
            gn = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.max_grad_norm)
        else:
            gn = (
                torch.norm(torch.stack([p.grad.norm() for p in params]))
                if params
                else torch.tensor(0.0)
            )
        if hasattr(gn, "full_tensor"):  # FSDP: a DTensor
            gn = gn.full_tensor()
        if not torch.isfinite(gn):
            raise RuntimeError(f"non-finite gradient norm at step {self.step}")
        self.opt.step()
        return float(gn)

    # ---------------------------------------------------------------- the loop

    def train(self, progress: bool = True, stop_at: int | None = None) -> Path | None:
        """Run steps [self.step, train.steps) (or up to ``stop_at``); write metrics.jsonl and
        checkpoints. Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and
        returns. A finished run returns at once and writes nothing."""
        if self._lock is not None:
            self._lock.acquire()  # (again, when train is called a second time)
        try:
            return self._train(progress, stop_at)
        finally:
            self.release()

    def _train(self, progress: bool, stop_at: int | None) -> Path | None:
        cfg = self.cfg
        out = self.out_dir if dist.is_main() else None  # rank 0 writes metrics and checkpoints
        if self.finished:  # nothing to do; nothing is rewritten
            self.engine.close()
            return self.out_dir
        end = cfg.train.steps if stop_at is None else min(stop_at, cfg.train.steps)
        if dist.is_main():
            print(memory_estimate(self.model, cfg), flush=True)
        if out:
            keep = rundir.check_metrics(out / "metrics.jsonl", self.step)  # before any write
            try:
                out.mkdir(parents=True, exist_ok=True)
                if not (out / rundir.RUN_FILE).exists():
                    rundir.write_identity(out, cfg)
                save_config(cfg, out / "config.yaml")
                write_environment(out / ENV_FILE, cfg.run.device, self.step)
                rundir.write_atomic(out / "metrics.jsonl", "".join(ln + "\n" for ln in keep))
            except OSError as e:
                raise UserError(f"cannot write the run directory {out}: {_oserr(e)}") from e
        self._curve_steps = self._prepare_curve(out)
        old_handlers = {
            s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)
        }
        from tqdm import tqdm

        bar = tqdm(
            total=cfg.train.steps,
            initial=self.step,
            disable=not progress,
            desc=f"{cfg.reproduction} s{cfg.run.seed}",
            dynamic_ncols=True,
        )
        try:
            self._async_start()  # (rollout.max_staleness > 0: the worker and its first jobs)
            self._maybe_curve(out)  # step 0 (or the resumed step, when due and not written)
            while self.step < end and not self._stop:
                stats = self.train_step(self.step)
                row = {"step": self.step, **stats}
                self.step += 1
                if out:
                    try:
                        with open(out / "metrics.jsonl", "a") as f:
                            f.write(json.dumps(row) + "\n")
                    except OSError as e:
                        raise UserError(
                            f"cannot write {out / 'metrics.jsonl'}: {_oserr(e)}; the last good "
                            f"checkpoint in {out / 'checkpoint'} is kept: fix it and rerun to resume"
                        ) from e
                self._maybe_curve(out)
                every = cfg.train.checkpoint_every
                if every and self.step % every == 0 and self.step < cfg.train.steps:
                    self._checkpoint(out)
                bar.set_postfix(
                    reward=f"{stats['reward_mean']:.3f}", acc=f"{stats['accuracy']:.3f}"
                )
                bar.update(1)
            for job in list(self._inflight.values()):  # in flight: finished for the checkpoint
                job.wait()
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
            self._async_close()  # (an error: jobs not started are cancelled, the thread joined)
            self.engine.close()
        self._checkpoint(out)
        return out

    # ---------------------------------------------------------------- held-out curve

    def curve_due(self, step: int) -> bool:
        """eval.curve evaluates at step 0, every ``every`` steps and at the last step."""
        c = self.cfg.eval.curve
        return c is not None and (step % c.every == 0 or step == self.cfg.train.steps)

    def _prepare_curve(self, out: Path | None) -> set[int]:
        """Keep curve.jsonl's rows up to the resumed step (later ones came after the last
        checkpoint: dropped, they are evaluated again, with the same numbers); return the steps
        that have a row."""
        if self.cfg.eval.curve is None or out is None:
            return set()
        path = out / CURVE_FILE
        keep, steps = rundir.check_curve(path, self.step)
        try:
            if path.exists() or keep:
                rundir.write_atomic(path, "".join(ln + "\n" for ln in keep))
        except OSError as e:
            raise UserError(f"cannot write {path}: {_oserr(e)}") from e
        return steps

    def _maybe_curve(self, out: Path | None) -> None:
        if not self.curve_due(self.step) or self.step in self._curve_steps:
            return
        with self._gen_lock():
            row = self.curve_point(self.step)
        self._curve_steps.add(self.step)
        if out:
            try:
                with open(out / CURVE_FILE, "a") as f:
                    f.write(json.dumps(row) + "\n")
            except OSError as e:
                raise UserError(f"cannot write {out / CURVE_FILE}: {_oserr(e)}") from e

    def curve_point(self, step: int) -> dict:
        """One held-out curve point (eval.curve): mean@k over the first n_problems problems of
        the task's test split, k samples each at the eval temperature / top_p / max_new_tokens,
        in the run's env, graded by the task's grade (or the env's success). Sampling is seeded
        from (run seed, step) and every RNG state the trainer uses (torch CPU and CUDA,
        python, numpy) is restored afterwards, so training is exactly what it is without it.
        Every rank evaluates the same subset (identical results); rank 0 writes the row."""
        import numpy as np

        cfg, c, ev = self.cfg, self.cfg.eval.curve, self.cfg.eval
        test = self.task.test()[: c.n_problems]
        pre = getattr(self.sampler, "prefix_text", None)
        pre = pre() if pre is not None else None
        if pre:  # the sampler's prior (an experience library) before every prompt, as at eval
            test = [dataclasses.replace(p, prefix=pre) for p in test]
            self._curve_prompts = None
        problems = [p for p in test for _ in range(c.k)]
        if self._curve_prompts is None and cfg.env.name == "single_turn" and not pre:
            self._curve_prompts = single_turn_prompts(self.tok, cfg.task.template, test)
        params = SamplingParams(
            temperature=ev.temperature,
            top_p=ev.top_p,
            max_new_tokens=ev.max_new_tokens or cfg.rollout.max_new_tokens,
            stop=list(cfg.rollout.stop),
            seed=derive_seed(cfg.run.seed, step, CURVE_SEED_TAG),
        )
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        rng["numpy"] = np.random.get_state()
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if cuda:
            rng["cuda"] = torch.cuda.get_rng_state_all()
        was_training = self.model.training
        t0 = time.perf_counter()
        try:
            cache = self._curve_prompts
            ro, ep = play(
                cfg.env,
                self.task,
                cfg.task.template,
                problems,
                [episode_seed(ev.seed, r) for r in range(len(problems))],
                self.engine,
                self.tok,
                params,
                prompt_fn=(lambda r: cache[r // c.k]) if cache is not None else None,
                **({} if self.processor is None else {"processor": self.processor}),
            )
            succ = ep.success()
            if all(x is not None for x in succ):
                scores = [float(bool(x)) for x in succ]
            else:
                grades = grade_texts(self.task, ro.texts, problems)
                scores = [float(g.score >= 1.0) for g in grades]
        finally:
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
            if cuda:
                torch.cuda.set_rng_state_all(rng["cuda"])
            self.model.train(was_training)
        cum = self.compute_cum
        return {
            "step": step,
            "flops_cum": float(cum["flops_cum"]),
            "tokens_generated_cum": int(cum["tokens_generated_cum"]),
            "tokens_trained_cum": int(cum["tokens_trained_cum"]),
            "wall_cum_s": float(cum["wall_cum_s"]),
            "accuracy": sum(scores) / len(scores),
            "n": len(test),
            "k": c.k,
            "eval_s": time.perf_counter() - t0,
        }

    def _checkpoint(self, out: Path | None) -> None:
        """Rank 0 writes the checkpoint; under FSDP every rank adds its optimizer shard."""
        if self.fsdp and self.out_dir:
            self.save_checkpoint(self.out_dir / "checkpoint")
        elif out:
            self.save_checkpoint(out / "checkpoint")

    def _on_signal(self, signum, frame) -> None:
        if self._stop:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop = True
        self._stop_signal = signum
        print(
            f"\nsignal {signum}: finishing step {self.step} and saving a checkpoint (again to abort)"
        )

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(self, path: Path) -> None:
        """Policy (HF format, safetensors) + optimizer, scheduler, sampler and RNG state
        (training_state/: JSON + safetensors, no pickle). Written to checkpoint.tmp, marked
        complete, then renamed: a crash never leaves half a checkpoint, and a crash between the
        renames is finished by rundir.recover. A write error (disk full, permissions) is a
        UserError that keeps the last good checkpoint."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        main = dist.is_main()
        inflight = self._async_state() if self._async_k else None  # (waits for the worker)
        try:
            if main and tmp.exists():
                shutil.rmtree(tmp)
            if self.fsdp:  # each rank's optimizer shard; the full weights are in the rollout copy
                dist.barrier()
                tmp.mkdir(parents=True, exist_ok=True)
                rundir.save_state(
                    self.opt.state_dict(),
                    tmp / rundir.STATE_DIR / f"optimizer_rank{dist.rank()}",
                )
                dist.barrier()
                if not main:
                    dist.barrier()  # wait for rank 0 to finish the checkpoint
                    return
                self.rollout_model.save_pretrained(tmp, safe_serialization=True)
            elif is_peft(self.model):  # a plain HF model with LoRA merged (for eval) + the adapter
                self.model.get_base_model().save_pretrained(
                    tmp, state_dict=merged_state_dict(self.model), safe_serialization=True
                )
                self.model.save_pretrained(tmp / "adapter", safe_serialization=True)
            else:
                self.model.save_pretrained(tmp, safe_serialization=True)
            self.tok.save_pretrained(tmp)
            files = getattr(self.sampler, "checkpoint_files", None)
            for name, text in (files() if files is not None else {}).items():
                (tmp / name).write_text(text)  # what the sampler learned (eval reads it)
            ref_state = self.ref.state_tensors() if self.ref is not None else None
            if ref_state is not None:  # a moving reference is training state too
                from safetensors.torch import save_file

                save_file(ref_state, str(tmp / REF_STATE_FILE))
            rundir.save_state(
                {
                    "step": self.step,
                    "optimizer": None if self.fsdp else self.opt.state_dict(),
                    "scheduler": self.sched.state_dict(),
                    "sampler": self.sampler.state_dict(),
                    "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
                    "compute": {k: float(v) for k, v in self.compute_cum.items()},
                    # asynchronous rollouts: the batches in flight (sampled, not yet trained)
                    **({"async_rollouts": inflight} if inflight is not None else {}),
                },
                tmp / rundir.STATE_DIR / "state",
            )
            rundir.mark_complete(tmp, self.step)
        except (OSError, RuntimeError) as e:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(
                f"could not write checkpoint {tmp} ({_oserr(e)}); the last good checkpoint "
                f"{path} is kept: free space or fix permissions, then rerun to resume"
            ) from e
        except Exception as e:  # safetensors' own error type (not an OSError)
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            if type(e).__name__ != "SafetensorError":
                raise
            raise UserError(
                f"could not write checkpoint {tmp} ({e}); the last good checkpoint {path} is kept"
            ) from e
        old = path.with_name(path.name + ".old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
        if self.fsdp:
            dist.barrier()

    def _async_state(self) -> dict:
        """The in-flight jobs (waited for: the worker finishes them first), as state trees."""
        return {"jobs": [j.state() for _, j in sorted(self._inflight.items())]}

    def load_checkpoint(self, path: Path) -> None:
        from safetensors.torch import load_file

        path = Path(path)
        try:
            if (path / STATE_FILE).exists():
                state = rundir.load_state(path / rundir.STATE_DIR / "state")
            else:  # written by an older version: a pickle, read without running code
                state = rundir.load_legacy_state(path / rundir.LEGACY_STATE)
            if is_peft(self.model):  # resume the adapter; the base weights are frozen
                from peft import set_peft_model_state_dict

                ad = load_file(path / "adapter" / "adapter_model.safetensors")
                res = set_peft_model_state_dict(self.model, ad)
                missing, unexpected = [], list(res.unexpected_keys)
            else:
                files = sorted(
                    f
                    for f in path.glob("*.safetensors")
                    if f.name != REF_STATE_FILE and not f.name.startswith("optimizer_rank")
                )
                if not files:
                    raise FileNotFoundError("no *.safetensors in the checkpoint")
                sd = {}
                for f in files:
                    sd.update(load_file(f))
                if is_vlm(self.model):  # saved in the Hub's key layout: loaded through it
                    sd = vlm_state_dict(path, next(self.model.parameters()).dtype)
                if self.fsdp:  # full weights -> this rank's shards, and the rollout copy
                    from torch.distributed.checkpoint.state_dict import (
                        StateDictOptions,
                        set_model_state_dict,
                    )

                    self.rollout_model.load_state_dict(sd, strict=False)
                    res = set_model_state_dict(
                        self.model, sd, options=StateDictOptions(full_state_dict=True, strict=False)
                    )
                    missing, unexpected = res.missing_keys, res.unexpected_keys
                else:
                    missing, unexpected = self.model.load_state_dict(sd, strict=False)
            missing = [
                m
                for m in missing
                if not (m.endswith("lm_head.weight") and self.model.config.tie_word_embeddings)
            ]
            if missing or unexpected:
                raise KeyError(
                    f"weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
                )
            if self.fsdp:
                opt_state = dist.optimizer_state_from_local(
                    self.opt,
                    rundir.load_state(path / rundir.STATE_DIR / f"optimizer_rank{dist.rank()}"),
                )
            else:
                opt_state = state["optimizer"]
            self.opt.load_state_dict(opt_state)
            if self.ref is not None and self.ref.state_tensors() is not None:
                self.ref.load_state_tensors(load_file(path / REF_STATE_FILE))
            self.sched.load_state_dict(state["scheduler"])
            self.sampler.load_state_dict(state["sampler"])
            if self._async_k:  # the batches that were in flight (sampled by older weights)
                jobs = [
                    RolloutJob.from_state(d, self.train_set)
                    for d in state["async_rollouts"]["jobs"]
                ]
                self._inflight = {(j.step, j.rnd): j for j in jobs}
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is a user-facing error
            first = str(e).splitlines()[0] if str(e) else ""
            raise UserError(
                f"checkpoint {path} cannot be resumed ({type(e).__name__}: {first}); "
                "start over with --fresh (moves the run aside)"
            ) from None
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        self.step = int(state["step"])
        for k, v in (state.get("compute") or {}).items():  # (absent: written by an older version)
            if k in self.compute_cum:
                self.compute_cum[k] = int(v) if k.startswith("tokens") else float(v)


def _oserr(e: BaseException) -> str:
    """One line for an I/O error: 'No space left on device: /path' (or the message)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f": {e.filename}" if e.filename else "")
    return str(e).splitlines()[0] if str(e) else type(e).__name__
