"""TW-GRPO's question-answer inversion (QAI) as a video_mc task param (issue 15): the inversion
of one item by hand, the default keeping every item (and the data RNG) as before, the test
split never inverted, the soft multiple-choice credit on an inverted item, and tw_grpo's
tiny_video setting."""

from __future__ import annotations

import pytest


class ScriptedRng:
    """randint -> its upper bound - 1, sample -> the first k, shuffle -> reversed."""

    def randint(self, a, b):
        return b - 1

    def sample(self, xs, k):
        return list(xs[:k])

    def shuffle(self, xs):
        xs.reverse()


def _task(**params):
    from grpo_core.tasks import VideoMC

    return VideoMC(60, 9, 3, None, None, {"frames": 4, "size": 28, "held_out": "changed", **params})


def test_inversion_of_one_item_by_hand():
    """Options [up, left, right, down], answer 1 (left). The wrong options [up, right, down];
    k = randint(1, 3) -> 2 keeps [up, right]; [left, up, right] shuffled (reversed) is
    [right, up, left]; gold: every option but left, A and B."""
    from grpo_core.tasks import invert_mc

    q, opts, gold = invert_mc(
        "Which way does the red shape move?", ["up", "left", "right", "down"], 1, ScriptedRng()
    )
    assert q == "Which way does the red shape not move?"
    assert opts == ["right", "up", "left"]
    assert gold == "A,B"


def test_every_question_type_has_its_negation():
    from grpo_core.errors import UserError
    from grpo_core.tasks import invert_question

    assert invert_question("How many shapes are in the video?") == (
        "Which of these is not the number of shapes in the video?"
    )
    assert invert_question("Which shape appears last?") == "Which shape does not appear last?"
    assert invert_question("Which shape changes colour?") == "Which shape does not change colour?"
    with pytest.raises(UserError, match="no inversion for the question"):
        invert_question("What colour is the sky?")


def test_default_keeps_items_and_rng_stream():
    """qa_inversion 0 (the default) gives exactly the items of a task without the param; with
    0.5 the scenes, the question types and the whole test split are the same (the inversion
    draws from its own stream), and about half the training items are inverted."""
    off, none, on = _task(qa_inversion=0.0), _task(), _task(qa_inversion=0.5)

    def rows(t):
        return [(p.id, p.question, p.answer, p.meta) for p in t.train() + t.test()]

    assert rows(off) == rows(none)
    assert [(p.id, p.question, p.answer, p.meta) for p in on.test()] == [
        (p.id, p.question, p.answer, p.meta) for p in off.test()
    ]
    for a, b in zip(off.train(), on.train()):
        assert a.meta["scene"] == b.meta["scene"] and a.meta["qtype"] == b.meta["qtype"]
        if b.meta.get("inverted"):
            # the original answer's option is kept and is the one option not in the gold set
            orig = a.meta["options"][ord(a.answer) - ord("A")]
            assert orig in b.meta["options"]
            gold = set(b.answer.split(","))
            letters = {chr(ord("A") + i) for i in range(len(b.meta["options"]))}
            assert letters - gold == {chr(ord("A") + b.meta["options"].index(orig))}
            assert 2 <= len(b.meta["options"]) <= 4 and " not " in b.question.splitlines()[0]
            assert "letters, comma-separated" in b.question
        else:
            assert (a.question, a.answer, a.meta) == (b.question, b.answer, b.meta)
    n_inv = sum(bool(p.meta.get("inverted")) for p in on.train())
    assert 15 <= n_inv <= 45  # Binomial(60, 0.5): within +-4 sd


def test_soft_credit_on_an_inverted_item():
    """An inverted item with gold "A,C": one gold letter earns 1/2 (soft), the exact grade 0;
    both (any order) 1 soft; the original answer's letter (B) 0."""
    from grpo_core.rewards import REWARDS, GroupContext
    from grpo_core.tasks import Problem

    t = _task(qa_inversion=0.5)
    p = Problem(
        "i", "q", "A,C", meta={"options": ["up", "left", "down"], "level": "L1", "inverted": True}
    )
    texts = [f"<think>left</think><answer>{a}</answer>" for a in ("A", "C,A", "B", "A,C")]
    ctx = GroupContext(
        texts=texts,
        problems=[p] * 4,
        finish_reasons=["stop"] * 4,
        lengths=[1] * 4,
        group_sizes=[4],
        max_new_tokens=8,
        task=t,
    )
    fn = REWARDS.get("correctness", "rewards")
    assert fn(ctx).tolist() == [0, 0, 0, 1]
    assert fn(ctx, choice="soft").tolist() == [0.5, 1, 0, 1]


def test_tw_grpo_enables_qai_on_tiny_video_only():
    from grpo_core.config import load_config

    assert load_config("tw_grpo", "tiny_video").task.params["qa_inversion"] == 0.5
    assert load_config("grpo", "tiny_video").task.params.get("qa_inversion", 0.0) == 0.0
    with pytest.raises(Exception, match="qa_inversion"):
        load_config("grpo", "tiny_video", ["task.params.qa_inversion=1.5"])
