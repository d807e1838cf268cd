"""Bad inputs of the real video benchmarks (evals.video_benchmarks): missing layout, bad rows,
unknown names and levels, undecodable videos: each a one-line UserError saying what, where
and what is expected; with on_error="skip" the bad rows are listed instead."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evals.video_benchmarks import VideoLoadReport, load_frames, load_video_benchmark
from grpo_core.errors import UserError

DATA = Path(__file__).parents[1] / "data" / "video_benchmarks"


def copy(name, tmp_path) -> Path:
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    return dst


def rewrite(path: Path, fn) -> None:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(fn(dict(r))) + "\n" for r in rows))


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_unknown_benchmark():
    with pytest.raises(UserError) as e:
        load_video_benchmark("egoschema", DATA)
    assert "unknown video benchmark 'egoschema'" in one_line(e) and "mvbench" in str(e.value)


def test_missing_root_names_the_layout(tmp_path):
    with pytest.raises(UserError) as e:
        load_video_benchmark("videomme", tmp_path / "nope")
    msg = one_line(e)
    assert "is not a directory" in msg and "ROOT/data/<videoID>.mp4" in msg


def test_missing_annotation_names_the_layout(tmp_path):
    with pytest.raises(UserError) as e:
        load_video_benchmark("vsibench", tmp_path)
    msg = one_line(e)
    assert "no annotation file" in msg and "test.jsonl" in msg
    assert "ROOT/<dataset>/<scene_name>.mp4" in msg
    with pytest.raises(UserError) as e:  # per-level files, none present
        load_video_benchmark("seed_bench_r1", tmp_path)
    assert "ROOT/annotations/validation_L{1,2,3}.jsonl" in one_line(e)
    with pytest.raises(UserError) as e:  # a level asked for whose file is missing
        load_video_benchmark("videommmu", DATA / "videommmu", levels=["Comprehension"])
    assert "Comprehension/test.jsonl" in one_line(e)


def test_unknown_level():
    with pytest.raises(UserError) as e:
        load_video_benchmark("seed_bench_r1", DATA / "seed_bench_r1", levels=["L4"])
    assert "unknown level(s) ['L4']" in one_line(e) and "'L1'" in str(e.value)


def test_missing_video_raises_or_is_skipped(tmp_path):
    root = copy("videomme", tmp_path)
    (root / "data/Zk2Ci0t2Bxo.mp4").unlink()
    with pytest.raises(UserError) as e:
        load_video_benchmark("videomme", root)
    msg = one_line(e)
    assert "test.jsonl:2: video:" in msg and "Zk2Ci0t2Bxo.mp4 not found" in msg
    rep = VideoLoadReport()
    ps = load_video_benchmark("videomme", root, on_error="skip", report=rep)
    assert [p.id for p in ps] == ["videomme-001-1"]
    assert len(rep.skipped) == 1 and "Zk2Ci0t2Bxo.mp4 not found" in rep.skipped[0]


@pytest.mark.parametrize(
    "name,file,edit,fragment,line",
    [
        ("seed_bench_r1", "annotations/validation_L2.jsonl",
         lambda r: r | {"golden_choice_idx": "E"}, "golden_choice_idx: expected a letter A-D, got 'E'", 1),
        ("seed_bench_r1", "annotations/validation_L2.jsonl",
         lambda r: r | {"choice_c": ""}, "choice_c: expected a non-empty string", 1),
        ("videomme", "test.jsonl", lambda r: r | {"options": ["A. x", "C. y"]},
         "options[1]: expected 'B. ...', got 'C. y'", 1),
        ("videomme", "test.jsonl", lambda r: {k: v for k, v in r.items() if k != "question"},
         "question: expected a non-empty string, got None", 1),
        ("vsibench", "test.jsonl", lambda r: r | {"ground_truth": "0"} if r["options"] is None
         else r, "ground_truth: expected a positive number (MRA divides by it), got '0'", 2),
        ("vsibench", "test.jsonl", lambda r: r | {"question_type": "object_colour"},
         "question_type: unknown 'object_colour'", 1),
        ("mmvu", "validation.jsonl", lambda r: r | {"choices": []} if r["answer"] == "C" else r,
         "choices: expected an object of options by letter", 1),
    ],
)  # fmt: skip
def test_malformed_rows(tmp_path, name, file, edit, fragment, line):
    root = copy(name, tmp_path)
    rewrite(root / file, edit)
    with pytest.raises(UserError) as e:
        load_video_benchmark(name, root)
    msg = one_line(e)
    assert fragment in msg and f"{file}:{line}:" in msg, msg


def test_mvbench_answer_not_an_option(tmp_path):
    root = copy("mvbench", tmp_path)
    p = root / "json/moving_direction.json"
    rows = json.loads(p.read_text())
    rows[0]["answer"] = "backwards"
    p.write_text(json.dumps(rows))
    with pytest.raises(UserError) as e:
        load_video_benchmark("mvbench", root)
    msg = one_line(e)
    assert "moving_direction.json:row1: answer: 'backwards' is not one of candidates" in msg


def test_not_json_line(tmp_path):
    root = copy("videomme", tmp_path)
    with open(root / "test.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(UserError) as e:
        load_video_benchmark("videomme", root)
    assert "test.jsonl:3: <line>: not valid JSON" in one_line(e)


def test_undecodable_video(tmp_path):
    root = copy("videomme", tmp_path)
    (root / "data/fFjv93ACGo8.mp4").write_bytes(b"not an mp4 at all")
    (p, _) = load_video_benchmark("videomme", root)
    with pytest.raises(UserError) as e:
        load_frames(p)
    assert "could not decode video" in one_line(e) and "fFjv93ACGo8.mp4" in str(e.value)


def test_bridge_refuses_seed_bench_r1():
    from evals.lmms_eval_bridge import _check

    with pytest.raises(UserError) as e:
        _check("seed_bench_r1")
    assert "seed_bench_r1 has no lmms-eval task" in one_line(e)


def test_bridge_unknown_sampling_key():
    pytest.importorskip("lmms_eval", reason="needs lmms-eval (its own venv)")
    from evals.lmms_eval_bridge import run_lmms_eval

    with pytest.raises(UserError) as e:
        run_lmms_eval("videomme", DATA / "videomme", lambda p, f: "A", sampling={"frames": 8})
    assert "unknown sampling keys ['frames']" in one_line(e) and "'count'" in str(e.value)
