"""Real video benchmarks: declarations (dataset id, the annotation schema's fields, the local
layout of annotations and videos, frame sampling, prompt, grader, levels) and a loader that
reads a local directory (no download) into :class:`~grpo_core.tasks.Problem` rows whose
``meta`` carries the video path, the frame sampling, the options, the level and the raw
annotation row (for the lmms-eval bridge, evals.lmms_eval_bridge).

    from evals.video_benchmarks import load_video_benchmark, score
    probs = load_video_benchmark("mvbench", "/data/MVBench", levels=["action_count"])
    score(probs[0], "(B) jump")           # the benchmark's own rule -> 1.0 / 0.0 (MRA for VSI)
    frames = load_frames(probs[0])        # uint8 [T, H, W, 3] per the declared sampling

Prompts and scoring rules follow lmms-eval 0.7.3's task (``lmms_task``), SEED-Bench-R1 its
own ``infer.py`` (not in lmms-eval); evals.video_graders has the rules. Every grader first
removes ``<think>...</think>`` blocks (lmms-eval's ``reasoning_tags``), SEED-Bench-R1's reads
the first ``<answer>`` tag as its own code does. With ``answer_tag=True`` (for a policy trained
to write ``<answer>X</answer>``) the last ``<answer>`` content, when there is one, is scored
instead of the whole completion.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals import video_graders as vg
from grpo_core.errors import UserError
from grpo_core.tasks import Problem
from grpo_core.vision import VIDEO_PLACEHOLDER  # noqa: F401  (re-exported for callers)

LETTERS = string.ascii_uppercase  # VideoMMMU has up to 10 options


@dataclass(frozen=True)
class FrameSampling:
    """Which frames a model is shown (grpo_core.vision.sample_video): ``count`` uniform frames
    or ``fps`` frames per second within [min_frames, max_frames]; each frame resized to at
    most ``max_pixels`` (and at least ``min_pixels``) pixels."""

    count: int | None = None
    fps: float | None = None
    min_frames: int = 4
    max_frames: int = 768
    max_pixels: int = 1605632
    min_pixels: int = 256 * 28 * 28
    source: str = ""

    def as_dict(self) -> dict:
        return {
            "count": self.count,
            "fps": self.fps,
            "min_frames": self.min_frames,
            "max_frames": self.max_frames,
            "max_pixels": self.max_pixels,
            "min_pixels": self.min_pixels,
        }


# lmms-eval's Qwen2.5-VL model: 32 uniform frames, max_pixels 1605632, min_pixels 256*28*28
LMMS_QWEN = FrameSampling(
    count=32, source="lmms-eval qwen2_5_vl defaults (max_num_frames 32, max_pixels 1605632)"
)


@dataclass(frozen=True)
class VideoBenchmark:
    name: str
    hf_id: str
    # annotation file(s) relative to the root; "{level}" is filled per level for benchmarks
    # whose levels are files (SEED-Bench-R1's L1-L3, VideoMMMU's tracks, MVBench's tasks)
    annotation: str
    video: str  # video path relative to the root, a format over the row (+ derived fields)
    question: str  # field of the question
    options: tuple[str, ...]  # option fields, or one field holding a list / a letter dict
    options_kind: str  # fields | list | lettered_list ("A. text") | letter_dict
    answer: str  # field of the gold answer
    answer_kind: str  # letter | option_text (MVBench: the option's text)
    id_field: str
    levels: tuple[str, ...]  # the level names (files or values of level_field)
    level_field: str | None  # None: the level is the file's
    frames: FrameSampling
    prompt: Callable[[dict, dict], str]  # (row, problem meta) -> prompt text
    grader: str  # key of GRADERS
    generation: dict  # max_new_tokens, temperature (the reference's)
    lmms_task: str | None = None  # lmms-eval's task (per level: "{level}")
    # the row's kind_field says its answer kind: a value in numeric_values is numeric (VSI);
    # with mc_values given, any other value than those is open-ended (MMVU, VideoMMMU: as
    # lmms-eval, which checks question_type == "multiple-choice")
    kind_field: str | None = None
    mc_values: tuple[str, ...] = ()
    numeric_values: tuple[str, ...] = ()
    image: str | None = None  # a still (SEED-Bench-R1's current observation), after the clip
    video_if: str | None = None  # the clip is shown only when this field is non-empty
    layout: str = ""  # the expected directory layout, for the error message
    notes: str = ""


# ---------------------------------------------------------------------------- prompts


def _opts(m: dict, fmt: str = "{l}. {o}") -> str:
    return "\n".join(fmt.format(l=LETTERS[i], o=o) for i, o in enumerate(m["options"]))


SEED_R1_TEMPLATE = (
    "{Question} Output the thinking process in <think> </think> and final answer in <answer> "
    "</answer> tags, i.e., <think> reasoning process here </think><answer> answer here "
    "</answer>. "
)


def _p_seed_r1(row: dict, m: dict) -> str:
    return SEED_R1_TEMPLATE.format(Question=f"{row['question']}\n{_opts(m)}\n")


def _p_mmvu(row: dict, m: dict) -> str:
    if m["answer_kind"] == "open":
        return (
            f"\nQuestion:{row['question']}\nVisual Information: processed video\nDo not "
            "generate any intermediate reasoning process. Directly output the final answer.\n"
        )
    ch = row["choices"]
    opts = "".join(f"{k}: {ch[k]}\n" for k in "ABCDE")
    return (
        f"\nQuestion:{row['question']}\n{opts}Visual Information: processed video\nDo not "
        "generate any intermediate reasoning process. Answer directly with the option letter "
        "from the\ngiven choices.\n"
    )


def _p_vsi(row: dict, m: dict) -> str:
    pre = "These are frames of a video."
    if m["answer_kind"] == "number":
        return (
            f"{pre}\n{row['question']}\nPlease answer the question using a single word or phrase."
        )
    opts = "Options:\n" + "\n".join(row["options"])
    return "\n".join(
        [
            pre,
            row["question"],
            opts,
            "Answer with the option's letter from the given choices directly.",
        ]
    )


VIDEOMMMU_PRE = "You should watch and learn the video content. Then apply what you learned to "


def _mmmu_options(options: list[str]) -> str:
    if all(o.startswith(f"{LETTERS[i]}.") for i, o in enumerate(options)):
        return "\n".join(options)
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def _p_videommmu(row: dict, m: dict) -> str:
    q = row["question"]
    if m["level"] != "Adaptation":
        return f"{q}\n{_mmmu_options(row['options'])}\nPlease ignore the Quiz question in last frame of the video."
    if m["answer_kind"] == "open":
        return (
            VIDEOMMMU_PRE + "answer the following open-ended question. The image for this "
            f"question is at the end of the video.\n{q}"
        )
    return (
        VIDEOMMMU_PRE + "answer the following multi-choice question. The image for this "
        f"question is at the end of the video.\n{q}\n{_mmmu_options(row['options'])}"
    )


def _p_mvbench(row: dict, m: dict) -> str:
    opts = "".join(f"({LETTERS[i]}) {o}\n" for i, o in enumerate(row["candidates"]))
    return f"Question:{row['question']}\nOption:\n{opts}Only give the best option.\n"


def _p_videomme(row: dict, m: dict) -> str:
    head = (
        "Select the best answer to the following multiple-choice question based on the video "
        "and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option."
    )
    q = row["question"] + "\n" + "\n".join(row["options"])
    return f"{head}\n{q}\n\nAnswer with the option's letter from the given choices directly."


# ---------------------------------------------------------------------------- declarations

# MVBench's tasks -> the folder of their videos (lmms-eval's DATA_LIST; MVBench's video/ zips)
MVBENCH_DIRS = {
    "object_interaction": "star/Charades_segment", "action_sequence": "star/Charades_segment",
    "action_prediction": "star/Charades_segment", "action_localization": "sta/sta_video_segment",
    "moving_count": "clevrer/video_validation", "fine_grained_pose": "nturgbd_convert",
    "character_order": "perception/videos", "object_shuffle": "perception/videos",
    "egocentric_navigation": "vlnqa", "moving_direction": "clevrer/video_validation",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment",
    "fine_grained_action": "Moments_in_Time_Raw/videos", "scene_transition": "scene_qa/video",
    "state_change": "perception/videos", "moving_attribute": "clevrer/video_validation",
    "action_antonym": "ssv2_video_mp4", "unexpected_action": "FunQA_test/test",
    "counterfactual_inference": "clevrer/video_validation",
    "object_existence": "clevrer/video_validation", "action_count": "perception/videos",
}  # fmt: skip

# VideoMMMU: subject (from the id "<track>_<Subject>_<n>") -> discipline folder of its videos
VIDEOMMMU_DISCIPLINES = {
    "Art": ("Art", "Art_Theory", "Design", "Music"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Humanities": ("History", "Literature", "Sociology", "Psychology"),
    "Engineering": ("Agriculture", "Architecture_and_Engineering", "Computer_Science",
                    "Electronics", "Energy_and_Power", "Materials", "Mechanical_Engineering"),
    "Medicine": ("Basic_Medical_Science", "Clinical_Medicine",
                 "Diagnostics_and_Laboratory_Medicine", "Pharmacy", "Public_Health"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
}  # fmt: skip

VSI_MCA = ("object_rel_direction_easy", "object_rel_direction_medium",
           "object_rel_direction_hard", "object_rel_distance", "route_planning",
           "obj_appearance_order")  # fmt: skip
VSI_NA = ("object_abs_distance", "object_counting", "object_size_estimation",
          "room_size_estimation")  # fmt: skip

VIDEO_BENCHMARKS: dict[str, VideoBenchmark] = {
    b.name: b
    for b in [
        VideoBenchmark(
            name="seed_bench_r1",
            hf_id="TencentARC/SEED-Bench-R1",
            annotation="annotations/validation_{level}.jsonl",
            video="videos/{video_source}/{video_basename}",
            image="images/{video_source}/{current_observation_basename}",
            video_if="task_progress_metadata",
            question="question",
            options=("choice_a", "choice_b", "choice_c", "choice_d"),
            options_kind="fields",
            answer="golden_choice_idx",
            answer_kind="letter",
            id_field="sample_id",
            levels=("L1", "L2", "L3"),
            level_field=None,
            frames=FrameSampling(
                fps=2.0,
                min_frames=4,
                max_frames=16,
                max_pixels=196 * 28 * 28,
                min_pixels=128 * 28 * 28,
                source="SEED-Bench-R1 qwen-vl-utils (vision_process_egoplan): FPS 2, 4-16 "
                "frames, VIDEO_MAX_PIXELS 196*28*28",
            ),
            prompt=_p_seed_r1,
            grader="seed_r1",
            generation={"max_new_tokens": 256, "temperature": 1.0},
            layout="ROOT/annotations/validation_L{1,2,3}.jsonl, ROOT/videos/<video_source>/"
            "<video_basename>, ROOT/images/<video_source>/<current_observation_basename>",
            notes="EgoPlan planning questions; L1 in distribution, L2 cross-environment, L3 "
            "cross-environment-task (EgoPlan-Bench2). The current-observation still is shown "
            "as the clip's last frame (our VLM takes one video); a row without task progress "
            "shows the still alone. infer.py samples at T=1 (do_sampling=1), 256 new tokens.",
        ),
        VideoBenchmark(
            name="mmvu",
            hf_id="lmms-eval/MMVU",
            annotation="validation.jsonl",
            video="{video_path}",
            question="question",
            options=("choices",),
            options_kind="letter_dict",
            answer="answer",
            answer_kind="letter",
            id_field="id",
            levels=(),
            level_field="<category>",  # the video folder: <discipline>
            kind_field="question_type",
            mc_values=("multiple-choice",),
            frames=LMMS_QWEN,
            prompt=_p_mmvu,
            grader="mmvu",
            generation={"max_new_tokens": 1024, "temperature": 0.0},
            lmms_task="mmvu_val",
            layout="ROOT/validation.jsonl (or .json / .parquet) and ROOT/<video_path> "
            "(videos/<Discipline>/<n>.mp4)",
            notes="expert-level video reasoning, 27 disciplines; multiple-choice (A-E) and "
            "open-ended; lmms-eval asks a GPT judge about open answers its rules reject: here "
            "the rules only",
        ),
        VideoBenchmark(
            name="vsibench",
            hf_id="nyu-visionx/VSI-Bench",
            annotation="test.jsonl",
            video="{dataset}/{scene_name}.mp4",
            question="question",
            options=("options",),
            options_kind="lettered_list",
            answer="ground_truth",
            answer_kind="letter",
            id_field="id",
            levels=VSI_MCA + VSI_NA,
            level_field="question_type",
            kind_field="question_type",
            numeric_values=VSI_NA,
            frames=LMMS_QWEN,
            prompt=_p_vsi,
            grader="vsibench",
            generation={"max_new_tokens": 16, "temperature": 0.0},
            lmms_task="vsibench",
            layout="ROOT/test.jsonl (or .json / .parquet) and ROOT/<dataset>/<scene_name>.mp4 "
            "(arkitscenes, scannet, scannetpp)",
            notes="visual-spatial intelligence; multiple-choice types scored by the letter, "
            "numeric types by mean relative accuracy; overall = mean of the per-type scores "
            "with the three relative-direction types merged into one",
        ),
        VideoBenchmark(
            name="videommmu",
            hf_id="lmms-eval/VideoMMMU",
            annotation="{level}/test.jsonl",
            video="{discipline}/{id}.mp4",
            question="question",
            options=("options",),
            options_kind="list",
            answer="answer",
            answer_kind="letter",
            id_field="id",
            levels=("Perception", "Comprehension", "Adaptation"),
            level_field=None,
            kind_field="question_type",
            mc_values=("multiple-choice",),
            frames=LMMS_QWEN,
            prompt=_p_videommmu,
            grader="videommmu",
            generation={"max_new_tokens": 1024, "temperature": 0.0},
            lmms_task="video_mmmu_{level_lower}",
            layout="ROOT/<Perception|Comprehension|Adaptation>/test.jsonl (or .json / "
            ".parquet) and ROOT/<Discipline>/<id>.mp4 (Art, Science, Humanities, Engineering, "
            "Medicine, Business)",
            notes="knowledge acquisition from lecture videos; three tracks; MMMU's "
            "multiple-choice and open-ended rules",
        ),
        VideoBenchmark(
            name="mvbench",
            hf_id="OpenGVLab/MVBench",
            annotation="json/{level}.json",
            video="{mvbench_dir}/{video}",
            question="question",
            options=("candidates",),
            options_kind="list",
            answer="answer",
            answer_kind="option_text",
            id_field="",
            levels=tuple(MVBENCH_DIRS),
            level_field=None,
            frames=FrameSampling(
                count=16, source="MVBench paper: 16 frames uniformly sampled (lmms-eval: model's)"
            ),
            prompt=_p_mvbench,
            grader="mvbench",
            generation={"max_new_tokens": 16, "temperature": 0.0},
            lmms_task="mvbench_{level}",
            layout="ROOT/json/<task>.json (MVBench's json/ folder) and ROOT/<task's video "
            "folder>/<video> (e.g. perception/videos/..., clevrer/video_validation/...)",
            notes="20 temporal tasks; the gold is the option text, its letter is its index; "
            "lmms-eval's aggregate leaves empty predictions out of the denominator, ours counts "
            "them as wrong",
        ),
        VideoBenchmark(
            name="videomme",
            hf_id="lmms-eval/Video-MME",
            annotation="test.jsonl",
            video="data/{videoID}.mp4",
            question="question",
            options=("options",),
            options_kind="lettered_list",
            answer="answer",
            answer_kind="letter",
            id_field="question_id",
            levels=("short", "medium", "long"),
            level_field="duration",
            frames=LMMS_QWEN,
            prompt=_p_videomme,
            grader="videomme",
            generation={"max_new_tokens": 16, "temperature": 0.0},
            lmms_task="videomme",
            layout="ROOT/test.jsonl (or .json / .parquet) and ROOT/data/<videoID>.mp4",
            notes="short / medium / long videos, 4 options, no subtitles (lmms-eval videomme)",
        ),
    ]
}


def get_video_benchmark(name: str) -> VideoBenchmark:
    if name not in VIDEO_BENCHMARKS:
        raise UserError(f"unknown video benchmark {name!r}; declared: {sorted(VIDEO_BENCHMARKS)}")
    return VIDEO_BENCHMARKS[name]


# ---------------------------------------------------------------------------- rows


def _derived(b: VideoBenchmark, row: dict, level: str | None) -> dict:
    d = dict(row)
    if b.name == "mvbench":
        d["mvbench_dir"] = MVBENCH_DIRS[level]
    if b.name == "videommmu":
        subject = "_".join(str(row.get("id", "")).split("_")[1:-1])
        disc = next((k for k, v in VIDEOMMMU_DISCIPLINES.items() if subject in v), None)
        if disc is None:
            raise ValueError(f"id: subject {subject!r} of {row.get('id')!r} is not a known one")
        d["discipline"] = disc
    return d


def _options(b: VideoBenchmark, row: dict) -> list[str]:
    if b.options_kind == "fields":
        vals = [row.get(f) for f in b.options]
        bad = [f for f, v in zip(b.options, vals) if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ValueError(f"{bad[0]}: expected a non-empty string")
        return vals
    f = b.options[0]
    v = row.get(f)
    if b.options_kind == "letter_dict":
        if not isinstance(v, dict) or not v:
            raise ValueError(f"{f}: expected an object of options by letter, got {v!r}")
        keys = sorted(k for k in v if v[k] not in (None, ""))
        return [str(v[k]) for k in keys]
    if not isinstance(v, list) or len(v) < 2 or not all(isinstance(o, str) for o in v):
        raise ValueError(f"{f}: expected a list of at least 2 option strings, got {v!r}")
    if b.options_kind == "lettered_list":
        out = []
        for i, o in enumerate(v):
            head = f"{LETTERS[i]}."
            if not o.startswith(head):
                raise ValueError(f"{f}[{i}]: expected '{head} ...', got {o!r}")
            out.append(o[len(head) :].strip())
        return out
    return v


def _answer_kind(b: VideoBenchmark, row: dict) -> str:
    if b.kind_field is None:
        return "letter"
    if b.kind_field not in row:
        raise ValueError(f"{b.kind_field}: missing (row has {sorted(row)})")
    k = row[b.kind_field]
    if k in b.numeric_values:
        return "number"
    if b.mc_values and k not in b.mc_values:
        return "open"
    if b.name == "vsibench" and k not in VSI_MCA:
        raise ValueError(f"question_type: unknown {k!r}; VSI-Bench has {VSI_MCA + VSI_NA}")
    return "letter"


def row_to_problem(b: VideoBenchmark, root: Path, row: Any, level: str | None, idx: int):
    """One annotation row -> Problem; ValueError("<field>: why") when malformed."""
    if not isinstance(row, dict):
        raise ValueError(f"<row>: expected an object, got {type(row).__name__}")
    q = row.get(b.question)
    if not isinstance(q, str) or not q.strip():
        raise ValueError(f"{b.question}: expected a non-empty string, got {q!r}")
    kind = _answer_kind(b, row)
    options = [] if kind in ("number", "open") else _options(b, row)
    if b.answer not in row or row[b.answer] is None:
        raise ValueError(f"{b.answer}: missing (row has {sorted(row)})")
    gold = row[b.answer]
    if kind == "number":
        try:
            g = float(gold)
        except (TypeError, ValueError):
            raise ValueError(f"{b.answer}: expected a number, got {gold!r}") from None
        if not math.isfinite(g) or g <= 0:
            raise ValueError(
                f"{b.answer}: expected a positive number (MRA divides by it), got {gold!r}"
            )
        answer = str(gold)
    elif kind == "open":
        if not isinstance(gold, str | list) or not gold:
            raise ValueError(f"{b.answer}: expected an answer string, got {gold!r}")
        answer = gold if isinstance(gold, str) else "; ".join(map(str, gold))
    elif b.answer_kind == "option_text":
        if gold not in options:
            raise ValueError(f"{b.answer}: {gold!r} is not one of {b.options[0]} {options}")
        answer = LETTERS[options.index(gold)]
    else:
        if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(options):
            gold = LETTERS[gold]  # an index instead of a letter
        g = str(gold).strip().rstrip(".").upper()
        if len(g) != 1 or g not in LETTERS[: len(options)]:
            raise ValueError(
                f"{b.answer}: expected a letter A-{LETTERS[len(options) - 1]}, got {gold!r}"
            )
        answer = g
    d = _derived(b, row, level)
    try:
        video = root / b.video.format(**d)
    except KeyError as e:
        raise ValueError(f"{e.args[0]}: missing (the video path is {b.video})") from None
    show_video = b.video_if is None or bool(row.get(b.video_if))
    if show_video and not video.exists():
        raise ValueError(f"video: {video} not found")
    meta: dict[str, Any] = {
        "benchmark": b.name,
        "options": options,
        "answer_kind": kind,
        "sampling": b.frames.as_dict(),
        "doc": row,
    }
    if show_video:
        meta["video"] = str(video)
    if b.image:
        img = root / b.image.format(**d)
        if not img.exists():
            raise ValueError(f"image: {img} not found")
        meta["image"] = str(img)
    if b.level_field == "<category>":
        meta["level"] = Path(str(row.get("video_path", ""))).parent.name
    elif b.level_field:
        meta["level"] = row.get(b.level_field)
    else:
        meta["level"] = level
    if b.kind_field:
        meta["qtype"] = row.get(b.kind_field)
    pid = row.get(b.id_field, idx) if b.id_field else idx
    pid = f"{level}-{pid}" if b.level_field is None else pid
    # the prompt without the video placeholder: env video_mc (and the lmms-eval bridge) put
    # grpo_core.vision.VIDEO_PLACEHOLDER before it
    return Problem(id=f"{b.name}-{pid}", question=b.prompt(row, meta), answer=answer, meta=meta)


def _annotation_files(b: VideoBenchmark, root: Path, levels: list[str] | None) -> list:
    """(level, path) of the annotation files to read (the first of .jsonl / .json / .parquet
    that exists)."""
    if not root.is_dir():
        raise UserError(
            f"video benchmark {b.name}: {root} is not a directory; expected the layout {b.layout}"
        )
    per_file = "{level}" in b.annotation
    if levels is not None:
        unknown = [lv for lv in levels if lv not in b.levels] if b.levels else []
        if unknown:
            raise UserError(
                f"video benchmark {b.name}: unknown level(s) {unknown}; declared: {list(b.levels)}"
            )
    todo = (levels or list(b.levels)) if per_file else [None]
    out = []
    for lv in todo:
        rel = b.annotation.format(level=lv) if lv else b.annotation
        stem = Path(rel).with_suffix("")
        cands = [root / stem.with_suffix(s) for s in (".jsonl", ".json", ".parquet")]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            if per_file and levels is None:
                continue  # levels not present locally are skipped when none were asked for
            raise UserError(
                f"video benchmark {b.name}: no annotation file {root / rel} (nor .json / "
                f".parquet); expected the layout {b.layout}"
            )
        out.append((lv, hit))
    if not out:
        raise UserError(
            f"video benchmark {b.name}: no annotation file under {root}; expected the layout "
            f"{b.layout}"
        )
    return out


@dataclass
class VideoLoadReport:
    skipped: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def load_video_benchmark(
    name: str,
    root: str | Path,
    levels: list[str] | None = None,
    on_error: str = "raise",
    n: int | None = None,
    report: VideoLoadReport | None = None,
) -> list[Problem]:
    """The benchmark's problems from a local directory (``root``, laid out as declared in
    ``layout``). ``levels``: only these (files or values of the level field); ``n``: the
    first n; on_error "raise" (a UserError "<file>:<row>: <field>: why") or "skip"."""
    from evals.benchmarks import BadLine, _read_local

    if on_error not in ("raise", "skip"):
        raise UserError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    b = get_video_benchmark(name)
    root = Path(root).expanduser().resolve()
    rep = report if report is not None else VideoLoadReport()
    out: list[Problem] = []
    seen: set[str] = set()
    for lv, path in _annotation_files(b, root, levels):
        rep.files.append(str(path))
        for i, (loc, row) in enumerate(_read_local(path)):
            try:
                if isinstance(row, BadLine):
                    raise ValueError(f"<line>: {row}")
                p = row_to_problem(b, root, row, lv, i)
            except ValueError as e:
                if on_error == "raise":
                    raise UserError(f"video benchmark {name}: malformed row {loc}: {e}") from None
                rep.skipped.append(f"{loc}: {e}")
                continue
            if b.level_field and levels is not None and p.meta["level"] not in levels:
                continue
            if p.id in seen:
                p.id = f"{p.id}#{i}"
            seen.add(p.id)
            out.append(p)
            if n is not None and len(out) >= n:
                return out
    if not out:
        raise UserError(f"video benchmark {name}: no usable rows in {rep.files}")
    return out


# ---------------------------------------------------------------------------- frames


def load_frames(problem: Problem, factor: int = 28):
    """The problem's frames (uint8 [T, H, W, 3]) per its declared sampling, PyAV-decoded; a
    still (SEED-Bench-R1) is appended as the last frame, resized to the clip's size
    (grpo_core.vision.benchmark_frames). ``factor``: the VLM's patch_size *
    spatial_merge_size (sizes are multiples of it)."""
    from grpo_core.vision import benchmark_frames

    try:
        return benchmark_frames(problem.meta, factor)
    except UserError as e:
        raise UserError(f"problem {problem.id}: {e}") from None


# ---------------------------------------------------------------------------- scoring


def _span(completion: str, answer_tag: bool) -> str:
    text = vg.strip_think(completion)
    if answer_tag:
        a = vg.answer_tag(text)
        if a is not None:
            return a
    return text


def _g_seed_r1(c: str, p: Problem, tag: bool) -> float:
    return vg.seed_r1_score(c, p.answer)


def _g_mmvu(c: str, p: Problem, tag: bool) -> float:
    t = _span(c, tag)
    if p.meta["answer_kind"] == "open":
        return float(vg.mmvu_open_correct(t, p.answer))
    return float(vg.mmvu_mc_correct(t, p.answer, p.meta["doc"]["choices"]))


def _g_vsi(c: str, p: Problem, tag: bool) -> float:
    t = _span(c, tag)
    if p.meta["answer_kind"] == "number":
        return vg.vsi_na_score(t, float(p.answer))
    return vg.vsi_mca_score(t, p.answer)


def _g_videommmu(c: str, p: Problem, tag: bool) -> float:
    t = _span(c, tag)
    if p.meta["answer_kind"] == "open":
        return float(vg.mmmu_open_correct(t, p.meta["doc"]["answer"]))
    letters = list(LETTERS[: len(p.meta["options"])])
    return float(vg.mcq_extract(t, letters) == p.answer)


def _g_mvbench(c: str, p: Problem, tag: bool) -> float:
    return float(vg.mvbench_letter(_span(c, tag)) == vg.mvbench_letter(p.answer))


def _g_videomme(c: str, p: Problem, tag: bool) -> float:
    return float(vg.mcq_extract(_span(c, tag), list("ABCD")).lower() == p.answer.lower())


GRADERS: dict[str, Callable[[str, Problem, bool], float]] = {
    "seed_r1": _g_seed_r1,
    "mmvu": _g_mmvu,
    "vsibench": _g_vsi,
    "videommmu": _g_videommmu,
    "mvbench": _g_mvbench,
    "videomme": _g_videomme,
}


def score(problem: Problem, completion: str, answer_tag: bool = False) -> float:
    """The benchmark's score of one completion (0 / 1; VSI-Bench's numeric types: MRA)."""
    b = get_video_benchmark(problem.meta["benchmark"])
    return GRADERS[b.grader](completion, problem, answer_tag)


def aggregate(problems: list[Problem], scores: list[float]) -> dict[str, float]:
    """acc (mean score), acc_<level> per level and, for VSI-Bench, ``overall`` (the mean of the
    per-type scores, the three relative-direction types averaged into one first)."""
    if len(problems) != len(scores) or not problems:
        raise UserError("aggregate: one score per problem, at least one")
    out = {"acc": sum(scores) / len(scores)}
    by: dict[str, list[float]] = {}
    for p, s in zip(problems, scores):
        by.setdefault(str(p.meta.get("level")), []).append(s)
    for lv, xs in sorted(by.items()):
        out[f"acc_{lv}"] = sum(xs) / len(xs)
    if problems[0].meta["benchmark"] == "vsibench":
        per = {lv: sum(xs) / len(xs) for lv, xs in by.items()}
        rd = [per.pop(k) for k in VSI_MCA[:3] if k in per]
        if rd:
            per["object_rel_direction"] = sum(rd) / len(rd)
        out["overall"] = sum(per.values()) / len(per)
    return out


# ---------------------------------------------------------------------------- runs


def checkpoint_generator(
    model_dir: str | Path,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
) -> Callable[[str, Any], str]:
    """``generate(prompt, frames) -> completion`` of a VLM checkpoint (the project's hf
    engine; the prompt's one video placeholder expanded by the model's processor)."""
    from grpo_core.episodes import chat_ids
    from grpo_core.models import load_model_and_tokenizer
    from grpo_core.rollout import HFEngine, SamplingParams
    from grpo_core.vision import VideoProcessor

    if not Path(model_dir).exists():
        raise UserError(f"video eval: no checkpoint at {model_dir}")
    model, tok = load_model_and_tokenizer(str(model_dir), dtype, device)
    model.eval()
    proc = VideoProcessor.from_model(model)
    if proc is None:
        raise UserError(f"video eval: {model_dir} is a text model; video benchmarks need a VLM")
    engine = HFEngine(model, tok, cfg=None, model_path=str(model_dir), batch_size=1)
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)

    def generate(prompt: str, frames) -> str:
        if getattr(tok, "chat_template", None):  # the chat the env video_mc would send
            ids = chat_ids(tok, [{"role": "user", "content": prompt}])
        else:
            ids = list(tok(prompt)["input_ids"])
        ids, media = proc.process(ids, {"video": frames})
        return engine.generate([ids], params, media=[media]).texts[0]

    generate.factor = proc.patch * proc.merge  # frame sizes: multiples of this
    return generate


def evaluate_video(
    name: str,
    root: str | Path,
    generate: Callable[[str, Any], str],
    *,
    levels: list[str] | None = None,
    n: int | None = None,
    answer_tag: bool = False,
    sampling: dict | None = None,
    out_dir: str | Path | None = None,
    reproduction: str = "",
    seed: int = 0,
    model: str | None = None,
) -> dict:
    """Our harness on a video benchmark: per problem ``generate(VIDEO_PLACEHOLDER + prompt,
    frames)`` (:func:`checkpoint_generator` or any callable), scored by the benchmark's grader;
    the eval record (benchmark, metrics from :func:`aggregate`, n, protocol), written as
    ``out_dir/<name>.json`` + ``.samples.jsonl`` when out_dir is given. ``sampling``: entries
    replacing the declared frame sampling's."""
    import json

    b = get_video_benchmark(name)
    used = b.frames.as_dict() | dict(sampling or {})
    unknown = set(sampling or {}) - set(b.frames.as_dict())
    if unknown:
        raise UserError(
            f"video eval: unknown sampling keys {sorted(unknown)}; known: {sorted(used)}"
        )
    probs = load_video_benchmark(name, root, levels=levels, n=n)
    fac = getattr(generate, "factor", 28)
    samples, scores = [], []
    for p in probs:
        p.meta["sampling"] = dict(used)
        c = generate(VIDEO_PLACEHOLDER + p.question, load_frames(p, factor=fac))
        s = score(p, c, answer_tag)
        scores.append(s)
        samples.append({"id": p.id, "level": p.meta.get("level"), "completion": c,
                        "target": p.answer, "score": s})  # fmt: skip
    rec = {
        "benchmark": name,
        "reproduction": reproduction,
        "seed": seed,
        "model": model,
        "n_prompts": len(probs),
        "k": 1,
        "metrics": aggregate(probs, scores),
        "headline": "overall" if name == "vsibench" else "acc",
        "protocol": {
            "harness": "grpo",
            "root": str(Path(root).resolve()),
            "levels": levels,
            "answer_tag": answer_tag,
            "frames": used,
            "generation": b.generation,
            "grader": b.grader,
        },
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(x, default=str) + "\n" for x in samples)
        (out / f"{name}.samples.jsonl").write_text(lines)
        (out / f"{name}.json").write_text(json.dumps(rec, indent=2))
    return {**rec, "samples": samples}
