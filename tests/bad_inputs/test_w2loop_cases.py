"""Bad inputs of urpo and training_free_grpo: params out of range or unknown, a malformed
experience.json next to a checkpoint (read by evaluation), the policy summariser without a
model, a referee round outside a single-turn env, a non-boolean train.optimize, and groups that
give the referee or the library nothing (the scored outcome, no error)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from grpo_core.config import load_config
from grpo_core.errors import UserError
from grpo_core.samplers import EXPERIENCE_FILE, make_sampler, read_experience_prefix
from grpo_core.schema import SamplerCfg
from grpo_core.tasks import Problem


def test_params_out_of_range_or_unknown_name_the_key():
    with pytest.raises(UserError, match="frac"):
        load_config("urpo", "tiny", ['sampler.params={"frac": 0}'])
    with pytest.raises(UserError, match="group_size"):
        load_config("urpo", "tiny", ['sampler.params={"group_size": 1}'])
    with pytest.raises(UserError, match="summariser"):
        load_config("training_free_grpo", "tiny", ['sampler.params={"summariser": "gpt4"}'])
    with pytest.raises(UserError, match="did you mean 'max_items'"):
        load_config("training_free_grpo", "tiny", ['sampler.params={"max_item": 3}'])
    with pytest.raises(UserError, match="train.optimize"):
        load_config("training_free_grpo", "tiny", ["train.optimize=maybe"])


def test_malformed_experience_file_is_one_line_with_what_to_do(tmp_path):
    assert read_experience_prefix(tmp_path) is None  # none: no prefix
    f = tmp_path / EXPERIENCE_FILE
    f.write_text("{not json")
    with pytest.raises(UserError, match="not an experience library.*delete it or rerun") as e:
        read_experience_prefix(tmp_path)
    assert "\n" not in str(e.value) and EXPERIENCE_FILE in str(e.value)
    f.write_text(json.dumps({"experiences": {}}))  # no prefix key
    with pytest.raises(UserError, match="'prefix' string"):
        read_experience_prefix(tmp_path)
    f.write_text(json.dumps({"prefix": 3}))
    with pytest.raises(UserError, match="'prefix' must be a string or null, got int"):
        read_experience_prefix(tmp_path)
    f.write_text(json.dumps({"prefix": None, "experiences": {}}))  # an empty library
    assert read_experience_prefix(tmp_path) is None


def test_policy_summariser_without_a_model_is_refused():
    s = make_sampler(SamplerCfg(name="experience", params={"summariser": "policy"}), 10, 0)
    g = {"question": "1+1", "gold": "2", "better": "2", "worse": "3", "worse_pred": "3"}
    with pytest.raises(UserError, match="summariser: policy needs the trainer's generate"):
        s.summarise([g])
    assert s.summarise([]) == []  # nothing to summarise: no model needed


def test_referee_round_outside_single_turn_is_refused():
    from grpo_core.trainer import Trainer

    fake = SimpleNamespace(
        cfg=SimpleNamespace(env=SimpleNamespace(name="tools"), sampler=SimpleNamespace(name="urpo"))
    )
    with pytest.raises(UserError, match="referee rounds need env single_turn, got 'tools'"):
        Trainer._referee_round(fake, None, 0, {})


def test_groups_that_teach_nothing():
    # all rewards equal: the library learns nothing and stays empty (no prefix)
    s = make_sampler(SamplerCfg(name="experience"), 10, 0)
    p = Problem("a", "q", "83", {"expression": "45+38"})
    logs = s.update(
        {
            "problems": [p] * 2,
            "rewards": torch.tensor([0.0, 0.0]),
            "texts": ["", "x"],
            "group_sizes": [2],
        }
    )
    assert logs["n_learn_groups"] == 0 and logs["library_size"] == 0 and s.prefix_text() is None
    # the worst rollout wrote no number: a format lesson
    logs = s.update(
        {
            "problems": [p] * 2,
            "rewards": torch.tensor([1.0, 0.0]),
            "texts": ["83", "x"],
            "group_sizes": [2],
        }
    )
    assert logs["n_add"] == 1 and s.library["G0"]["key"] == "format"
    # a referee prompt needs a wrong candidate: none from a non-integer gold
    u = make_sampler(SamplerCfg(name="urpo"), 10, 0)
    assert u.referee_pair("2/3", [None], [False], 0, 0) is None


def test_referee_frac_out_of_range_and_rows_without_an_integer_answer():
    with pytest.raises(UserError, match="sft.referee_frac"):
        load_config("urpo", "tiny_urpo", ["sft.referee_frac=1.5"])
    # a problem whose answer is not an integer has no distractor: no referee row (no error)
    from grpo_core.models import build_char_tokenizer
    from grpo_core.prepare import referee_rows

    cfg = load_config("urpo", "smoke", ["sft.referee_frac=1.0"])
    train = [
        Problem("a", "", "1/2", {"expression": "1/2"}),
        Problem("b", "", "3", {"expression": "1+2"}),
    ]
    task = SimpleNamespace(sft_target=lambda p: p.answer)
    rows = referee_rows(cfg, task, train, build_char_tokenizer())
    assert len(rows) == 1
