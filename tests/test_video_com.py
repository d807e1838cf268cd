"""Video-CoM (issue 15): the env video_com (frame / crop manipulations as env actions on
video_mc clips, later observations with media), its evidence and reasoning score by hand,
reasoned observations for malformed and illegal actions, the gold chains of multi-turn SFT
with media, and smoke runs on a shrunken tiny_video_com (sampled, scripted, per-turn gigpo)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from test_video import VIDEO_RUN

# a hand-made clip: 28 px, 4 frames, black; red square r=2 at (10, 8) moving +3 px / frame in x;
# blue disc r=2 at (20, 20), static
RED, BLUE = [220, 40, 40], [50, 80, 230]


def _scene():
    return {
        "size": 28,
        "frames": 4,
        "bg": [0, 0, 0],
        "objects": [
            {"rgb": RED, "shape": "square", "r": 2, "x": 10, "y": 8, "dx": 3, "dy": 0},
            {"rgb": BLUE, "shape": "disc", "r": 2, "x": 20, "y": 20, "dx": 0, "dy": 0},
        ],
    }


def _problem(qtype="direction", claim="red moves right", answer="B", **meta):
    from grpo_core.tasks import Problem

    opts = ["left", "right", "up", "down"]
    q = "Which way does the red shape move?\nA. left\nB. right\nC. up\nD. down"
    m = {"scene": _scene(), "level": "L1", "qtype": qtype, "options": opts, "claim": claim}
    return Problem("hand", q, answer, meta={**m, **meta})


def _env(**params):
    from grpo_core.episodes import ENVS, VideoComEnv
    from grpo_core.tasks import VideoMC

    task = VideoMC(4, 3, 0, None, None, {"frames": 4, "size": 28, "held_out": "changed"})
    return VideoComEnv(task, "plain", ENVS.resolve_params("video_com", params, "env.params"))


# ---------------------------------------------------------------------------- by hand


def test_evidence_boxes_and_iou_by_hand():
    """The red square at frame f (0-based) covers x in [10 + 3f - 2, 10 + 3f + 2], y in [6, 10]:
    box [8 + 3f, 6, 13 + 3f, 11] (exclusive ends); all 4 frames show it. IoU of [8, 6, 13, 11]
    (25 px) with [9, 6, 14, 11] (25 px): 4 x 5 = 20 shared, union 30, 2/3."""
    from grpo_core.tasks import box_iou, mc_evidence

    frames, boxes = mc_evidence(_problem())
    assert frames == [1, 2, 3, 4]
    assert boxes == {1: [[8, 6, 13, 11]], 2: [[11, 6, 16, 11]], 3: [[14, 6, 19, 11]],
                     4: [[17, 6, 22, 11]]}  # fmt: skip
    assert box_iou([8, 6, 13, 11], [9, 6, 14, 11]) == pytest.approx(20 / 30)
    assert box_iou([0, 0, 2, 2], [5, 5, 7, 7]) == 0.0
    # count: every shape, every frame; changed: the blue disc from its change (frame 2, i.e.
    # 1-based 3) on
    cnt = _problem("count", "count 2", "B")
    assert mc_evidence(cnt)[1][1] == [[8, 6, 13, 11], [18, 18, 23, 23]]
    sc = _scene()
    sc["objects"][1].update(change_at=2, change_rgb=[240, 140, 20])
    ch = _problem("changed", "blue changes", "A", scene=sc)
    assert mc_evidence(ch) == ([3, 4], {3: [[18, 18, 23, 23]], 4: [[18, 18, 23, 23]]})
    # order: the shape from its appear frame on
    sc = _scene()
    sc["objects"][0]["appear"] = 3
    assert mc_evidence(_problem("order", "red appears last", "A", scene=sc))[0] == [4]


def test_reasoning_score_by_hand():
    """Trace: frame 2 (correct), frame 2 again (counted once), frame 1 (wrong), crop correct,
    crop wrong, crop unscored (None), a bad action, the answer: scored = 2 distinct frames + 2
    crops = 4, correct = 1 + 1 = 2, score 1/2. Nothing scored: 0."""
    from grpo_core.tasks import com_reasoning_score

    trace = [
        ["frame", "2", True, None],
        ["frame", "2", True, None],
        ["frame", "1", False, None],
        ["crop", "1:0,0,5,5", True, None],
        ["crop", "1:0,0,9,9", False, None],
        ["crop", "3:0,0,9,9", None, None],
        ["bad", "", None, "no action in the turn"],
        ["answer", "B", None, None],
    ]
    assert com_reasoning_score(trace) == (0.5, 2, 4)
    assert com_reasoning_score([["answer", "B", None, None]]) == (0.0, 0, 0)
    assert com_reasoning_score([]) == (0.0, 0, 0)


def _ctx(texts, infos, problems, task):
    from grpo_core.episodes import Episodes
    from grpo_core.rewards import GroupContext

    n = len(texts)
    ep = Episodes([[None]] * n, [1] * n, infos, [[t] for t in texts], ["done"] * n)
    return GroupContext(
        texts=texts,
        problems=problems,
        finish_reasons=["stop"] * n,
        lengths=[1] * n,
        group_sizes=[n],
        max_new_tokens=8,
        task=task,
        episodes=ep,
    )


def test_video_com_reward_by_hand():
    """r = grade + score: (a) right answer, frame right + crop right: 1 + 2/2 = 2; (b) right
    answer, no manipulation: 1 + 0 = 1; (c) wrong answer, frame right, crop wrong: 0 + 1/2;
    (d) never answered (turn cap after one right frame): 0 + 1 = 1. w_steps 0.5 halves the
    step part: [1.5, 1, 0.25, 0.5]."""
    from grpo_core.errors import UserError
    from grpo_core.rewards import REWARDS

    env = _env()
    p = _problem()
    right, wrong = "<think>red moves right</think><answer>B</answer>", "<answer>A</answer>"

    def play(actions):
        env.reset(p, 0)
        for a in actions:
            res = env.step(a)
        return res.info

    infos = [
        play(["<frame>1</frame>", "<crop>8,6,13,11</crop>", right]),
        play([right]),
        play(["<frame>2</frame>", "<crop>0,0,28,28</crop>", wrong]),
        play(["<frame>4</frame>"]),
    ]
    texts = [right, right, wrong, "<frame>4</frame>"]
    ctx = _ctx(texts, infos, [p] * 4, env.task)
    fn = REWARDS.get("video_com", "rewards")
    r, logs = fn(ctx)
    assert r.tolist() == [2.0, 1.0, 0.5, 1.0]
    assert logs["frame_acc"] == 1.0 and logs["crop_acc"] == 0.5
    assert logs["answer_acc"] == 0.5 and logs["manipulations"] == (2 + 0 + 2 + 1) / 4
    assert fn(ctx, w_steps=0.5)[0].tolist() == [1.5, 1.0, 0.25, 0.5]
    # the crop [0, 0, 28, 28] vs the red box (25 px): IoU 25 / 784 < 0.35
    assert infos[2]["trace"][1][2] is False
    no_env = _ctx(texts, [{}] * 4, [p] * 4, env.task)
    with pytest.raises(UserError, match="env.name: video_com"):
        fn(no_env)


# ---------------------------------------------------------------------------- the env


def test_frame_and_crop_observations():
    """<frame>2</frame> shows frame 2 itself (a 1-frame clip) after the placeholder; a crop
    inside the red square (uniform colour) is upsampled to a 28 x 28 red frame; step rewards:
    the frame (shows red) 1, crops by their IoU with the red box at frame 2 [11, 6, 16, 11],
    frame 2 again 0 (counted once); the answer's reward is the task's grade."""
    from grpo_core import vision

    env = _env()
    p = _problem()
    obs = env.reset(p, 0)
    clip = vision.render_clip(p.meta["scene"])
    assert np.array_equal(obs.media["video"], clip)
    assert obs.messages[0]["content"].startswith(vision.VIDEO_PLACEHOLDER)
    assert "<frame>k</frame>" in obs.messages[0]["content"]  # the instructions
    res = env.step("<think>look</think><frame>2</frame>")
    assert not res.done and res.reward == 1.0 and res.info["frame"] == 2
    assert np.array_equal(res.observation.media["video"], clip[1:2])
    assert res.observation.messages[0]["content"] == vision.VIDEO_PLACEHOLDER + "frame 2 of 4"
    res = env.step("<crop>12,7,15,10</crop>")  # inside the square at frame 2 (x 11-15, y 6-10)
    z = res.observation.media["video"]
    assert z.shape == (1, 28, 28, 3) and (z == np.array(RED, dtype=np.uint8)).all()
    # 3 x 3 = 9 px inside the 25 px box: IoU 9 / 25 = 0.36 >= 0.35, a correct step
    assert res.info["trace"][-1] == ["crop", "2:12,7,15,10", True, None] and res.reward == 1.0
    res = env.step("<crop>13,7,15,10</crop>")  # 2 x 3 = 6 px: IoU 6 / 25 = 0.24, wrong
    assert res.info["trace"][-1][2] is False and res.reward == 0.0
    res = env.step("<crop>11,6,16,11</crop>")  # the box itself: IoU 1
    assert res.reward == 1.0 and res.info["trace"][-1][2] is True
    assert env.step("<frame>2</frame>").reward == 0.0  # the same frame again
    res = env.step("<think>red moves right</think><answer>B</answer>")
    assert res.done and res.observation is None and res.reward == 1.0 and res.info["success"]
    assert res.info["manipulations"] == 5 and res.info["bad_actions"] == 0
    # scored: frame 2 once (right) + 3 crops (right, wrong, right): 3 / 4
    assert res.info["reasoning_score"] == 0.75


@pytest.mark.parametrize(
    "action, why",
    [
        ("I think it moves right", "no action in the turn"),
        ("<frame>2", "unclosed <frame> tag"),
        ("<answer>B", "unclosed <answer> tag"),
        ("<frame>two</frame>", "frame 'two' is not an integer"),
        ("<frame>0</frame>", "frame 0 is out of range"),
        ("<frame>5</frame>", "frame 5 is out of range"),
        ("<frame>1</frame><frame>2</frame>", "2 manipulations in one turn"),
        ("<crop>1,2,3</crop>", "is not four integers"),
        ("<crop>1,2,3,x</crop>", "is not four integers"),
        ("<crop>5,5,5,9</crop>", "empty or outside the frame"),
        ("<crop>-1,0,4,4</crop>", "empty or outside the frame"),
        ("<crop>0,0,29,4</crop>", "empty or outside the frame"),
        ("<crop>0,0,4,4</crop>", "no frame to crop"),
        ("<frame>" + "1" * 300 + "</frame>", "characters (at most 200)"),
    ],
)
def test_malformed_and_illegal_actions_get_reasoned_observations(action, why):
    """Each is answered <error>why; the format</error> (no media), reward 0, the episode goes
    on, the bad action is counted and traced; the env then still takes a good action."""
    env = _env()
    env.reset(_problem(), 0)
    res = env.step(action)
    assert not res.done and res.reward == 0.0 and res.observation.media is None
    text = res.observation.messages[0]["content"]
    assert text.startswith("<error>") and why in text and "one action per turn" in text
    assert res.info["bad_actions"] == 1 and res.info["trace"][-1][0] == "bad"
    assert res.info["success"] is False
    assert env.step("<frame>1</frame>").observation.media is not None


def test_random_text_never_crashes():
    env = _env()
    rng = random.Random(0)
    alphabet = list("<>/framecopnsw0123456789,-x ") + ["<frame>", "</frame>", "<crop>", "</crop>"]
    for _ in range(300):
        env.reset(_problem(), 0)
        for _t in range(3):
            res = env.step("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))))
            assert res.reward in (0.0, 1.0)
            if res.done:
                break


def test_env_needs_a_scene():
    from grpo_core.errors import UserError
    from grpo_core.tasks import Problem

    with pytest.raises(UserError, match="use it with task.name: video_mc"):
        _env().reset(Problem("x", "q", "A", meta={"video": "v.mp4"}), 0)


def test_gold_chains():
    """direction: the last frame (4), the red box there [17, 6, 22, 11] with a 1 px margin, the
    SFT target; count: frame 1 and the answer; gold none: the answer alone."""
    env = _env()
    target = "<think>red moves right</think><answer>B</answer>"
    assert env.gold_actions(_problem()) == ["<frame>4</frame>", "<crop>16,5,23,12</crop>", target]
    cnt = _problem("count", "count 2", "B")
    assert env.gold_actions(cnt) == ["<frame>1</frame>", "<think>count 2</think><answer>B</answer>"]
    assert _env(gold="none").gold_actions(_problem()) == [target]
    # the gold chain earns the full reward: both steps correct, the answer right
    env.reset(_problem(), 0)
    rewards = [env.step(a).reward for a in env.gold_actions(_problem())]
    assert rewards == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------- media in later turns


@pytest.fixture(scope="module")
def tiny_vl():
    from grpo_core.models import build_tiny_vl_model, build_tiny_vl_tokenizer
    from grpo_core.schema import TinyModelCfg

    tok = build_tiny_vl_tokenizer()
    cfg = TinyModelCfg(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
                       num_kv_heads=2, max_position_embeddings=1024)  # fmt: skip
    return build_tiny_vl_model(cfg, tok), tok


def test_runner_appends_later_media_and_vlm_logprobs_match_the_model(tiny_vl):
    """A scripted 3-turn episode (frame, crop, answer) through run_episodes: the trajectory
    holds 3 clips' video tokens (8 for the 4-frame clip, 4 for each 1-frame observation), the
    row's media has 3 grids in that order, observation tokens are masked out of the loss; the
    VLM policy's log-probs of the policy tokens equal a direct model forward over the row."""
    from test_episodes import ScriptedEngine

    from grpo_core.episodes import play
    from grpo_core.rollout import SamplingParams
    from grpo_core.schema import EnvCfg
    from grpo_core.vision import VideoProcessor

    model, tok = tiny_vl
    proc = VideoProcessor.from_model(model)
    env = _env()
    p = _problem()

    class MediaEngine(ScriptedEngine):
        def generate(self, prompts, params, media=None):
            assert media is not None and len(media) == len(prompts)
            return super().generate(prompts, params)

    acts = ["<frame>2</frame>", "<crop>11,6,16,11</crop>", "<answer>B</answer>"]
    eng = MediaEngine(tok, [[a] for a in acts])
    env_cfg = EnvCfg(name="video_com", max_turns=5)
    ro, ep = play(env_cfg, env.task, "plain", [p], [0], eng, tok, SamplingParams(seed=0),
                  processor=proc)  # fmt: skip
    vid = model.config.video_token_id
    m = ro.media[0]
    assert m["video_grid_thw"].tolist() == [[2, 4, 4], [1, 4, 4], [1, 4, 4]]
    assert m["pixel_values_videos"].shape[0] == 32 + 16 + 16
    assert int((ro.prompt_ids[0] == vid).sum()) == 8
    assert int((ro.completion_ids[0] == vid).sum()) == 8  # two 1-frame clips of 4 tokens
    assert (ro.loss_mask[0][ro.completion_ids[0] == vid] == 0).all()
    assert ep.n_turns == [3] and ep.end_reasons == ["done"]
    assert ep.infos[0]["success"] and ep.turn_rewards[0] == [1.0, 1.0, 1.0]
    # the policy's log-probs vs the model's own forward (it computes its 3-D positions from
    # mm_token_type_ids and the 3 grids itself)
    from grpo_core.policy import make_policy

    pol = make_policy(model, tok, temperature=1.0, micro_batch_size=1)
    lp = pol.logprobs(ro, {"logp"})["logp"]
    ids = torch.cat([ro.prompt_ids, ro.completion_ids], 1)
    attn = torch.cat([ro.prompt_mask, ro.completion_mask], 1)
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=attn,
            pixel_values_videos=m["pixel_values_videos"],
            video_grid_thw=m["video_grid_thw"],
            mm_token_type_ids=(ids == vid).int() * 2,
            use_cache=False,
        ).logits
    c = ro.completion_ids.shape[1]
    ref = torch.log_softmax(logits[:, -c - 1 : -1].float(), -1)
    ref = ref.gather(-1, ro.completion_ids[..., None])[..., 0]
    mask = ro.loss_mask.bool()
    assert torch.allclose(lp[mask], ref[mask], atol=1e-5)


def test_gold_conversation_with_media(tiny_vl):
    """The SFT row of a gold chain: the prompt's clip and each manipulation's observation clip
    (3 grids), actions + EOS labelled, observations (and their video tokens) -100."""
    from grpo_core.prepare import gold_conversation
    from grpo_core.vision import VideoProcessor

    model, tok = tiny_vl
    proc = VideoProcessor.from_model(model)
    env = _env()
    prompt, comp, labels, media = gold_conversation(env, _problem(), 0, tok, 5, processor=proc)
    assert media["video_grid_thw"].tolist() == [[2, 4, 4], [1, 4, 4], [1, 4, 4]]
    vid = model.config.video_token_id
    assert prompt.count(vid) == 8 and comp.count(vid) == 8
    assert all(lab == -100 for c, lab in zip(comp, labels) if c == vid)
    labelled = [c for c, lab in zip(comp, labels) if lab != -100]
    want = []
    for a in env.gold_actions(_problem()):
        want += tok(a, add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert labelled == want
    from grpo_core.errors import UserError

    with pytest.raises(UserError, match="model is a text model"):
        gold_conversation(env, _problem(), 0, tok, 5)


# ---------------------------------------------------------------------------- smoke runs


@pytest.fixture(scope="module")
def com_cfg(tmp_path_factory):
    """Shrunken tiny_video_com configs whose start `grpo prepare` built once (multi-turn SFT on
    the gold chains, media in every turn)."""
    from grpo_core.config import load_config
    from grpo_core.prepare import prepare

    res = tmp_path_factory.mktemp("video_com_results")
    run = [o for o in VIDEO_RUN if not o.startswith("model.tiny")] + [
        "model.tiny={hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2, "
        "num_kv_heads: 2, max_position_embeddings: 1024}",
        "rollout.max_new_tokens=24",
    ]

    def make(slug, overrides=()):
        return load_config(slug, "tiny_video_com", [f"run.results_dir={res}", *run, *overrides])

    prepare(make("grpo"), log=lambda *a: None)
    return make


def _rows(d):
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


def test_video_com_trains_on_tiny_video_com(com_cfg, tmp_path):
    """Smoke: video_com trains 2 steps from the multi-turn SFT start; its reward's logs are in
    the metrics; then it evaluates with per-level accuracy and the agent metrics."""
    from evals.evaluate import evaluate
    from grpo_core.trainer import Trainer

    cfg = com_cfg("video_com")
    assert cfg.env.name == "video_com" and cfg.env.max_turns == 5
    assert [r.name for r in cfg.rewards] == ["video_com"]
    tr = Trainer(cfg, tmp_path / "run")
    assert tr.policy.kind == "vlm"
    tr.train(progress=False)
    rows = _rows(tmp_path / "run")
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"])
        assert 0.0 <= r["reward/video_com/reasoning_score"] <= 1.0
        assert r["reward/video_com/manipulations"] >= 0.0
    res = evaluate(cfg, tmp_path / "run" / "checkpoint", tmp_path / "eval")
    for k in ("acc_L1", "acc_L2", "acc_L3", "success_rate"):
        assert 0.0 <= res["metrics"][k] <= 1.0


@pytest.mark.parametrize("advantage", ["grpo", "gigpo"])
def test_video_com_scripted_gold_chains_through_the_trainer(com_cfg, tmp_path, advantage):
    """The trainer on episodes whose actions are the gold chains (a scripted engine in place of
    the sampler for the step's episodes): every row carries its clip plus one per manipulation,
    the reward is 1 + 1 = 2 per episode (grpo: zero advantages, the loss is the KL term
    alone), the per-turn gigpo estimator runs on the same episodes (its step level on the
    env's per-turn rewards), and the losses are finite."""
    from test_episodes import scripted_rollouts

    from grpo_core.trainer import Trainer

    cfg = com_cfg("video_com", [f"advantage.name={advantage}"])
    tr = Trainer(cfg, tmp_path / "run")
    gold_env = _env()
    gold_env.task = tr.task
    seen = {}
    orig, real = tr.episodes, tr.engine

    class GoldEngine:
        """Turn t of each running episode: its gold chain's action t."""

        def __init__(self, chains):
            self.chains, self.t, self.running = chains, 0, list(range(len(chains)))

        def generate(self, prompts, params, media=None):
            assert media is not None and len(media) == len(prompts) == len(self.running)
            texts = [self.chains[i][min(self.t, len(self.chains[i]) - 1)] for i in self.running]
            ro = scripted_rollouts(tr.tok, prompts, texts)
            ro.media = list(media)
            # the next turn runs the episodes that did not answer
            self.running = [i for i, t in zip(self.running, texts) if "<answer>" not in t]
            self.t += 1
            return ro

    def spy(row_idx, *a, **k):
        tr.engine = GoldEngine([gold_env.gold_actions(p) for p in tr.row_problems(row_idx)])
        try:
            ro, ep = orig(row_idx, *a, **k)
        finally:
            tr.engine = real
        seen["ro"], seen["ep"] = ro, ep
        return ro, ep

    tr.episodes = spy
    tr.train(progress=False)
    rows = _rows(tmp_path / "run")
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"])
        assert r["reward/video_com/reasoning_score"] == 1.0
        assert r["reward/video_com/answer_acc"] == 1.0
    ro, ep = seen["ro"], seen["ep"]
    assert all(e == "done" for e in ep.end_reasons)
    for m, info in zip(ro.media, ep.infos):
        assert m["video_grid_thw"].shape[0] == 1 + info["manipulations"]
        assert info["manipulations"] >= 1 and info["success"]
