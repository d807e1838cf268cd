"""`grpo train --eval` evaluates the finished run in its own process and `grpo eval` copies
that result (evals/train_eval.py): the copy equals a fresh `grpo eval` of the checkpoint, and
anything the evaluation depends on that changed (an eval setting, the checkpoint) misses the
stash and evaluates anew."""

import json
import os
import shutil

from grpo_core.cli import main

TIMING = {"generation_s"}


def _args(res, *extra):
    return [
        "--profile",
        "smoke",
        "--seed",
        "0",
        "--threads",
        "1",
        f"run.results_dir={res}",
        "workflow.seeded_start=false",
        "train.steps=2",
        *extra,
    ]


def _result(path):
    d = json.loads(path.read_text())
    return {k: v for k, v in d.items() if k not in TIMING}


def test_train_eval_copy_equals_a_fresh_eval(smoke_results, tmp_path, capsys):
    res = tmp_path / "results"
    shutil.copytree(smoke_results, res)
    run = res / "smoke" / "runs" / "grpo" / "seed0"
    assert main(["train", "grpo", "--no-progress", "--eval", *_args(res)]) == 0
    out = capsys.readouterr().out
    assert "evaluated in process: arith_mix" in out
    stash = run / ".train_eval"
    assert (stash / "stamp.json").exists() and (stash / "arith_mix.json").exists()

    # the evaluate job: copied, and it says so
    assert main(["eval", "grpo", *_args(res)]) == 0
    assert "evaluated by the train job" in capsys.readouterr().out
    copied = _result(run / "eval" / "arith_mix.json")
    samples = (run / "eval" / "arith_mix.samples.jsonl").read_text()

    # a fresh evaluation of the same checkpoint in this process, without the stash
    shutil.move(str(stash), str(tmp_path / "stash"))
    assert main(["eval", "grpo", *_args(res)]) == 0
    assert "evaluated by the train job" not in capsys.readouterr().out
    fresh = _result(run / "eval" / "arith_mix.json")
    assert copied == fresh
    assert samples == (run / "eval" / "arith_mix.samples.jsonl").read_text()
    shutil.move(str(tmp_path / "stash"), str(stash))

    # another eval setting: not the stashed evaluation
    assert main(["eval", "grpo", *_args(res, "eval.k=3")]) == 0
    assert "evaluated by the train job" not in capsys.readouterr().out
    assert json.loads((run / "eval" / "arith_mix.json").read_text())["k"] == 3

    # a changed checkpoint file (another modification time): not the stashed evaluation
    w = run / "checkpoint" / "model.safetensors"
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert main(["eval", "grpo", *_args(res)]) == 0
    assert "evaluated by the train job" not in capsys.readouterr().out

    # a finished run with --eval again: the stash is evaluated anew for the new checkpoint state
    assert main(["train", "grpo", "--no-progress", "--eval", *_args(res)]) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "evaluated in process" in out
    assert main(["eval", "grpo", *_args(res)]) == 0
    assert "evaluated by the train job" in capsys.readouterr().out


def test_a_failing_in_process_eval_leaves_the_run_done(
    smoke_results, tmp_path, capsys, monkeypatch
):
    """The run is finished when the in-process evaluation fails: the train job succeeds, no
    stash is left, and `grpo eval` evaluates (and reports) itself."""
    res = tmp_path / "results"
    shutil.copytree(smoke_results, res)
    # an evaluation that fails at run time (config errors are caught before training)
    import evals.evaluate as ev

    def boom(*a, **k):
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:
        m.setattr(ev, "evaluate", boom)
        assert main(["train", "grpo", "--no-progress", "--eval", *_args(res)]) == 0
    out = capsys.readouterr().out
    assert "in-process evaluation failed (RuntimeError: disk full)" in out
    run = res / "smoke" / "runs" / "grpo" / "seed0"
    assert (run / "checkpoint").is_dir() and not (run / ".train_eval").exists()
    assert main(["eval", "grpo", *_args(res)]) == 0
    assert "evaluated by the train job" not in capsys.readouterr().out
    assert (run / "eval" / "arith_mix.json").exists()
