"""Video inputs of a vision-language policy (Qwen2.5-VL layout), made without torchvision.

- :func:`render_clip`: a synthetic clip (uint8 frames [T, H, W, 3]) from a scene description
  (the task ``video_mc``'s problems carry one in ``meta["scene"]``);
- :func:`patchify_video`: frames -> ``pixel_values_videos`` [t*h*w, C*tp*p*p] and
  ``video_grid_thw`` [3], the flattened-patch layout the Qwen2.5-VL vision tower reads
  (rescale to [0, 1], CLIP mean / std normalisation, the last frame repeated up to a multiple
  of the temporal patch, patches ordered by merge window: (t, h/m, w/m, m, m));
- :class:`VideoProcessor`: a prompt's one ``<|video_pad|>`` placeholder expanded to the clip's
  t*h*w/m^2 tokens, and the row's media tensors; :func:`vlm_inputs`: a batch's model inputs
  with the model's own 3-D rotary positions (``get_rope_index``, left padding skipped);
- :func:`write_mp4` / :func:`read_video`: the file path of a real benchmark (PyAV).
"""

from __future__ import annotations

import numpy as np
import torch

from grpo_core.errors import UserError

VISION_START, VIDEO_PAD, VISION_END, IMAGE_PAD = (
    "<|vision_start|>",
    "<|video_pad|>",
    "<|vision_end|>",
    "<|image_pad|>",
)
VISION_TOKENS = [VISION_START, VIDEO_PAD, VISION_END, IMAGE_PAD]
# the placeholder an env writes into its message where the clip goes
VIDEO_PLACEHOLDER = VISION_START + VIDEO_PAD + VISION_END

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def patchify_video(
    frames: np.ndarray, patch: int, temporal_patch: int, merge: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 frames [T, H, W, 3] -> (pixel values [t*h*w, 3*tp*p*p] float32, grid [3] long).
    H and W must be multiples of patch * merge."""
    x = np.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise UserError(f"a video must be uint8 frames [T, H, W, 3], got shape {x.shape}")
    n, hh, ww, c = x.shape
    unit = patch * merge
    if hh % unit or ww % unit:
        raise UserError(
            f"video frames of {hh}x{ww} px: height and width must be multiples of "
            f"patch_size * spatial_merge_size = {unit}"
        )
    if n % temporal_patch:  # repeat the last frame up to a multiple of the temporal patch
        x = np.concatenate([x, np.repeat(x[-1:], temporal_patch - n % temporal_patch, 0)])
    v = torch.from_numpy(x.astype(np.float32) / 255.0).permute(0, 3, 1, 2)  # [T, C, H, W]
    v = (v - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    gt, gh, gw = v.shape[0] // temporal_patch, hh // patch, ww // patch
    v = v.reshape(gt, temporal_patch, c, gh // merge, merge, patch, gw // merge, merge, patch)
    v = v.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, h/m, w/m, m, m, C, tp, p, p
    pv = v.reshape(gt * gh * gw, c * temporal_patch * patch * patch).contiguous()
    return pv, torch.tensor([gt, gh, gw], dtype=torch.long)


class VideoProcessor:
    """A VLM's video preprocessing: the geometry of its vision tower and its special tokens."""

    def __init__(self, patch: int, temporal_patch: int, merge: int, video_token_id: int):
        self.patch, self.temporal_patch, self.merge = patch, temporal_patch, merge
        self.video_token_id = video_token_id

    @classmethod
    def from_model(cls, model) -> VideoProcessor | None:
        """The processor of a Qwen2.5-VL-style model (its config has a vision_config and a
        video token), None for a text model."""
        mc = getattr(model, "config", None)
        vc = getattr(mc, "vision_config", None)
        if vc is None or getattr(mc, "video_token_id", None) is None:
            return None
        return cls(vc.patch_size, vc.temporal_patch_size, vc.spatial_merge_size, mc.video_token_id)

    def process(self, ids: list[int], media: dict | None) -> tuple[list[int], dict | None]:
        """A prompt's ids with its one video placeholder token expanded to the clip's number of
        merged patches, and the row's media tensors (``pixel_values_videos``,
        ``video_grid_thw`` [1, 3]); unchanged ids and None when ``media`` has no video."""
        if not media or media.get("video") is None:
            return list(ids), None
        pv, thw = patchify_video(media["video"], self.patch, self.temporal_patch, self.merge)
        n = int(thw.prod()) // self.merge**2
        at = [i for i, t in enumerate(ids) if t == self.video_token_id]
        if len(at) != 1:
            raise UserError(
                f"a prompt with a video needs exactly one {VIDEO_PAD} placeholder (the env writes "
                f"{VIDEO_PLACEHOLDER} into its message), found {len(at)}"
            )
        k = at[0]
        out = list(ids[:k]) + [self.video_token_id] * n + list(ids[k + 1 :])
        return out, {"pixel_values_videos": pv, "video_grid_thw": thw.view(1, 3)}


def placeholder_token_ids(model) -> list[int]:
    """A VLM's media placeholder tokens (video and image pads), which its rollouts must never
    sample: a sampled pad reads as one more video in the 3-D rotary positions and in the
    forward's feature scatter (transformers then fails on the count mismatch). [] for a text
    model."""
    mc = getattr(model, "config", None)
    if getattr(mc, "vision_config", None) is None:
        return []
    ids = (getattr(mc, "video_token_id", None), getattr(mc, "image_token_id", None))
    return sorted({int(i) for i in ids if i is not None})


def append_media(row: dict | None, more: dict | None) -> dict | None:
    """A row's media tensors followed by ``more`` (a later observation's clip): pixel values
    and grids concatenated in the order their placeholders appear in the row's tokens (what
    ``get_rope_index`` and the vision tower read); new tensors, the inputs are not changed."""
    if not more:
        return row
    if not row:
        return dict(more)
    return {
        "pixel_values_videos": torch.cat([row["pixel_values_videos"], more["pixel_values_videos"]]),
        "video_grid_thw": torch.cat([row["video_grid_thw"], more["video_grid_thw"]]),
    }


def collate_media(media: list[dict | None]) -> dict:
    """The batch's pixel inputs (rows' tensors concatenated in row order; rows without media
    add nothing) and ``second_per_grid_ts``; {} when no row has media."""
    rows = [m for m in media if m]
    if not rows:
        return {}
    thw = torch.cat([m["video_grid_thw"] for m in rows])
    return {
        "pixel_values_videos": torch.cat([m["pixel_values_videos"] for m in rows]),
        "video_grid_thw": thw,
        # one second per temporal patch, given explicitly: transformers' default iterator has
        # one entry per sequence position, so a batch of more videos than positions fails
        "second_per_grid_ts": torch.ones(len(thw)),
    }


def vlm_inputs(model, ids: torch.Tensor, attn: torch.Tensor, media: list[dict | None]) -> dict:
    """Keyword inputs of a Qwen2.5-VL forward pass over left-padded ``ids`` [b, S]: the pixel
    inputs and the model's own 3-D rotary position ids [3, b, S] (``get_rope_index``: text
    positions count from the first real token, vision tokens get (t, h, w) positions; padding
    gets 0), so that a row's numbers do not depend on its padding."""
    dev = ids.device
    pix = {k: v.to(dev) for k, v in collate_media(media).items()}
    out = {"input_ids": ids, "attention_mask": attn, **pix}
    if pix:
        pv = out["pixel_values_videos"]
        out["pixel_values_videos"] = pv.to(next(model.parameters()).dtype)
        types = (ids == model.config.video_token_id).int() * 2  # 0 text, 2 video
        rope = rope_index_fn(model)
        pos, _ = rope(
            ids,
            types,
            video_grid_thw=pix["video_grid_thw"],
            second_per_grid_ts=pix["second_per_grid_ts"],
            attention_mask=attn,
        )
        out["position_ids"] = pos
    else:
        out["position_ids"] = (attn.cumsum(-1) - 1).clamp(min=0)
    return out


def rope_index_fn(model):
    """The model's ``get_rope_index`` (on the inner Qwen2.5-VL model; found through wrappers
    such as a peft LoRA model)."""
    for m in model.modules():
        fn = getattr(type(m), "get_rope_index", None)
        if fn is not None:
            return fn.__get__(m)
    raise UserError(f"{type(model).__name__} has no get_rope_index (not a Qwen2.5-VL model)")


# --------------------------------------------------------------------------------------------
# synthetic clips


def render_clip(scene: dict) -> np.ndarray:
    """uint8 frames [T, S, S, 3] of a scene: ``size`` S, ``frames`` T, ``bg`` [r, g, b],
    ``objects``: each {rgb, shape: square | disc, r (half size), x, y (centre at frame 0),
    dx, dy (px per frame), appear (first frame shown), change_at / change_rgb (optional: the
    colour from that frame on), move (optional [s, e]: still before frame s, moving from frame
    s to frame e, still after: the offset at frame f is min(max(f, s), e) - s steps; without
    it every frame is a step)}. Objects are drawn in order (later ones on top)."""
    s, t = int(scene["size"]), int(scene["frames"])
    out = np.empty((t, s, s, 3), dtype=np.uint8)
    out[:] = np.asarray(scene["bg"], dtype=np.uint8)
    yy, xx = np.mgrid[0:s, 0:s]
    for f in range(t):
        for o in scene["objects"]:
            if f < o.get("appear", 0):
                continue
            mv = o.get("move")
            k = f if mv is None else min(max(f, mv[0]), mv[1]) - mv[0]
            cx, cy, r = o["x"] + o["dx"] * k, o["y"] + o["dy"] * k, o["r"]
            if o["shape"] == "disc":
                m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            else:
                m = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
            ch = o.get("change_at")
            rgb = o["change_rgb"] if ch is not None and f >= ch else o["rgb"]
            out[f][m] = np.asarray(rgb, dtype=np.uint8)
    return out


def perturb_clip(frames: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """The clip with i.i.d. Gaussian pixel noise of std ``noise`` * 255 added to every channel
    of every frame, rounded and clipped to uint8 (DeepVideo-R1's difficulty-raising video
    augmentation as we build it; the noise is ``numpy.random.default_rng(seed)``'s, so one
    seed is one perturbation). ``noise`` 0 returns the frames unchanged."""
    if noise < 0:
        raise UserError(f"perturb_clip: noise={noise}: must be >= 0 (a share of 255)")
    if noise == 0:
        return frames
    eps = np.random.default_rng(seed).normal(0.0, noise * 255.0, size=frames.shape)
    return np.clip(np.rint(frames.astype(np.float64) + eps), 0, 255).astype(np.uint8)


def write_mp4(frames: np.ndarray, path, fps: int = 4) -> None:
    """Write uint8 frames [T, H, W, 3] as an mp4 (PyAV, mpeg4 codec: lossy)."""
    import av

    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=fps)
        st.height, st.width = frames.shape[1], frames.shape[2]
        st.pix_fmt = "yuv420p"
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), "rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


def read_video(path, max_frames: int | None = None) -> np.ndarray:
    """uint8 frames [T, H, W, 3] of a video file (PyAV), the first ``max_frames`` if given."""
    import av

    try:
        with av.open(str(path)) as c:
            frames = []
            for fr in c.decode(video=0):
                frames.append(fr.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (OSError, av.error.FFmpegError) as e:
        raise UserError(f"could not decode video {path}: {e}") from None
    if not frames:
        raise UserError(f"video {path} has no frames")
    return np.stack(frames)


def _video_meta(path) -> tuple[int, float]:
    """(frame count, frames per second) of a video file; counts by decoding when the
    container does not say."""
    import av

    try:
        with av.open(str(path)) as c:
            st = c.streams.video[0]
            fps = float(st.average_rate or st.guessed_rate or 1.0)
            n = st.frames or sum(1 for _ in c.decode(video=0))
    except (OSError, IndexError, av.error.FFmpegError) as e:
        raise UserError(f"could not decode video {path}: {e}") from None
    return n, fps


def frame_indices(
    total: int,
    video_fps: float,
    count: int | None = None,
    fps: float | None = None,
    min_frames: int = 4,
    max_frames: int = 768,
) -> list[int]:
    """Which frames of a ``total``-frame video to show. ``count``: that many, uniformly, as
    lmms-eval's Qwen2.5-VL model samples (``linspace(0, total - 1, n)`` truncated to ints,
    n = min(count, total)). ``fps``: qwen-vl-utils' rule: n = total / video_fps * fps clamped
    to [min_frames, max_frames] and to total, floored to an even number (at least 2), then
    ``linspace(0, total - 1, n)`` rounded."""
    if total < 1:
        raise UserError("a video with no frames")
    if (count is None) == (fps is None):
        raise UserError("frame sampling: give exactly one of count and fps")
    if count is not None:
        n = min(int(count), total)
        return [int(i) for i in np.linspace(0, total - 1, n).astype(int)]
    n = total / video_fps * fps
    n = min(max(n, min_frames), max_frames, total)
    n = max(2, int(n // 2) * 2) if total >= 2 else 1
    return [int(round(float(i))) for i in np.linspace(0, total - 1, n)]


def fit_size(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen-vl-utils' smart_resize: (height, width) rounded to multiples of ``factor`` with
    height * width in [min_pixels, max_pixels], aspect ratio kept as far as rounding allows."""
    import math

    hb = max(factor, round(h / factor) * factor)
    wb = max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb = math.ceil(h * beta / factor) * factor
        wb = math.ceil(w * beta / factor) * factor
    return hb, wb


def resize_frames(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    """uint8 frames [T, H, W, 3] resized to [T, h, w, 3] (PIL bicubic; unchanged if equal)."""
    if frames.shape[1:3] == (h, w):
        return frames
    from PIL import Image

    out = [np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in frames]
    return np.stack(out).astype(np.uint8)


def sample_video(
    path,
    count: int | None = None,
    fps: float | None = None,
    min_frames: int = 4,
    max_frames: int = 768,
    max_pixels: int = 1605632,
    min_pixels: int = 3136,
    factor: int = 28,
    folder_fps: float = 3.0,
) -> np.ndarray:
    """The frames of a video file a benchmark shows (:func:`frame_indices`), decoded with PyAV
    (only the chosen frames are converted) and resized by :func:`fit_size` to multiples of
    ``factor`` (a VLM's patch_size * spatial_merge_size: 28 for Qwen2.5-VL). A folder instead
    of a file: its .jpg / .png frames in name order, taken as ``folder_fps`` frames a second."""
    from pathlib import Path

    import av

    if Path(path).is_dir():  # a folder of frames (MVBench's episodic_reasoning: TVQA, 3 fps)
        frames = _folder_frames(Path(path), count, fps, min_frames, max_frames, folder_fps)
        h, w = fit_size(frames.shape[1], frames.shape[2], factor, min_pixels, max_pixels)
        return resize_frames(frames, h, w)
    total, vfps = _video_meta(path)
    want = frame_indices(total, vfps, count, fps, min_frames, max_frames)
    need = sorted(set(want))
    got: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as c:
            for i, fr in enumerate(c.decode(video=0)):
                if i in need:
                    got[i] = fr.to_ndarray(format="rgb24")
                if i >= need[-1]:
                    break
    except (OSError, av.error.FFmpegError) as e:
        raise UserError(f"could not decode video {path}: {e}") from None
    if not got:
        raise UserError(f"video {path} has no frames")
    last = max(got)
    frames = np.stack([got.get(i, got[last]) for i in want])
    h, w = fit_size(frames.shape[1], frames.shape[2], factor, min_pixels, max_pixels)
    return resize_frames(frames, h, w)


def _folder_frames(d, count, fps, min_frames, max_frames, folder_fps) -> np.ndarray:
    from PIL import Image

    files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise UserError(f"video folder {d} has no .jpg / .png frames")
    want = frame_indices(len(files), folder_fps, count, fps, min_frames, max_frames)
    try:
        frames = [np.asarray(Image.open(files[i]).convert("RGB")) for i in want]
    except OSError as e:
        raise UserError(f"could not read a frame of {d}: {e}") from None
    if len({f.shape for f in frames}) != 1:
        raise UserError(f"video folder {d}: frames of different sizes")
    return np.stack(frames)


def benchmark_frames(meta: dict, factor: int = 28) -> np.ndarray:
    """The frames of a real video benchmark's problem (evals.video_benchmarks): its ``video``
    sampled per ``meta["sampling"]`` (:func:`sample_video`), then its ``image`` (a still, such
    as SEED-Bench-R1's current observation) as the last frame at the clip's size, or alone."""
    s = meta["sampling"]
    frames = sample_video(meta["video"], factor=factor, **s) if meta.get("video") else None
    if meta.get("image"):
        from PIL import Image

        try:
            img = np.asarray(Image.open(meta["image"]).convert("RGB"))
        except OSError as e:
            raise UserError(f"could not read image {meta['image']}: {e}") from None
        if frames is None:
            h, w = fit_size(img.shape[0], img.shape[1], factor, s["min_pixels"], s["max_pixels"])
        else:
            h, w = frames.shape[1:3]
        still = resize_frames(img[None], h, w)
        frames = still if frames is None else np.concatenate([frames, still])
    if frames is None:
        raise UserError("neither a video nor an image to show")
    return frames
