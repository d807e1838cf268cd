"""The VLM policy and the synthetic video task (issue 15, first part): the patchifier's
layout, the processor's placeholder expansion, the policy's log-probs against the model's own
logits with left padding (3-D rotary positions), media through Rollouts, the video_mc task's
levels and its rule-scored rationale consistency, and a smoke GRPO run on video."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from grpo_core.errors import UserError
from grpo_core.schema import TinyModelCfg
from grpo_core.vision import (
    CLIP_MEAN,
    CLIP_STD,
    VIDEO_PLACEHOLDER,
    VideoProcessor,
    patchify_video,
    render_clip,
)


@pytest.fixture(scope="module")
def vlm():
    from grpo_core.models import build_tiny_vl_model, build_tiny_vl_tokenizer

    tok = build_tiny_vl_tokenizer()
    cfg = TinyModelCfg(
        hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=2
    )
    model = build_tiny_vl_model(cfg, tok, seed=0).eval()
    # a random init is close to uniform, where positions barely move the log-probs: the text
    # model's matrices x5 make them matter (1-D positions instead of 3-D then differ by ~0.04)
    with torch.no_grad():
        for n, w in model.named_parameters():
            if w.ndim == 2 and "visual" not in n:
                w.mul_(5.0)
    return model, tok


def test_patchify_layout_by_hand():
    # 2 frames of 4x4 px, patch 2, temporal patch 2, merge 2: grid (1, 2, 2), one merge window.
    # Pixel (f, y, x, c) = 255 iff (f, y, x, c) == (1, 0, 2, 0), i.e. frame 1, patch row 0,
    # patch column 1 (x = 2 -> column 1, offset 0), channel 0. Rows are ordered (t, h/m, w/m,
    # m_h, m_w) = patch (0, 0), (0, 1), (1, 0), (1, 1): the pixel is in row 1. Within a row the
    # layout is (C, tp, p, p): index c * 8 + f * 4 + (y % 2) * 2 + (x % 2) = 0 + 4 + 0 + 0 = 4.
    frames = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    frames[1, 0, 2, 0] = 255
    pv, thw = patchify_video(frames, patch=2, temporal_patch=2, merge=2)
    assert thw.tolist() == [1, 2, 2]
    assert pv.shape == (4, 3 * 2 * 2 * 2)
    zero = torch.tensor([-m / s for m, s in zip(CLIP_MEAN, CLIP_STD)])  # value 0 normalised
    hot = (1.0 - CLIP_MEAN[0]) / CLIP_STD[0]  # 255 on channel 0 normalised: 1.9303
    assert abs(hot - 1.9303) < 1e-3
    want = zero.repeat_interleave(8).repeat(4, 1)
    want[1, 4] = hot
    assert torch.allclose(pv, want, atol=1e-6)
    # 3 frames: the last one is repeated to fill the temporal patch
    pv3, thw3 = patchify_video(np.concatenate([frames, frames[:1]]), 2, 2, 2)
    assert thw3.tolist() == [2, 2, 2] and pv3.shape[0] == 8
    with pytest.raises(UserError, match="multiples of patch_size"):
        patchify_video(np.zeros((2, 6, 6, 3), dtype=np.uint8), 2, 2, 2)


def test_processor_expands_the_placeholder(vlm):
    model, tok = vlm
    proc = VideoProcessor.from_model(model)
    assert (proc.patch, proc.temporal_patch, proc.merge) == (7, 2, 2)
    vid = tok.convert_tokens_to_ids("<|video_pad|>")
    assert proc.video_token_id == vid
    ids = tok(VIDEO_PLACEHOLDER + "Q?", add_special_tokens=False).input_ids
    assert ids.count(vid) == 1  # the special tokens are one token each
    clip = np.zeros((4, 28, 28, 3), dtype=np.uint8)
    out, media = proc.process(ids, {"video": clip})
    # 4 frames / 2 x (28 / 7)^2 = 2 x 4 x 4 = 32 patches, / 2^2 merge = 8 video tokens
    assert media["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert media["pixel_values_videos"].shape == (32, 3 * 2 * 7 * 7)
    assert out.count(vid) == 8 and len(out) == len(ids) + 7
    assert proc.process(ids, None) == (ids, None)
    with pytest.raises(UserError, match="exactly one"):
        proc.process(ids + [vid], {"video": clip})
    from grpo_core.models import build_tiny_model

    text_model = build_tiny_model(TinyModelCfg(hidden_size=16, intermediate_size=16), tok)
    assert VideoProcessor.from_model(text_model) is None


def _video_rollouts(model, tok, seed=0):
    """Two rows with prompts of different lengths (row 0 left-padded), each with its own clip,
    and random completions (row 1 right-padded)."""
    from grpo_core.rollout import Rollouts, left_pad

    proc = VideoProcessor.from_model(model)
    rng = np.random.default_rng(seed)
    prompts, media = [], []
    for text in ("Hi", "A longer question?"):
        ids = tok.apply_chat_template(
            [{"role": "user", "content": VIDEO_PLACEHOLDER + text}], add_generation_prompt=True
        )
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        clip = rng.integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
        p, m = proc.process(ids, {"video": clip})
        prompts.append(p)
        media.append(m)
    p_ids, p_mask = left_pad(prompts, tok.pad_token_id)
    g = torch.Generator().manual_seed(seed)
    c_ids = torch.randint(10, 90, (2, 5), generator=g)
    c_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    c_ids[1, 3:] = tok.pad_token_id
    ro = Rollouts(p_ids, p_mask, c_ids, c_mask, ["length", "stop"], ["", ""], media=media)
    return ro, prompts


def test_vlm_logprobs_equal_the_models_logits_with_left_padding(vlm):
    """Done-when 4: per-token log-probs of VLMPolicy == log_softmax of the model's own logits
    (the model computes its 3-D rotary positions itself from mm_token_type_ids), for a batch
    whose first row is left-padded, and == each row alone without padding."""
    from grpo_core.policy import VLMPolicy, make_policy

    model, tok = vlm
    ro, prompts = _video_rollouts(model, tok)
    assert ro.prompt_mask[0, 0] == 0 and ro.prompt_mask[1].all()  # row 0 is left-padded
    pol = make_policy(model, tok, temperature=1.0, micro_batch_size=1)
    assert isinstance(pol, VLMPolicy)
    out = pol.logprobs(ro, {"logp", "entropy"})
    lp = out["logp"]
    vid = model.config.video_token_id
    ids = torch.cat([ro.prompt_ids, ro.completion_ids], 1)
    attn = torch.cat([ro.prompt_mask, ro.completion_mask], 1)
    p = ro.prompt_ids.shape[1]
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=attn,
            pixel_values_videos=torch.cat([m["pixel_values_videos"] for m in ro.media]),
            video_grid_thw=torch.cat([m["video_grid_thw"] for m in ro.media]),
            mm_token_type_ids=(ids == vid).int() * 2,
            use_cache=False,
        ).logits
    ref = torch.log_softmax(logits[:, p - 1 : -1].float(), -1)
    want = ref.gather(-1, ro.completion_ids.unsqueeze(-1)).squeeze(-1)
    m = ro.completion_mask.bool()
    assert torch.allclose(lp[m], want[m], atol=1e-5)
    ent = -(ref.exp() * ref).sum(-1)
    assert torch.allclose(out["entropy"][m], ent[m], atol=1e-5)
    # each row alone (no padding), the model's own positions again
    for r in range(2):
        k = int(ro.completion_mask[r].sum())
        row = torch.tensor([prompts[r] + ro.completion_ids[r, :k].tolist()])
        with torch.no_grad():
            lg = model(
                input_ids=row,
                pixel_values_videos=ro.media[r]["pixel_values_videos"],
                video_grid_thw=ro.media[r]["video_grid_thw"],
                mm_token_type_ids=(row == vid).int() * 2,
                use_cache=False,
            ).logits
        lr = torch.log_softmax(lg[0, len(prompts[r]) - 1 : -1].float(), -1)
        alone = lr.gather(-1, row[0, len(prompts[r]) :].unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(lp[r, :k], alone, atol=1e-5)
    # with grad (one micro-batch) the same numbers
    lpg, _ = pol.forward_logprobs(
        ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask, media=ro.media
    )
    assert lpg.requires_grad and torch.allclose(lpg.detach()[m], want[m], atol=1e-5)
    # 1-D positions (the causal LM's cumsum) with the same pixel inputs give other numbers
    from grpo_core.policy import sequence_logprobs
    from grpo_core.vision import collate_media

    class OneD(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, **kw):
            return self.m(**kw, **collate_media(ro.media))

    with torch.no_grad():
        lp1, _ = sequence_logprobs(
            OneD(), ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask
        )
    assert (lp1[m] - want[m]).abs().max() > 1e-2
    # the positions are 3-D: row 1 (no padding) has k text tokens before its 8 video tokens
    # (grid t=2, h=w=4 -> merged 2 x 2 x 2); by hand: temporal k, k, k, k, k+1, ... (1 per
    # temporal patch: tokens_per_second 1), height k, k, k+1, k+1, width k, k+1, k, k+1 per
    # temporal slice; the text after the video resumes at k + max(h, w) / merge = k + 2
    from grpo_core.vision import vlm_inputs

    pos = vlm_inputs(model, ids, attn, ro.media)["position_ids"]
    row = ids[1].tolist()
    k = row.index(vid)
    assert pos[:, 1, :k].tolist() == [list(range(k))] * 3
    assert pos[0, 1, k : k + 8].tolist() == [k] * 4 + [k + 1] * 4
    assert pos[1, 1, k : k + 8].tolist() == [k, k, k + 1, k + 1] * 2
    assert pos[2, 1, k : k + 8].tolist() == [k, k + 1] * 4
    assert pos[:, 1, k + 8].tolist() == [k + 2] * 3
    # row 0 (left-padded): the same numbers after its padding, 0 on the padding
    pad = int((ro.prompt_mask[0] == 0).sum())
    assert pos[:, 0, :pad].abs().sum() == 0
    k0 = ids[0].tolist().index(vid)
    assert pos[2, 0, k0 : k0 + 8].tolist() == [k0 - pad, k0 - pad + 1] * 4


def test_more_videos_than_positions_in_a_batch(vlm):
    # regression: transformers' get_rope_index defaults to one time step per sequence
    # position, so 20 rows of 14-token sequences ran out (StopIteration) in generate
    from grpo_core.policy import VLMPolicy
    from grpo_core.rollout import HFEngine, SamplingParams

    model, tok = vlm
    proc = VideoProcessor.from_model(model)
    ids = tok(VIDEO_PLACEHOLDER + "Q", add_special_tokens=False).input_ids
    clip = np.zeros((4, 28, 28, 3), dtype=np.uint8)
    p, m = proc.process(ids, {"video": clip})
    assert len(p) < 20
    eng = HFEngine(model, tok, cfg=None, model_path=None)
    ro = eng.generate([p] * 20, SamplingParams(max_new_tokens=2), media=[m] * 20)
    lp = VLMPolicy(model, tok, 1.0, 20).logprobs(ro)["logp"]
    assert lp.shape[0] == 20 and torch.isfinite(lp).all()


def test_rollouts_carry_media_through_select_and_concat(vlm):
    from grpo_core.rollout import Rollouts

    model, tok = vlm
    ro, _ = _video_rollouts(model, tok)
    sel = ro.select([1, 0, 1])
    assert [m is ro.media[i] for m, i in zip(sel.media, [1, 0, 1])] == [True] * 3
    text = ro.select([0])
    text.media = None
    cat = Rollouts.concat([ro, text], tok.pad_token_id)
    assert len(cat.media) == 3 and cat.media[2] is None and cat.media[0] is ro.media[0]
    text2 = ro.select([1])
    text2.media = None
    assert Rollouts.concat([text, text2], tok.pad_token_id).media is None


def test_hf_engine_samples_a_vlm_with_its_media(vlm):
    from grpo_core.rollout import HFEngine, SamplingParams

    model, tok = vlm
    ro, prompts = _video_rollouts(model, tok)
    eng = HFEngine(model, tok, cfg=None, model_path=None)
    out = eng.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=4), media=ro.media)
    assert out.media == ro.media and out.prompt_ids.shape[0] == 2
    assert out.completion_ids.shape[1] <= 4
    # greedy generation's first token is the argmax of the policy's distribution there
    g = eng.generate(prompts, SamplingParams(temperature=0, max_new_tokens=1), media=ro.media)
    from grpo_core.policy import VLMPolicy

    pol = VLMPolicy(model, tok, 1.0, 8)
    with torch.no_grad():
        first = g.completion_ids[:, :1]
        lp = pol.logprobs(
            type(g)(
                g.prompt_ids,
                g.prompt_mask,
                first,
                torch.ones_like(first),
                ["", ""],
                ["", ""],
                media=g.media,
            ),
            {"dist"},
        )["dist"]
    assert lp[:, 0].argmax(-1).tolist() == first[:, 0].tolist()


def test_a_vlm_never_samples_its_media_placeholders(vlm):
    """The tiny_video run crashed at step 5 when the policy sampled <|video_pad|> (the 3-D
    positions counted one more video: "value tensor of shape [3, 193] cannot be broadcast to
    ... [3, 186]"). With the LM head pushed towards the video and image pads, no completion
    holds one, and the policy's log-prob pass over the rollouts runs."""
    import copy

    from grpo_core.policy import VLMPolicy
    from grpo_core.rollout import ENGINES, SamplingParams
    from grpo_core.vision import placeholder_token_ids

    model, tok = vlm
    model = copy.deepcopy(model)
    pads = placeholder_token_ids(model)
    assert pads == sorted({model.config.video_token_id, model.config.image_token_id})

    def push(_m, _inp, out):  # the pads' logits +8: most samples would be a pad
        out[..., pads] += 8.0
        return out

    model.get_output_embeddings().register_forward_hook(push)
    ro, prompts = _video_rollouts(model, tok)
    for name in ("hf", "hf_static"):
        eng = ENGINES.get(name)(model, tok, cfg=None, model_path=None)
        for seed in range(3):
            out = eng.generate(
                prompts,
                SamplingParams(temperature=2.0, max_new_tokens=8, seed=seed),
                media=ro.media,
            )
            assert not set(out.completion_ids[out.completion_mask.bool()].tolist()) & set(pads)
            VLMPolicy(model, tok, 1.0, 8).logprobs(out, {"logp"})
    # a text model suppresses nothing
    assert placeholder_token_ids(torch.nn.Linear(2, 2)) == []


def test_generation_positions_match_the_policys(vlm):
    """Tokens generated after the first (cached decoding: text positions + the model's rope
    delta) have the log-probs the policy's full-sequence pass gives them: the sampler's
    logits (output_logits) vs VLMPolicy.logprobs, within 1e-4, for a left-padded batch."""
    from grpo_core.policy import VLMPolicy
    from grpo_core.rollout import Rollouts, left_pad
    from grpo_core.vision import collate_media

    model, tok = vlm
    ro, prompts = _video_rollouts(model, tok)
    p_ids, p_mask = left_pad(prompts, tok.pad_token_id)
    vid = model.config.video_token_id
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            input_ids=p_ids,
            attention_mask=p_mask,
            **collate_media(ro.media),
            mm_token_type_ids=(p_ids == vid).int() * 2,
            do_sample=True,
            top_k=0,
            max_new_tokens=5,
            min_new_tokens=5,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
        )
    c_ids = out.sequences[:, p_ids.shape[1] :]
    gen = torch.log_softmax(torch.stack(out.logits, 1).float(), -1)
    want = gen.gather(-1, c_ids.unsqueeze(-1)).squeeze(-1)
    r = Rollouts(p_ids, p_mask, c_ids, torch.ones_like(c_ids), [""] * 2, [""] * 2, media=ro.media)
    lp = VLMPolicy(model, tok, 1.0, 8).logprobs(r)["logp"]
    assert torch.allclose(lp, want, atol=1e-4)


def test_video_task_levels_and_determinism():
    from grpo_core.params import VideoMCParams
    from grpo_core.tasks import VideoMC

    par = VideoMCParams().model_dump()
    t = VideoMC(30, 12, 3, {}, None, par)
    t2 = VideoMC(30, 12, 3, {}, None, par)
    assert [p.question for p in t.test()] == [p.question for p in t2.test()]
    assert all(p.meta["level"] == "L1" for p in t.train())
    assert {p.meta["qtype"] for p in t.train()} <= {"count", "direction", "order"}
    levels = [p.meta["level"] for p in t.test()]
    assert levels.count("L1") == levels.count("L2") == levels.count("L3") == 4
    assert all(p.meta["qtype"] == "changed" for p in t.test() if p.meta["level"] == "L3")
    l1 = {tuple(o["rgb"]) for p in t.train() for o in p.meta["scene"]["objects"]}
    l2 = {
        tuple(o["rgb"])
        for p in t.test()
        if p.meta["level"] != "L1"
        for o in p.meta["scene"]["objects"]
    }
    assert l1.isdisjoint(l2)  # L2 / L3 colours are unseen in training
    for p in t.train() + t.test():
        assert p.answer in "ABCD" and len(p.meta["options"]) == 4
        f = render_clip(p.meta["scene"])
        assert f.shape == (4, 28, 28, 3) and f.dtype == np.uint8
    with pytest.raises(UserError, match="multiple of 14"):
        VideoMC(2, 2, 0, {}, None, {**par, "size": 30}).train()


def test_render_clip_by_hand():
    # one 2x2 square (r=1 -> 3x3 px) at (2, 2) moving right 1 px / frame on black; it turns
    # blue at frame 1: frame 0 red on x 1..3, frame 1 blue on x 2..4
    scene = {
        "size": 6,
        "frames": 2,
        "bg": [0, 0, 0],
        "objects": [
            dict(rgb=[255, 0, 0], shape="square", r=1, x=2, y=2, dx=1, dy=0, change_at=1,
                 change_rgb=[0, 0, 255]),
        ],
    }  # fmt: skip
    f = render_clip(scene)
    assert f[0, 2, 1:4, 0].tolist() == [255, 255, 255] and f[0, 2, 4].tolist() == [0, 0, 0]
    assert f[1, 2, 2:5, 2].tolist() == [255, 255, 255] and f[1, 2, 1].tolist() == [0, 0, 0]
    assert f[0, 0].sum() == 0 and f[0, 4, 2].sum() == 0  # rows 1..3 only


def test_mc_grade_and_consistency_by_rule():
    from grpo_core.tasks import Problem, VideoMC, grade_texts, mc_consistent

    p = Problem("v", "q", "B", meta={"options": ["right", "left", "up", "down"], "level": "L1"})
    t = VideoMC(1, 1, 0, {}, None, {"frames": 4, "size": 28, "held_out": "changed"})
    texts = [
        "<think>red moves left</think><answer>B</answer>",  # right, consistent
        "<think>red moves up</think><answer>B</answer>",  # right answer, rationale says C
        "<think>red moves left</think><answer>C</answer>",  # wrong, inconsistent
        "<think>red moves up</think><answer>C</answer>",  # wrong but consistent
        "<think>left or right</think><answer>B</answer>",  # names two options
        "<answer>B</answer>",  # no rationale
        "B",  # no tags
    ]
    assert [g.score for g in grade_texts(t, texts, [p] * 7)] == [1, 1, 0, 0, 1, 1, 0]
    assert [mc_consistent(x, p) for x in texts] == [1, 0, 0, 1, 0, 0, 0]
    # the rule as a reward: 1 on the consistent completions, right or wrong
    from grpo_core.rewards import REWARDS, GroupContext

    ctx = GroupContext(
        texts=texts,
        problems=[p] * 7,
        finish_reasons=["stop"] * 7,
        lengths=[1] * 7,
        group_sizes=[7],
        max_new_tokens=8,
        task=t,
    )
    assert REWARDS.get("mc_consistency", "rewards")(ctx).tolist() == [1, 0, 0, 1, 0, 0, 0]
    # "leftover" is not the word "left"
    assert not mc_consistent("<think>leftover</think><answer>B</answer>", p)
    samples = [
        {"prompt_id": "v", "completion": x, "correct": g.score >= 1}
        for x, g in zip(texts, grade_texts(t, texts, [p] * 7))
    ]
    m = t.eval_metrics(samples, [p])
    assert m["acc_L1"] == pytest.approx(4 / 7) and "acc_L2" not in m
    assert m["consistency"] == pytest.approx(2 / 7)
    assert m["correct_consistent"] == pytest.approx(1 / 7)


def test_video_env_puts_the_clip_in_the_observation():
    from grpo_core.episodes import VideoMCEnv, media_prompts
    from grpo_core.params import VideoMCParams
    from grpo_core.tasks import Problem, VideoMC

    t = VideoMC(2, 0, 0, {}, None, VideoMCParams().model_dump())
    p = t.train()[0]
    obs = VideoMCEnv(t, "plain", {}).reset(p, 0)
    assert obs.messages[0]["content"].startswith(VIDEO_PLACEHOLDER)
    assert p.question in obs.messages[0]["content"]
    assert np.array_equal(obs.media["video"], render_clip(p.meta["scene"]))
    with pytest.raises(UserError, match="no scene or video"):
        VideoMCEnv(t, "plain", {}).reset(Problem("x", "q", "A"), 0)
    with pytest.raises(UserError, match="text model"):
        media_prompts(None, [[1, 2]], [obs.media])


def test_mp4_round_trip(tmp_path):
    from grpo_core.vision import read_video, write_mp4

    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    frames[:, 8:24, 8:24] = (200, 40, 40)
    write_mp4(frames, tmp_path / "c.mp4")
    back = read_video(tmp_path / "c.mp4")
    assert back.shape == frames.shape
    # lossy codec: close on the flat regions
    assert np.abs(back[:, 12:20, 12:20].astype(int) - frames[:, 12:20, 12:20]).mean() < 20
    assert np.abs(back[:, :4, :4].astype(int)).mean() < 20
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(UserError, match="could not decode"):
        read_video(tmp_path / "bad.mp4")


VIDEO_RUN = [
    "run.threads=1",
    "workflow.seeded_start=false",
    "model.tiny={hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2, "
    "num_kv_heads: 2, max_position_embeddings: 512}",
    "sft.steps=3",
    "sft.batch_size=8",
    "task.n_train=16",
    "task.n_test=6",
    "rollout.group_size=2",
    "rollout.prompts_per_step=2",
    "rollout.max_new_tokens=6",
    "train.steps=2",
    "eval.k=1",
]


@pytest.fixture(scope="module")
def video_cfg(tmp_path_factory):
    """Factory of tiny_video configs (tiny sizes) whose start `grpo prepare` built once."""
    from grpo_core.config import load_config
    from grpo_core.prepare import prepare

    res = tmp_path_factory.mktemp("video_results")

    def make(overrides=()):
        return load_config("grpo", "tiny_video", [f"run.results_dir={res}", *VIDEO_RUN, *overrides])

    prepare(make(), log=lambda *a: None)
    return make


def test_grpo_trains_on_video_through_the_trainer(video_cfg, tmp_path, spy_rollouts):
    """Smoke: `grpo prepare` built and SFT'd the tiny VLM on the video task; 2 GRPO steps
    (frozen reference for the KL, checkpoint), then evaluation with per-level accuracy."""
    from evals.evaluate import evaluate
    from grpo_core.config import resolve_model_path
    from grpo_core.models import is_vlm, load_model_and_tokenizer
    from grpo_core.trainer import Trainer

    cfg = video_cfg()
    model, _ = load_model_and_tokenizer(resolve_model_path(cfg))
    assert is_vlm(model)
    tr = Trainer(cfg, tmp_path / "run")
    assert tr.policy.kind == "vlm" and tr.ref is not None and tr.ref.kind == "frozen"
    seen = spy_rollouts(tr)
    tr.train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["entropy"])
    ro = seen["ro"]
    assert ro.media is not None and all(m is not None for m in ro.media)
    vid = model.config.video_token_id
    assert all(int((ro.prompt_ids[i] == vid).sum()) == 8 for i in range(len(ro)))
    res = evaluate(cfg, tmp_path / "run" / "checkpoint", tmp_path / "eval")
    for k in ("acc_L1", "acc_L2", "acc_L3", "consistency", "avg@1"):
        assert 0.0 <= res["metrics"][k] <= 1.0
    assert res["n_prompts"] == 6


def test_video_run_interrupted_and_resumed_matches_and_lora_trains(
    video_cfg, tmp_path, monkeypatch
):
    """The VLM's checkpoint (Hub key layout) resumes to the uninterrupted run's metrics and
    weights; a LoRA VLM trains with the adapter-disabled reference."""
    from safetensors.torch import load_file

    from grpo_core.trainer import TIMING_FIELDS, Trainer

    def metrics(d):
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in set(TIMING_FIELDS)} for r in rows]

    cfg = video_cfg()
    Trainer(cfg, tmp_path / "full").train(progress=False)
    t = Trainer(cfg, tmp_path / "int")
    orig = t.train_step

    def interrupted(step):
        out = orig(step)
        if step == 0:
            t._on_signal(2, None)
        return out

    monkeypatch.setattr(t, "train_step", interrupted)
    t.train(progress=False)
    assert t.step == 1
    monkeypatch.undo()
    t2 = Trainer(cfg, tmp_path / "int")
    assert t2.step == 1
    t2.train(progress=False)
    assert metrics(tmp_path / "int") == metrics(tmp_path / "full")
    wf = load_file(tmp_path / "full" / "checkpoint" / "model.safetensors")
    wi = load_file(tmp_path / "int" / "checkpoint" / "model.safetensors")
    assert wf.keys() == wi.keys() and all(torch.equal(wf[k], wi[k]) for k in wf)

    lora = video_cfg(["train.steps=1", "model.lora={r: 4, alpha: 8, target_modules: [q_proj]}"])
    tl = Trainer(lora, tmp_path / "lora")
    assert tl.ref.kind == "adapter"
    tl.train(progress=False)
    assert math.isfinite(metrics(tmp_path / "lora")[0]["loss"])


def test_media_probe_nll_and_paired_ci(vlm):
    """evals.media_probe: a row's target NLL equals minus the policy's summed log-probs of the
    target as a completion (VLMPolicy, the training pass); the paired difference by hand:
    d = [1, 0, 2], mean 1, sd 1, t(0.975, 2) = 4.3027: 1 +- 4.3027 / sqrt(3)."""
    from evals.media_probe import paired, probe
    from grpo_core.config import load_config
    from grpo_core.policy import VLMPolicy
    from grpo_core.prepare import media_rows
    from grpo_core.rollout import Rollouts
    from grpo_core.tasks import make_task

    m, lo, hi = paired([1.0, 2.0, 3.0], [2.0, 2.0, 5.0])
    assert m == pytest.approx(1.0) and lo == pytest.approx(1 - 2.48416, abs=1e-4)
    assert hi == pytest.approx(1 + 2.48416, abs=1e-4)
    model, tok = vlm
    cfg = load_config("grpo", "tiny_video", ["task.n_train=4", "task.n_test=3"])
    probs = make_task(cfg.task).test()
    r = probe(model, tok, cfg, probs)
    assert len(r["own"]) == len(r["shuffled"]) == 3 and r["groups"][0].startswith("L1/")
    assert r["own"] != r["shuffled"]  # the random model's outputs move with the pixels
    (prompt, target, _, media), *_ = media_rows(cfg, make_task(cfg.task), probs, tok, model)
    ro = Rollouts(
        torch.tensor([prompt]),
        torch.ones(1, len(prompt), dtype=torch.long),
        torch.tensor([target]),
        torch.ones(1, len(target), dtype=torch.long),
        ["stop"],
        [""],
        media=[media],
    )
    lp = VLMPolicy(model, tok, 1.0, 8).logprobs(ro, {"logp"})["logp"]
    assert r["own"][0] == pytest.approx(-float(lp.sum()), abs=1e-3)


@pytest.mark.parametrize("mult,merger", [(1.0, None), (0.1, None), (0.0, None), (0.0, 1.0)])
def test_sft_trains_the_vision_tower_at_its_lr_multiplier(mult, merger):
    """One SFT step of `grpo prepare` on video_mc reaches the vision tower through the pixel
    inputs (its weights move; they would not if the SFT forward dropped
    pixel_values_videos), at lr * sft.vision_lr_mult: Adam's first step moves each weight by
    about lr (sign of its gradient), so the tower's largest change is lr * mult (0: none)
    while the text model's is lr."""
    from grpo_core.config import load_config
    from grpo_core.models import build_tiny_vl_model, build_tiny_vl_tokenizer
    from grpo_core.prepare import sft

    cfg = load_config(
        "grpo",
        "tiny_video",
        ["task.n_train=4", "task.n_test=3", "sft.steps=1", "sft.batch_size=4",
         "sft.lr=1e-3", f"sft.vision_lr_mult={mult}"]
        + ([f"sft.merger_lr_mult={merger}"] if merger is not None else []),
    )  # fmt: skip
    tok = build_tiny_vl_tokenizer()
    small = TinyModelCfg(
        hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=2
    )
    model = build_tiny_vl_model(small, tok, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sft(model, tok, cfg, log=lambda *_: None)

    def moved(pred):
        return max(
            float((p.detach() - before[n]).abs().max())
            for n, p in model.named_parameters()
            if pred(n)
        )

    text = moved(lambda n: "visual" not in n.split("."))
    assert text == pytest.approx(1e-3, rel=0.01)
    if merger is None:  # the merger follows the tower
        vis = moved(lambda n: "visual" in n.split("."))
        assert vis == pytest.approx(1e-3 * mult, rel=0.01, abs=1e-9)
        return
    tower = moved(lambda n: "visual" in n.split(".") and "merger" not in n.split("."))
    proj = moved(lambda n: "visual" in n.split(".") and "merger" in n.split("."))
    assert tower == pytest.approx(1e-3 * mult, rel=0.01, abs=1e-9)
    assert proj == pytest.approx(1e-3 * merger, rel=0.01)
