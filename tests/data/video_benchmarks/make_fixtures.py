"""Writes the tiny video-benchmark fixtures (run from the repository root):

    python tests/data/video_benchmarks/make_fixtures.py

Each benchmark's folder holds a few annotation rows in the benchmark's real schema, laid out as
evals.video_benchmarks declares, and 10-frame 28x28 mpeg4 clips (grpo_core.vision.render_clip /
write_mp4, 4 fps: a shape moving right on a dark background, its colour per clip).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from grpo_core.vision import render_clip, write_mp4

HERE = Path(__file__).parent


def clip(path: Path, rgb, frames: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = {"size": 28, "frames": frames, "bg": [10, 10, 10],
             "objects": [{"rgb": rgb, "shape": "square", "r": 4, "x": 5, "y": 14, "dx": 2,
                          "dy": 0}]}  # fmt: skip
    write_mp4(render_clip(scene), path, fps=4)


def still(path: Path, rgb) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((28, 28, 3), dtype=np.uint8)
    a[:] = rgb
    Image.fromarray(a).save(path)


def jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    # SEED-Bench-R1 (EgoPlan schema): one L1 row with progress video, one with none; L2; L3
    d = HERE / "seed_bench_r1"
    base = {"task_goal": "make tea", "video_source": "EPIC-KITCHENS"}
    rows = [
        dict(
            base,
            sample_id="L1-0",
            question="Considering the progress shown in the video "
            "and my current observation in the last frame, what action should I take next "
            "in order to make tea?",
            choice_a="open fridge",
            choice_b="pour water",
            choice_c="cut onion",
            choice_d="close tap",
            golden_choice_idx="B",
            answer="pour water",
            video_basename="P01_0.mp4",
            current_observation_basename="P01_0.png",
            task_progress_metadata=[{"narration_text": "take cup"}],
        ),
        dict(
            base,
            sample_id="L1-1",
            question="What action should I take next in order to make tea?",
            choice_a="boil water",
            choice_b="wash plate",
            choice_c="open door",
            choice_d="sit down",
            golden_choice_idx="A",
            answer="boil water",
            video_basename="P01_1.mp4",
            current_observation_basename="P01_1.png",
            task_progress_metadata=[],
        ),
    ]
    jsonl(d / "annotations/validation_L1.jsonl", rows)
    jsonl(d / "annotations/validation_L2.jsonl", [dict(rows[0], sample_id="L2-0",
          golden_choice_idx="C", video_source="Ego4D")])  # fmt: skip
    jsonl(d / "annotations/validation_L3.jsonl", [dict(rows[0], sample_id="L3-0",
          golden_choice_idx="D", video_source="Ego4D")])  # fmt: skip
    clip(d / "videos/EPIC-KITCHENS/P01_0.mp4", [220, 40, 40])
    clip(d / "videos/Ego4D/P01_0.mp4", [40, 200, 40])
    for src in ("EPIC-KITCHENS", "Ego4D"):
        still(d / f"images/{src}/P01_0.png", [200, 200, 0])
    still(d / "images/EPIC-KITCHENS/P01_1.png", [0, 200, 200])

    # MMVU (lmms-eval/MMVU validation schema)
    d = HERE / "mmvu"
    jsonl(d / "validation.jsonl", [
        {"id": "mmvu-0", "question": "Which organelle is shown producing ATP?",
         "choices": {"A": "nucleus", "B": "ribosome", "C": "mitochondrion", "D": "golgi body",
                     "E": "vacuole"}, "answer": "C", "question_type": "multiple-choice",
         "video_path": "videos/Biology/0.mp4", "field": "Biology"},
        {"id": "mmvu-1", "question": "Which graph search does the animation run?",
         "choices": {}, "answer": "Depth-First Search (DFS)", "question_type": "open-ended",
         "video_path": "videos/Computer_Science/1.mp4", "field": "Computer_Science"},
    ])  # fmt: skip
    clip(d / "videos/Biology/0.mp4", [50, 80, 230])
    clip(d / "videos/Computer_Science/1.mp4", [230, 220, 40])

    # VSI-Bench (nyu-visionx/VSI-Bench schema)
    d = HERE / "vsibench"
    jsonl(d / "test.jsonl", [
        {"id": 0, "dataset": "arkitscenes", "scene_name": "41069025",
         "question_type": "object_rel_direction_easy",
         "question": "If I am standing by the sofa and facing the tv, is the lamp to my left "
         "or right?", "options": ["A. left", "B. right"], "ground_truth": "B"},
        {"id": 1, "dataset": "arkitscenes", "scene_name": "41069025",
         "question_type": "object_counting", "question": "How many chair(s) are in this room?",
         "options": None, "ground_truth": "4"},
        {"id": 2, "dataset": "scannet", "scene_name": "scene0011_00",
         "question_type": "room_size_estimation",
         "question": "What is the size of this room (in square meters)?", "options": None,
         "ground_truth": "20.0"},
    ])  # fmt: skip
    clip(d / "arkitscenes/41069025.mp4", [220, 50, 220])
    clip(d / "scannet/scene0011_00.mp4", [40, 220, 220])

    # VideoMMMU (lmms-eval/VideoMMMU schema; one folder per track)
    d = HERE / "videommmu"
    jsonl(d / "Perception/test.jsonl", [
        {"id": "Perception_Biology_1", "question": "What is the name of the enzyme written "
         "on the slide?", "options": ["helicase", "ligase", "primase", "polymerase"],
         "answer": "D", "question_type": "multiple-choice", "link_selected": ""},
    ])  # fmt: skip
    jsonl(d / "Adaptation/test.jsonl", [
        {"id": "Adaptation_Math_3", "question": "Apply the method from the video: which value "
         "does the integral take?", "options": ["0", "1", "2", "pi"], "answer": "B",
         "question_type": "multiple-choice", "image": None},
        {"id": "Adaptation_Physics_7", "question": "Apply the formula from the video: what is "
         "the speed in m/s?", "options": [], "answer": "12.5", "question_type": "open",
         "image": None},
    ])  # fmt: skip
    clip(d / "Science/Perception_Biology_1.mp4", [220, 40, 40])
    clip(d / "Science/Adaptation_Math_3.mp4", [40, 200, 40])
    clip(d / "Science/Adaptation_Physics_7.mp4", [50, 80, 230])

    # MVBench (OpenGVLab/MVBench json/<task>.json schema)
    d = HERE / "mvbench"
    (d / "json").mkdir(parents=True, exist_ok=True)
    (d / "json/action_count.json").write_text(json.dumps([
        {"video": "clip_0.mp4", "question": "How many times did the person jump?",
         "candidates": ["2", "3", "4"], "answer": "3"},
        {"video": "clip_1.mp4", "question": "How many times did the ball bounce?",
         "candidates": ["1", "5", "0"], "answer": "0"},
    ], indent=1))  # fmt: skip
    (d / "json/moving_direction.json").write_text(json.dumps([
        {"video": "video_10000.mp4", "question": "Which direction does the red cube move?",
         "candidates": ["up", "down", "left", "right"], "answer": "right"},
    ], indent=1))  # fmt: skip
    clip(d / "perception/videos/clip_0.mp4", [220, 40, 40])
    clip(d / "perception/videos/clip_1.mp4", [240, 140, 20])
    clip(d / "clevrer/video_validation/video_10000.mp4", [220, 40, 40])

    # Video-MME (lmms-eval/Video-MME schema)
    d = HERE / "videomme"
    base = {"video_id": "001", "duration": "short", "domain": "Knowledge",
            "sub_category": "Humanity & History", "url": "https://www.youtube.com/watch?v=x",
            "videoID": "fFjv93ACGo8"}  # fmt: skip
    jsonl(d / "test.jsonl", [
        dict(base, question_id="001-1", task_type="Counting Problem",
             question="How many squares appear in the video?",
             options=["A. 1.", "B. 2.", "C. 3.", "D. 4."], answer="A"),
        dict(base, video_id="301", duration="long", domain="Sports Competition",
             sub_category="Football", videoID="Zk2Ci0t2Bxo", question_id="301-2",
             task_type="Action Recognition", question="What does the square do?",
             options=["A. It stays still.", "B. It moves left.", "C. It moves right.",
                      "D. It spins."], answer="C"),
    ])  # fmt: skip
    clip(d / "data/fFjv93ACGo8.mp4", [50, 80, 230])
    clip(d / "data/Zk2Ci0t2Bxo.mp4", [245, 245, 245], frames=12)


if __name__ == "__main__":
    main()
