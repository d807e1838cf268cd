"""Typed params of the registered components (``<kind>.params`` in the config).

Each model lists a component's params with their defaults (the numbers the component uses
when a key is absent) and range constraints; unknown keys are errors. The registries attach them
(``@ADVANTAGES.register("gtpo", params=GtpoParams)``) and grpo_core.config.check_components
validates every ``advantage.params``, ``loss.params``, ``loss.regularisers[i].params``,
``loss.token_weights.params``, ``rewards[i].params``, ``sampler.params`` and ``task.params`` at
load time. Reward functions need no model here: theirs is derived from their keyword arguments.
Components read their params with ``Registry.resolve_params`` (validated, these defaults
filled in), so the defaults and checks live only here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from grpo_core.registry import NoParams, Params

__all__ = ["NoParams", "Params"]

# ------------------------------------------------------------------ advantage estimators


class XrpoNoveltyParams(Params):
    lam: float = Field(1.0, ge=0)
    kappa: float = Field(0.5, ge=0)


class ReinforceBaselineParams(Params):
    baseline: Literal["mean", "logavgexp"] = "mean"
    tau: float = Field(1.0, gt=0)
    delta: float = 0.0
    scale: float = 1.0


class GtpoParams(Params):
    h_max: float = Field(0.7, ge=0)
    gamma: float = 0.1


class TempsampParams(Params):
    # TempSamp-R1's non-linear reward shaping before the GRPO advantage (the authors'
    # transform_rewards): a near-flat plateau above the threshold, an exponential ramp below
    threshold: float = Field(0.8, gt=0, lt=1)
    alpha: float = Field(1.0, gt=0)  # steepness of the ramp below the threshold
    plateau: float = Field(0.01, ge=0)  # slope factor of the log above the threshold


class SeagentAdvParams(Params):
    """SEAgent's "GRPO on successes": the GRPO advantage on the judge's reward, kept only on
    rows the judge labels a success (reward >= ``success``); failures get 0 here (the
    adversarial-imitation regulariser ``seagent_ai`` pushes them away instead)."""

    success: float = 0.5


class SeedGrpoParams(Params):
    alpha: float = Field(0.5, ge=0)  # <= 1 with f linear (below)
    f: Literal["linear", "exp", "inverse"] = "linear"
    mass: Literal["likelihood", "count"] = "likelihood"

    @model_validator(mode="after")
    def _alpha_linear(self):
        # f linear: 1 - alpha * SE / SE_max must stay >= 0 (no sign flip of the advantage)
        if self.f == "linear" and self.alpha > 1:
            raise ValueError(f"alpha {self.alpha}: want it in [0, 1] with f linear")
        return self


class GigpoParams(Params):
    # verl-agent (gigpo/core_gigpo.py, its ppo_trainer.yaml and example scripts): gamma 0.95,
    # step_advantage_w 1.0, mode mean_std_norm; episode statistics over the group's steps
    gamma: float = Field(0.95, ge=0, le=1)
    step_weight: float = 1.0
    mode: Literal["mean_std_norm", "mean_norm"] = "mean_std_norm"
    episode_stats: Literal["steps", "trajectories"] = "steps"


class SaltParams(Params):
    # what a step's state is when merging identical (state, action) steps: the observation
    # it was taken in, or the whole history before it (a prefix tree)
    state: Literal["observation", "history"] = "observation"
    base: Literal["grpo", "rloo"] = "grpo"


class MGrpoParams(Params):
    # M-GRPO's trajectory alignment: D_max sub-agent slots per trajectory (null: the most calls
    # of any trajectory in the group); the main agent's turn is the episode's last
    sub_slots: int | None = Field(None, ge=1)


class HrpoParams(Params):
    # MasHost's HRPO read onto tool-call episodes (no public code; the paper's objectives:
    # quality, resource efficiency, component rationality). Our choices, documented in
    # reproductions/mashost/README.md: call_cost lambda per non-answer turn in the trajectory
    # reward (efficiency), action_reward +-a for a rational / irrational call (rationality),
    # action_weight w on it; action_norm: "none" adds the raw action reward, "group" its
    # normalisation over the group's non-answer turns
    call_cost: float = Field(0.1, ge=0)
    action_reward: float = Field(1.0, ge=0)
    action_weight: float = Field(0.5, ge=0)
    action_norm: Literal["none", "group"] = "none"


class RankGrpoParams(Params):
    # per-rank reward: the rank's own gain ("individual", the authors' exp_inf default) or the
    # discounted gains from this rank to the end of the list ("log_decay")
    reward: Literal["individual", "log_decay"] = "individual"


# ------------------------------------------------------------------ policy losses


class DiscoParams(Params):
    tau: float = Field(10.0, gt=0)
    beta: float = Field(1.0e3, ge=0)
    delta: float = Field(1.0e-4, ge=0)
    score: Literal["logp", "ratio"] = "logp"
    kl: Literal["k1", "k3"] = "k3"
    hinge_on: Literal["minibatch", "micro_batch"] = "minibatch"


class RegGrpoParams(Params):
    scale: Literal["std", "fixed"] = "std"
    min_std: float = Field(0.1, gt=0)
    beta: float = Field(1.0, gt=0)


class GraoParams(Params):
    beta: float = Field(0.5, ge=0)  # imitation weight (the group's reference completion y)
    lam: float = Field(0.5, ge=0)  # alignment-regularisation weight (pairs o_i vs y)


class P3oParams(Params):
    clip: Literal["separate", "joint"] = "separate"


class SftEasyParams(Params):
    easy_acc: float = Field(0.75, ge=0, le=1)  # group accuracy at or above which a prompt is easy
    correct_reward: float = 1.0  # a row is correct when its reward >= this
    sft_coef: float = Field(1.0, ge=0)


class RankRatioParams(Params):
    sep: str = "\n"  # the separator between a ranked list's entries


class PolicyShapingParams(Params):
    gamma: float = Field(0.1, gt=0)  # f(pi) = pi / (pi + gamma) on off-policy rows


# ------------------------------------------------------------------ regularisers, token weights
# (called with **params: names and defaults must equal the function's keyword arguments)


class SeagentAiParams(Params):
    """SEAgent's adversarial imitation of failure actions (the authors' grpo_trainer.py, bad
    steps): -log sigmoid(-(log pi_theta - log pi_ref)) per token of rows whose reward is below
    ``success``; the regulariser's weight is the authors' neg_gamma."""

    success: float = 0.5


class LldsParams(Params):
    min_adv: float = 0.0


class KdReverseKlParams(Params):
    estimator: Literal["k1", "k2", "k3"] = "k2"
    skip_correct: bool = True
    correct_reward: float = 1.0


class GtpoConflictParams(Params):
    pos_weight: float = Field(2.0, ge=0)
    neg_weight: float = Field(0.0, ge=0)
    norm_by_conflicts: bool = True
    count: Literal["max", "union"] = "max"
    on: Literal["policy", "policy_kl"] = "policy"


class TwGrpoParams(Params):
    alpha: float = Field(1.4, ge=0)
    on: Literal["policy", "policy_kl"] = "policy_kl"


# ------------------------------------------------------------------ samplers


class SamplerParams(Params):
    """Every sampler built on the uniform one: train on the first ``pool`` prompts only."""

    pool: int | None = Field(None, ge=1, strict=True)


class DynamicParams(SamplerParams):
    metric: Literal["acc", "reward"] = "acc"  # what must vary within a kept group


class NonzeroStdFilterParams(Params):
    metric: Literal["acc", "reward"] = "acc"  # what must vary within a kept group


class RewardStdFilterParams(Params):
    """ReST-GRPO's group filter (ReST-RL, experiment/process_gen_data.py): keep a prompt whose
    group's population std (np.std, ddof 0) of ``metric`` is at least ``threshold``."""

    threshold: float = Field(0.05, gt=0)  # the authors' --std_accept_threshold_grpo
    metric: Literal["acc", "reward"] = "reward"  # the authors filter the (pass-rate) reward


class AepoParams(Params):  # no pool: the aepo sampler rejects it
    target: float = Field(0.5, ge=0)
    t_high: float = Field(1.2, gt=0)
    t_low: float = Field(0.8, gt=0)
    frac: float = Field(0.25, gt=0, le=1)
    min_adv: float = 0.05
    max_rows: int = Field(60, ge=0)
    advantage: float = 1.0


class ReferenceParams(SamplerParams):
    frac: float = Field(1.0, gt=0, le=1)  # share of the batch's prompts that get the reference
    # add: the reference joins its group as one more row (GRAO); replace: it takes the place of
    # the group's last sampled row (TempSamp-R1's ground-truth injection, gt_replace_index -1)
    mode: Literal["add", "replace"] = "add"


class CritiqueParams(SamplerParams):
    frac: float = Field(1.0, gt=0, le=1)  # share of the batch's prompts that get a refinement
    critique: Literal["simple", "simple_gt", "hint"] = "simple_gt"


class UrpoParams(SamplerParams):
    frac: float = Field(0.5, gt=0, le=1)  # share of the batch's prompts that become referee data
    group_size: int | None = Field(None, ge=2)  # referee samples per referee prompt (None: G)


class ExperienceParams(SamplerParams):
    # who writes an experience's text: rule (the error class of the worse rollout and a worked
    # example; no model) or policy (the model itself, one greedy sentence per group)
    summariser: Literal["rule", "policy"] = "rule"
    max_items: int = Field(8, ge=1)  # library size; the least supported ones are deleted first
    ttl: int = Field(10, ge=1)  # updates an experience survives without being reinforced
    max_chars: int = Field(400, ge=1)  # the prefix shown to the policy is cut to this length
    only_partial: bool = True  # learn only from groups whose rewards differ (the paper's)
    header: str = "Experiences:"
    summary_tokens: int = Field(40, ge=1)  # the policy summariser's new tokens


class ArpoParams(SamplerParams):
    # ARPO (dvlab-research/ARPO, verl/trainer/replay_buffer.py and ray_trainer.apply_replay):
    # a FIFO buffer of 8 successful trajectories per task (eval_result > 0.1); a group whose
    # rewards have population std < 0.05 and mean < 0.2 gets one of them, drawn at random, in
    # place of its first rollout
    buffer_size: int = Field(8, ge=1, strict=True)
    success: float = 0.1  # a trajectory is stored when its reward exceeds this
    fail_std: float = Field(0.05, ge=0)
    fail_mean: float = 0.2
    n_replay: int = Field(1, ge=1, strict=True)  # replayed trajectories per failed group
    # task selection: after the first epoch over the pool, only tasks whose first visit had a
    # success (the paper's tasks the baseline agent solves at least once)
    select: bool = True
    # old log-probs of a replayed row: the behaviour policy's, stored with it (the PPO ratio
    # is then pi_theta / pi_behaviour), or the current policy's (ARPO's code recomputes them)
    importance: Literal["stored", "recompute"] = "stored"


class KnapsackParams(SamplerParams):
    min_n: int = Field(2, ge=2)
    max_n: int | None = Field(None, ge=2)
    success: float = 1.0
    base_value: Literal["min_n", "zero"] = "min_n"


class CuresParams(SamplerParams):
    min_n: int = Field(2, ge=1)
    max_n: int | None = Field(None, ge=1)
    success: float = 1.0


class VadeParams(SamplerParams):
    prior_a: float = Field(1.0, gt=0)
    prior_b: float = Field(1.0, gt=0)
    decay_slow: float = Field(0.99, ge=0, le=1)
    decay_fast: float = Field(0.5, ge=0, le=1)
    success: float = 1.0


class VasParams(SamplerParams):
    w_var: float = 1.0
    w_div: float = 0.0
    mix: float = Field(0.5, ge=0, le=1)
    update_every: int = Field(4, ge=1)
    ngram: int = Field(2, ge=1)
    success: float = 1.0


class XrpoParams(SamplerParams):
    base: int | None = Field(None, ge=2)
    max_n: int | None = Field(None, ge=2)
    alpha: float = Field(0.05, gt=0, lt=1)
    c: float = Field(0.1, ge=0)
    prior_std: float = Field(0.5, ge=0)


class SeagentParams(SamplerParams):
    """SEAgent's curriculum generator over tasks on unfamiliar apps (grpo_core.samplers.
    SeagentSampler): a task is proposed when its level is unlocked and, above level 1, every
    state key its goal changes is one the agent has already changed on that app (explored);
    unsolved tasks first. A level unlocks when the judged success rate of the last ``window``
    episodes of the level below reaches ``promote``."""

    success: float = 0.5  # a judged reward counted as success
    promote: float = Field(0.5, ge=0, le=1)
    window: int = Field(16, ge=1)
    max_level: int = Field(3, ge=1)


class ScafParams(SamplerParams):
    warmup_steps: int = Field(0, ge=0)  # no hints before this step (the authors' 50)
    max_level: int | None = Field(None, ge=1)  # hint levels tried (None: every piece)
    success: float = 1.0  # an accuracy counted as solved


class SeeleParams(SamplerParams):
    target: float = Field(0.5, gt=0, lt=1)  # the accuracy a hint length is chosen for
    a: float = Field(8.0, gt=0)  # IRT discrimination (slope in the hint rate)
    c: float = Field(0.0, ge=0, lt=0.5)  # IRT guessing floor
    rate0: float = Field(0.0, ge=0, le=1)  # hint rate of a prompt's first round
    max_rate: float = Field(1.0, gt=0, le=1)  # largest hint rate given
    history: int = Field(8, ge=1)  # (rate, accuracy) pairs kept per prompt for the fit
    success: float = 1.0  # an accuracy counted as solved


class DifficultyAugParams(SamplerParams):
    """DeepVideo-R1's difficulty-aware augmentation (sampler ``difficulty_aug``)."""

    metric: Literal["acc", "reward"] = "acc"  # a group's difficulty: its mean accuracy / reward
    decay: float = Field(0.9, ge=0, lt=1)  # EMA of the reference level: ref <- d ref + (1-d) m
    easy: float = 1.0  # a group whose mean is >= easy (and above the reference) is too easy
    hard: float = 0.0  # a group whose mean is <= hard (and below the reference) is too hard
    margin: float = Field(0.0, ge=0)  # how far above / below the reference it must also be
    noise: float = Field(0.15, gt=0, le=1)  # pixel noise std of a harder clip (share of 255)
    hint_frac: float = Field(0.5, gt=0, le=1)  # share of the hint pieces an easier prompt shows

    @model_validator(mode="after")
    def _thresholds(self):
        if self.hard >= self.easy:
            raise ValueError(f"hard {self.hard} >= easy {self.easy}: want hard < easy")
        return self


# ------------------------------------------------------------------ tasks


class JsonlTaskParams(Params):
    grader_workers: int | None = Field(None, ge=1)  # None: half the CPUs, 1 to 4
    grader_timeout_s: float = Field(5.0, gt=0)


class RecRankTaskParams(Params):
    n_items: int = Field(12, ge=4, le=26)  # catalog: the first n_items lowercase letters
    k: int = Field(3, ge=1, le=10)  # list length, NDCG@k
    n_liked: int = Field(2, ge=1, le=4)  # items the user is shown to like (in the prompt)

    @model_validator(mode="after")
    def _fits(self):
        if self.n_liked + self.k > self.n_items:
            raise ValueError(f"n_liked + k = {self.n_liked + self.k} > n_items {self.n_items}")
        return self


class CodeFnTaskParams(Params):
    """Task code_fn (grpo_core.tasks.CodeFn): generated small Python functions with unit tests,
    run in grpo_core.sandbox (grpo_core.codeexec)."""

    n_tests: int = Field(4, ge=1, le=12)  # asserts per problem
    score: Literal["all", "fraction"] = "all"  # 1 only when all pass, or the fraction passed
    t_test: float = Field(1.0, gt=0, le=30)  # seconds per test (and to run the definitions)
    t_prog: float = Field(3.0, gt=0, le=120)  # seconds per program, then it is killed
    chunk: int = Field(64, ge=1, le=1024)  # programs per sandbox call


class GuessNumberTaskParams(Params):
    lo: int = 1
    hi: int = Field(9, ge=1)


class VideoMCParams(Params):
    frames: int = Field(4, ge=2, le=16)  # frames per clip
    size: int = Field(28, ge=14, le=112)  # clip height = width in px (a multiple of 14)
    # held-out question type: only in the test split's level L3
    held_out: Literal["count", "direction", "order", "changed"] = "changed"
    # share of the train split replaced by temporal grounding questions ("when does the red
    # shape move?", answered "<start>-<end>" frame indices, graded by IoU): drawn from a stream
    # of their own, so 0 (the default) is today's task item for item; the test split is never
    # changed (grpo_core.tasks.VideoMC)
    grounding: float = Field(0.0, ge=0, le=1)
    # TW-GRPO's question-answer inversion (longmalongma/TW-GRPO data/question_answer_inverse):
    # the share of training clips whose question is negated ("Which shape does not change
    # colour?") with the original answer's option and 1-3 of the others shown, every other
    # option gold ("A,C"); drawn from a stream of its own, so 0 (the default) keeps the items
    # and the data RNG unchanged; the test split is never inverted
    qa_inversion: float = Field(0.0, ge=0, le=1)


class ArithCotParams(Params):
    cot_frac: float = Field(0.5, ge=0, le=1)


WIRELESS_KINDS = ("capacity", "spectral", "snr_db", "path_loss", "link_budget", "noise_floor")


class WirelessMathParams(Params):
    # formula families drawn (uniformly): grpo_core.tasks.WirelessMath
    kinds: list[Literal[WIRELESS_KINDS]] = Field(default_factory=lambda: list(WIRELESS_KINDS))
    # the test split: the general task's (transfer) or held-out wireless problems
    test_split: Literal["general", "wireless"] = "general"
    # the general task (a registered task built from the same task settings: n_test, seed,
    # difficulty, path): the profile's own task, so that evaluation measures transfer to it
    general_task: str = "arith_mix"

    @model_validator(mode="after")
    def _kinds(self):
        if not self.kinds:
            raise ValueError("kinds: name at least one formula family")
        return self


# ------------------------------------------------------------------ envs


class GuessNumberParams(Params):
    reward: float = 1.0  # reward of a right guess


class TwxCoinTaskParams(Params):
    """TextWorldExpress coin collector games (task twx_coin): each problem's number of
    locations is drawn from [locations_min, locations_max] (3-5: leaves RL headroom for a ~1M
    model); test problems come from the package's ``test_fold`` seeds."""

    locations_min: int = Field(3, ge=1, le=11)
    locations_max: int = Field(5, ge=1, le=11)
    include_doors: bool = False
    distractor_items: int = Field(0, ge=0)
    limit_inventory: bool = True
    test_fold: Literal["test", "dev"] = "test"

    @model_validator(mode="after")
    def _range(self):
        if self.locations_min > self.locations_max:
            raise ValueError(
                f"locations_min {self.locations_min} > locations_max {self.locations_max}"
            )
        return self


class TwxEnvParams(Params):
    show_actions: bool = True  # list the valid actions after every observation


class TwGamesTaskParams(Params):
    """TextWorld games (task tw_games; grpo_core.textworld_env): ``family`` simple (tw-make
    custom: ``world_size`` rooms, ``nb_objects`` objects, a quest of ``quest_length`` actions) or
    cooking (tw-make tw-cooking: ``quest_length`` ingredients, ``nb_objects`` of them to take,
    ``world_size`` rooms rounded up to 1 / 6 / 9 / 12, ``cook`` / ``cut`` steps), generated
    offline and cached under ``games_dir`` (relative: to $GRPO_ROOT, else the current
    directory); or alfworld:
    ALFWorld's games read from ``alfworld_dir`` (its json_2.1.1 folder, a download; never
    fetched), train from ``train/``, test from ``alfworld_test_split``."""

    family: Literal["simple", "cooking", "alfworld"] = "simple"
    world_size: int = Field(3, ge=1, le=20)
    nb_objects: int = Field(5, ge=0, le=40)
    quest_length: int = Field(3, ge=1, le=20)
    cook: bool = False
    cut: bool = False
    games_dir: str = "results/_data/textworld"
    alfworld_dir: str | None = None
    alfworld_test_split: Literal["valid_unseen", "valid_seen"] = "valid_unseen"


class TextWorldEnvParams(Params):
    """Env textworld (grpo_core.episodes.TextWorldEnv): ``show_actions`` lists the admissible
    commands after every observation; ``only_admissible`` refuses other commands (else the game's
    parser answers them); ``max_action_chars`` refuses longer actions; ``normalize_score``: a
    step's reward is the score change over the game's max score (a win sums to 1)."""

    show_actions: bool = True
    only_admissible: bool = True
    max_action_chars: int = Field(64, ge=4)
    normalize_score: bool = True


# ------------------------------------------------------------------ search (Search-R1 style)


class SearchQATaskParams(Params):
    """The generated entity corpus of task search_qa (grpo_core.tasks.SearchQA): how many
    people, companies, cities and countries; ``max_hops`` 1 keeps only the 1-hop questions."""

    people: int = Field(40, ge=1, le=500)
    companies: int = Field(12, ge=1, le=200)
    cities: int = Field(8, ge=1, le=100)
    countries: int = Field(3, ge=1, le=50)
    max_hops: Literal[1, 2] = 2


class SearchEnvParams(Params):
    """Env search (grpo_core.episodes.SearchEnv): BM25 top ``top_k`` documents per search, at
    most ``max_searches`` searches per episode, queries of at most ``max_query_chars``
    characters; ``gold_route``: the gold actions (SFT) name the supporting entity's kb."""

    top_k: int = Field(3, ge=1, le=20)
    max_searches: int = Field(4, ge=1)
    max_query_chars: int = Field(64, ge=1)
    gold_route: bool = True


class GuiTaskParams(Params):
    """Task gui_apps (grpo_core.tasks.GuiApps; apps of grpo_core.gui): which app kinds, the
    sub-goals per task (levels 1..``max_level``), the fold the train split's apps come from
    (``train``; ``novel``: apps whose labels and layouts neither SFT nor the test split has)
    and how many tasks each app gets (levels cycling from 1)."""

    kinds: list[Literal["settings", "form", "list", "files"]] = Field(
        default_factory=lambda: ["settings", "form", "list", "files"], min_length=1
    )
    max_level: int = Field(2, ge=1, le=3)
    train_apps: Literal["train", "novel"] = "train"
    tasks_per_app: int = Field(1, ge=1, le=3)


class GuiEnvParams(Params):
    """Env gui (grpo_core.episodes.GuiEnv): an action longer than ``max_action_chars`` or a
    typed text longer than ``max_text_chars`` is refused; ``reward`` for a task done."""

    max_action_chars: int = Field(48, ge=4)
    max_text_chars: int = Field(16, ge=1)
    reward: float = 1.0


class CodeProcessParams(Params):
    """Posterior-GRPO's process reward on task code_fn (grpo_core.rewards.code_process_reward):
    ``gate: success`` counts it only where every test passed (the paper's R_o * R_t),
    ``none`` on every completion (the control: process reward everywhere). ``hack_at``: a
    completion whose process score is at least this while a test fails counts as a hack."""

    gate: Literal["success", "none"] = "success"
    hack_at: float = Field(1.0, ge=0, le=1)


class EGrpoParams(Params):
    """E-GRPO's entity-aware reward (grpo_core.rewards.e_grpo_reward): a wrong answer earns
    ``alpha`` times its entity match rate (divided by the group's largest when ``normalise``)."""

    alpha: float = Field(0.3, ge=0, le=1)
    normalise: bool = True


class R1RouterParams(Params):
    """R1-Router's step rewards (grpo_core.rewards.r1_router_reward): a search step earns
    ``w_query`` x query similarity + ``w_kb`` x [right kb]; the answer step its EM."""

    w_query: float = Field(0.5, ge=0)
    w_kb: float = Field(0.5, ge=0)


class ToolsSandboxParams(Params):
    """Limits of the env tools' python tool (grpo_core.sandbox.SandboxConfig)."""

    cpu_s: float = Field(2.0, gt=0)
    wall_s: float = Field(5.0, gt=0)
    memory_mb: int = Field(512, ge=32)
    max_procs: int = Field(16, ge=1)
    file_mb: int = Field(8, ge=1)
    max_output: int = Field(4096, ge=1)
    isolate: bool = True  # false: run model-written code without network / PID isolation


class ToolsEnvParams(Params):
    """The env tools (grpo_core.episodes.ToolsEnv; the tools in grpo_core.tools)."""

    tools: list[Literal["calculator", "python"]] = Field(
        default_factory=lambda: ["calculator", "python"], min_length=1
    )
    reward: float = 1.0  # reward of a right answer (times the task's grade)
    instructions: bool = True  # the tools' description before the task's prompt
    max_input_chars: int = Field(500, ge=1)  # a longer tool input is refused
    max_result_chars: int = Field(200, ge=8)  # a longer result is cut
    # share of problems whose gold conversation (multi-turn SFT) calls the calculator before
    # answering; the others answer at once
    gold_tool_frac: float = Field(1.0, ge=0, le=1)
    sandbox: ToolsSandboxParams = Field(default_factory=ToolsSandboxParams)


class VideoComEnvParams(Params):
    """The env video_com (grpo_core.episodes.VideoComEnv): Video-CoM's chain of visual
    manipulations on video_mc clips."""

    instructions: bool = True  # the actions' description after the task's prompt
    # a crop is a correct step when its IoU with a queried object's box in the current frame
    # reaches this (Video-CoM reward_funcs.py: 0.35)
    iou: float = Field(0.35, gt=0, le=1)
    # the env's reward of a correct manipulation turn (the answer turn: the task's grade); the
    # reproduction's reward is Video-CoM's (rewards video_com), which reads the trace instead
    step_reward: float = Field(1.0, ge=0)
    max_action_chars: int = Field(200, ge=8)  # a longer tag content is refused
    # the gold chain of multi-turn SFT: a frame with the evidence, a crop of the queried shape
    # in it (not for count), then the answer (frame_crop); the frame only (frame); none
    gold: Literal["frame_crop", "frame", "none"] = "frame_crop"


class RewardModelParams(Params):
    """The reward ``reward_model`` (grpo_core.rewards.reward_model_reward): a reward model
    trained in the workflow (``name``: config/reward_models/<name>.yaml, its checkpoint
    <results>/<profile>/rm/<name>/seed<run seed>/) or at ``path``; its heads combined by
    ``weights`` (head -> weight; default equal weights over ``heads``, default every head),
    its members (``members``: a subset by index; default all) by ``combine`` with ``lam``."""

    name: str | None = None
    path: str | None = None
    heads: list[str] | None = None
    weights: dict[str, float] | None = None
    members: list[int] | None = None
    combine: Literal["mean", "min", "mean_minus_std", "mean_minus_var"] = "mean"
    lam: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name is None) == (self.path is None):
            raise ValueError("give the reward model's name (trained in the workflow) or a path")
        if self.name is not None and not self.name.replace("_", "").isalnum():
            raise ValueError(f"name {self.name!r}: want letters, digits and _")
        if self.members is not None and (not self.members or min(self.members) < 0):
            raise ValueError(f"members {self.members}: want a non-empty list of indices >= 0")
        return self


# ------------------------------------------------------------------ issue 16 (w2misc): gcpo,
# oncoreason, pta_grpo


class GeoAnglesParams(Params):
    """Task geo_angles (grpo_core.tasks.GeoAngles): reasoning-gym simple_geometry polygons."""

    # mixture weights of the polygon levels (tri: 2 known angles of a triangle, quad: 3 of a
    # quadrilateral)
    levels: dict[Literal["tri", "quad"], float] = Field(
        default_factory=lambda: {"tri": 1.0, "quad": 1.0}
    )
    min_angle: int = Field(20, ge=1, le=170)  # reasoning-gym's known-angle range
    max_angle: int = Field(150, ge=1, le=170)
    # share of SFT targets written with the auxiliary construction (<aux>a+b=s</aux>180-s=x)
    aux_frac: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _ok(self):
        if not self.levels or any(w < 0 for w in self.levels.values()):
            raise ValueError("levels: name at least one of tri / quad with a weight >= 0")
        if sum(self.levels.values()) <= 0:
            raise ValueError("levels: the weights add up to 0")
        if self.min_angle > self.max_angle:
            raise ValueError(f"min_angle {self.min_angle} > max_angle {self.max_angle}")
        return self


class GcpoParams(Params):
    """GeometryZero's GCPO reward (grpo_core.rewards.gcpo_reward): the auxiliary-construction
    reward under group contrastive masking, plus a length reward."""

    eta: float = Field(0.0, ge=0, lt=1)  # accuracy gap the group must show
    w_aux: float = Field(0.2, ge=0)
    w_len: float = Field(0.2, ge=0)
    len_target: int = Field(0, ge=0)  # tokens for the full length reward; 0: max_new_tokens
    len_on: Literal["correct", "all"] = "correct"
    open_tag: str = Field("<aux>", min_length=1)
    close_tag: str = Field("</aux>", min_length=1)


CLINIC_TASKS = ("stage", "risk", "survive")


class ClinicParams(Params):
    """Task clinic_mix (grpo_core.tasks.ClinicMix): synthetic patient records, several
    classification tasks each with a short rationale."""

    # mixture weights of the record tasks
    tasks: dict[Literal[CLINIC_TASKS], float] = Field(
        default_factory=lambda: {k: 1.0 for k in CLINIC_TASKS}
    )

    @model_validator(mode="after")
    def _ok(self):
        if not self.tasks or any(w < 0 for w in self.tasks.values()):
            raise ValueError("tasks: name at least one of stage / risk / survive, weights >= 0")
        if sum(self.tasks.values()) <= 0:
            raise ValueError("tasks: the weights add up to 0")
        return self


class OncoReasonParams(Params):
    """OncoReason's rationale terms (grpo_core.rewards.oncoreason_reward): the rationale's word
    F1 with the expert-derived one and the output format."""

    w_rationale: float = Field(0.5, ge=0)
    w_format: float = Field(0.25, ge=0)


class PtaPlanParams(Params):
    """PTA-GRPO's guidance-aware terms (grpo_core.rewards.pta_plan_reward): the plan's success
    rate in its group and the plan-then-answer format."""

    w_plan: float = Field(0.5, ge=0)
    w_format: float = Field(0.25, ge=0)
    open_tag: str = Field("<why>", min_length=1)
    close_tag: str = Field("</why>", min_length=1)
