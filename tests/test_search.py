"""Task search_qa (the generated corpus), env search (Search-R1's protocol over BM25), the rewards
e_grpo and r1_router on hand-computed contexts, agent metrics with searches, multi-turn SFT on
gold conversations, and smoke trainings of the tiny_search profile's reproductions."""

from __future__ import annotations

import json
import math

import pytest
import torch

from grpo_core.episodes import ENVS, Episodes, SearchEnv, chat_ids, run_episodes
from grpo_core.errors import UserError
from grpo_core.models import build_char_tokenizer
from grpo_core.rewards import REWARDS, GroupContext, entity_match_rate, token_f1
from grpo_core.rollout import RolloutEngine, Rollouts, SamplingParams, left_pad
from grpo_core.tasks import Problem, SearchQA, em_normalise, exact_match, last_answer


@pytest.fixture(scope="module")
def task():
    return SearchQA(200, 32, 0, {}, None, {})


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def _env(task, **params):
    return SearchEnv(task, "search", ENVS.resolve_params("search", params, "env.params"))


# ------------------------------------------------------------------------------------ corpus


def test_corpus_is_seeded_small_and_consistent(task):
    c = task.corpus()
    # 40 people + 12 companies + 8 cities + 3 countries, one document each
    assert len(c.docs) == 63 and c.kbs == ("people", "companies", "places")
    assert [d.kb for d in c.docs].count("people") == 40
    # questions: 5 per person (2 one-hop, 3 two-hop), 2 per company, 1 per city
    assert len(task._questions) == 40 * 5 + 12 * 2 + 8
    again = SearchQA(200, 32, 0, {}, None, {})
    assert [p.id for p in again.train()] == [p.id for p in task.train()]
    assert [d.text for d in again.corpus().docs] == [d.text for d in c.docs]
    other = SearchQA(200, 32, 1, {}, None, {})
    assert [d.text for d in other.corpus().docs] != [d.text for d in c.docs]
    train, test = task.train(), task.test()
    assert len(train) == 200 and len(test) == 32
    assert not {p.id for p in train} & {p.id for p in test}
    names = [d.title for d in c.docs]
    assert len(set(names)) == len(names) and all(len(n) == 4 for n in names)
    for p in train + test:
        sup = p.meta["support"]
        assert p.meta["hops"] == len(sup) and p.meta["entities"] == sup
        assert p.meta["support_kbs"] == [c.doc_of(s).kb for s in sup]
        assert sup[0] in p.question
        # the chain holds: each next support entity is named in the previous one's document,
        # and the answer in the last one's
        for a, b in zip(sup, sup[1:]):
            assert f" {b}." in c.doc_of(a).text
        assert f" {p.answer}." in c.doc_of(sup[-1]).text
    assert {p.meta["hops"] for p in train} == {1, 2}


def test_corpus_params_and_too_many_questions():
    small = SearchQA(5, 2, 0, {}, None, {"people": 2, "companies": 1, "cities": 1, "max_hops": 1})
    # 2 people x 2 + 1 company x 2 + 1 city x 1 = 7 one-hop questions
    assert len(small.train()) == 5 and len(small.test()) == 2
    assert all(p.meta["hops"] == 1 for p in small.train() + small.test())
    with pytest.raises(UserError, match=r"task.n_train \+ task.n_test = 8: .* 7 questions"):
        SearchQA(
            6, 2, 0, {}, None, {"people": 2, "companies": 1, "cities": 1, "max_hops": 1}
        ).train()


def test_exact_match_normalises_as_search_r1():
    # lower case, punctuation and articles dropped, white space collapsed
    assert em_normalise("  The  Bako, Inc. ") == "bako inc"
    assert exact_match("the bako!", ["Bako"]) == 1.0
    assert exact_match("bakos", ["bako"]) == 0.0 and exact_match(None, ["bako"]) == 0.0
    assert exact_match("an 1987", ["1987"]) == 1.0
    assert last_answer("<answer>a</answer> x <answer> b </answer>") == "b"
    assert last_answer("no tag") is None
    t = SearchQA(200, 32, 0, {}, None, {})
    p = Problem("x", "q", "bako")
    g = t.grade_texts(["<answer>The Bako</answer>", "bako", "<answer>tilu</answer>"], [p] * 3)
    assert [(x.score, x.pred, x.reason) for x in g] == [
        (1.0, "The Bako", "match"),
        (0.0, None, "no_answer"),
        (0.0, "tilu", "mismatch"),
    ]


# ------------------------------------------------------------------------------------ retrieval


def test_bm25_ranks_the_named_entity_first_and_respects_the_kb(task):
    from grpo_core import search

    c = task.corpus()
    person = c.docs[0]  # liro (seed 0): "liro is a person. liro was born in mofu. ..."
    assert search.retrieve(c, person.title, None, 3)[0] == person.id
    # the name only occurs in its own document and in the documents that mention it
    hits = search.retrieve(c, person.title, None, 10)
    assert all(person.title in c.docs[i].text for i in hits)
    # routed: only that kb's documents
    city = person.text.split("born in ")[1].split(".")[0]
    in_places = search.retrieve(c, city, "places", 5)
    assert c.docs[in_places[0]].title == city
    assert all(c.docs[i].kb == "places" for i in in_places)
    in_people = search.retrieve(c, city, "people", 50)
    assert in_people and all(c.docs[i].kb == "people" for i in in_people)
    assert search.retrieve(c, "qqqq zzzz", None, 3) == []
    assert search.retrieve(c, "!!", None, 3) == []  # no word at all
    # fixed results: the same query twice
    assert search.retrieve(c, "person born", None, 3) == search.retrieve(c, "person born", None, 3)
    assert search.information(c, []) == "<information>No documents match the query.</information>"
    assert search.information(c, [person.id]) == f"<information>Doc 1: {person.text}</information>"


# ------------------------------------------------------------------------------------ env


def test_gold_episode_by_hand(task):
    c = task.corpus()
    p = next(q for q in task.train() if q.meta["kind"] == "works_located")
    x, co = p.meta["support"]
    env = _env(task, top_k=1)
    first = env.reset(p, 0).messages
    assert first == [
        {
            "role": "user",
            "content": 'Answer the question. Search with <search>query</search> or <search kb="name">'
            "query</search> (kbs: people, companies, places); answer with <answer>text</answer>."
            f"\nQuestion: Where is the company {x} works for located?",
        }
    ]
    gold = env.gold_actions(p)
    assert gold == [
        f'<search kb="people">{x}</search>',
        f'<search kb="companies">{co}</search>',
        f"<answer>{p.answer}</answer>",
    ]
    r1 = env.step(gold[0])
    assert r1.observation.messages[0]["content"] == (
        f"<information>Doc 1: {c.doc_of(x).text}</information>"
    )
    assert (r1.reward, r1.done, r1.info["searches"], r1.info["success"]) == (0.0, False, 1, False)
    r2 = env.step(gold[1])
    assert r2.observation.messages[0]["content"] == (
        f"<information>Doc 1: {c.doc_of(co).text}</information>"
    )
    r3 = env.step(gold[2])
    assert (r3.observation, r3.reward, r3.done) == (None, 1.0, True)
    assert r3.info == {
        "success": True,
        "em": 1.0,
        "searches": 2,
        "bad_actions": 0,
        "steps": 3,
        "queries": [["people", x], ["companies", co]],
        "trace": [["search", "people", x], ["search", "companies", co], ["answer", None, p.answer]],
        "answer": p.answer,
    }
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(gold[2])
    # unrouted gold, a wrong answer, text around the tag
    env = _env(task, gold_route=False)
    env.reset(p, 0)
    assert env.gold_actions(p)[0] == f"<search>{x}</search>"
    r = env.step(f"I think <search>{x}</search> then more")
    assert r.info["queries"] == [[None, x]]
    r = env.step("<answer>nowhere</answer> <search>x</search>")  # the first tag is the action
    assert (r.reward, r.done, r.info["success"], r.info["answer"]) == (0.0, True, False, "nowhere")


def test_search_limit_and_bad_actions_count_as_steps(task):
    p = task.train()[0]
    env = _env(task, max_searches=1)
    env.reset(p, 0)
    env.step("<search>a b</search>")
    r = env.step("<search>again</search>")
    assert r.observation.messages[0]["content"].startswith(
        "Invalid action: search limit reached (1 searches); answer now."
    )
    r = env.step("nothing")
    assert (r.done, r.reward) == (False, 0.0)
    assert (r.info["steps"], r.info["searches"], r.info["bad_actions"]) == (3, 1, 2)
    assert [t[0] for t in r.info["trace"]] == ["search", "bad", "bad"]


def test_env_search_needs_the_search_task(tok):
    from grpo_core.tasks import GuessNumber

    g = GuessNumber(3, 1, 0, {}, None, {"lo": 1, "hi": 9})
    env = SearchEnv(g, "plain", ENVS.resolve_params("search", {}, "env.params"))
    with pytest.raises(UserError, match="env search: problem guess-0 .* use it with task.name: "):
        env.reset(g.train()[0], 0)


# ------------------------------------------------------------------------------------ rewards


def _ctx(problems, infos, turn_texts, sizes):
    return GroupContext(
        texts=[ts[-1] if ts else "" for ts in turn_texts],
        problems=problems,
        finish_reasons=["stop"] * len(problems),
        lengths=[1] * len(problems),
        group_sizes=sizes,
        max_new_tokens=8,
        task=None,
        episodes=Episodes(
            [[None] * len(ts) for ts in turn_texts],
            [len(ts) for ts in turn_texts],
            infos,
            turn_texts,
            ["done"] * len(turn_texts),
        ),
    )


P2 = Problem("p2", "q", "pige", {"entities": ["voro", "rapo"]})
P3 = Problem("p3", "q", "zozi", {"entities": ["liro", "mudo"]})


def test_e_grpo_reward_by_hand():
    # group 1 (entities voro, rapo): r0 right -> 1; r1 wrong, names voro (gamma 0.5), group max
    # gamma 1 (r0 and r2 name both) -> 0.3 * 0.5 / 1 = 0.15; r2 never answered -> 0.
    # group 2 (liro, mudo): r3 wrong, names liro (0.5); r4 wrong, "liros mudoo" are not the
    # names (0); group max 0.5 -> r3: 0.3 * 0.5 / 0.5 = 0.3, r4: 0.
    problems = [P2, P2, P2, P3, P3]
    infos = [
        {"success": True, "answer": "pige"},
        {"success": False, "answer": "tilu"},
        {"success": False, "answer": None},
        {"success": False, "answer": "x"},
        {"success": False, "answer": "y"},
    ]
    texts = [
        ["<search>voro</search>", "<search>Rapo</search>", "<answer>pige</answer>"],
        ["<search>voro</search>", "<answer>tilu</answer>"],
        ["<search>voro rapo</search>"],
        ["<search>liro</search>", "<answer>x</answer>"],
        ["<search>liros mudoo</search>", "<answer>y</answer>"],
    ]
    fn = REWARDS.get("e_grpo")
    r, logs = fn(_ctx(problems, infos, texts, [3, 2]), alpha=0.3, normalise=True)
    assert torch.allclose(r, torch.tensor([1.0, 0.15, 0.0, 0.3, 0.0]))
    # gammas 1, 0.5, 1, 0.5, 0 -> mean 0.6; partial rewards on r1 and r3
    assert logs == pytest.approx({"match_rate": 0.6, "partial": 0.4})
    r, _ = fn(_ctx(problems, infos, texts, [3, 2]), alpha=0.3, normalise=False)
    assert torch.allclose(r, torch.tensor([1.0, 0.15, 0.0, 0.15, 0.0]))
    assert entity_match_rate("x", []) == 0.0


def test_e_grpo_without_episodes_uses_the_task_grade():
    # single-turn: right by the task's grade (search_qa: EM of the last <answer>), gamma from
    # the completion itself: "voro ... <answer>tilu</answer>" wrong, gamma 0.5 (the group's max)
    # -> 0.3; "<answer>pige</answer>" right -> 1; "voro" without an answer -> 0
    t = SearchQA(200, 32, 0, {}, None, {})
    ctx = GroupContext(
        texts=["voro <answer>tilu</answer>", "<answer>pige</answer>", "voro"],
        problems=[P2] * 3,
        finish_reasons=["stop"] * 3,
        lengths=[1] * 3,
        group_sizes=[3],
        max_new_tokens=8,
        task=t,
    )
    r, _ = REWARDS.get("e_grpo")(ctx, alpha=0.3, normalise=True)
    assert torch.allclose(r, torch.tensor([0.3, 1.0, 0.0]))


def test_r1_router_reward_by_hand():
    pa = Problem(
        "a", "q", "pige", {"support": ["voro", "rapo"], "support_kbs": ["people", "places"]}
    )
    pb = Problem("b", "q", "mofu", {"support": ["liro"], "support_kbs": ["people"]})
    infos = [
        # gold: two routed searches (0.5 * 1 + 0.5 * 1 each), EM 1 -> mean(1, 1, 1) = 1
        {
            "em": 1.0,
            "trace": [
                ["search", "people", "voro"],
                ["search", "places", "rapo"],
                ["answer", None, "pige"],
            ],
        },
        # "where was voro born" vs "voro": P 1/4, R 1, F1 0.4; no kb -> 0.5 * 0.4 = 0.2; a bad
        # action -> 0; "rapo" in people (gold places): 0.5 * 1 + 0 = 0.5; EM 0
        # -> mean(0.2, 0, 0.5, 0) = 0.175
        {
            "em": 0.0,
            "trace": [
                ["search", None, "where was voro born"],
                ["bad", None, "empty query"],
                ["search", "people", "rapo"],
                ["answer", None, "tilu"],
            ],
        },
        # 1-hop: the gold search (1), a second search past the chain (0), never answered (one
        # answer step of 0) -> 1 / 3
        {"em": 0.0, "trace": [["search", "people", "liro"], ["search", "people", "liro"]]},
    ]
    ctx = _ctx([pa, pa, pb], infos, [["x"]] * 3, [2, 1])
    r, logs = REWARDS.get("r1_router")(ctx, w_query=0.5, w_kb=0.5)
    assert torch.allclose(r, torch.tensor([1.0, 0.175, 1.0 / 3.0]))
    # query F1 over the hop steps: 1, 1, 0.4, 1, 1 -> 0.88; kb right: 1, 1, 0, 0, 1 -> 0.6;
    # answers: 1, 0, 0 -> 1/3
    assert logs == pytest.approx({"query_sim": 0.88, "kb_acc": 0.6, "answer_em": 1.0 / 3.0})
    assert token_f1("where was voro born", "voro") == pytest.approx(0.4)
    assert token_f1("", "voro") == 0.0
    # weights: only the kb counts
    r, _ = REWARDS.get("r1_router")(ctx, w_query=0.0, w_kb=1.0)
    # row 1: (0 + 0 + 0 + 0) / 4; row 2: (1 + 0 + 0) / 3
    assert torch.allclose(r, torch.tensor([1.0, 0.0, 1.0 / 3.0]))


def test_r1_router_single_turn_is_the_task_grade():
    t = SearchQA(200, 32, 0, {}, None, {})
    ctx = GroupContext(
        texts=["<answer>pige</answer>", "<answer>tilu</answer>"],
        problems=[P2, P2],
        finish_reasons=["stop"] * 2,
        lengths=[1, 1],
        group_sizes=[2],
        max_new_tokens=8,
        task=t,
    )
    r, logs = REWARDS.get("r1_router")(ctx, w_query=0.5, w_kb=0.5)
    assert r.tolist() == [1.0, 0.0] and logs["answer_em"] == 0.5


# ------------------------------------------------------------------------------------ episodes


class GoldEngine(RolloutEngine):
    """Plays each episode's gold actions, turn by turn (the turn is the number of policy turns
    already in the trajectory); where ``wrong(question)`` the searches go unrouted and the
    answer is wrong. Finds the problem by the question line of the prompt."""

    def __init__(self, tok, task, wrong=lambda j: False):
        self.tok, self.task, self.wrong = tok, task, wrong
        self.by_q = {p.question: p for p in task.train() + task.test()}
        self.env = _env(task)

    def sync_weights(self, model):
        pass

    def generate(self, prompts, params):
        texts = []
        for ids in prompts:
            # after the question: the policy's earlier actions and the observations
            text = self.tok.decode(ids, skip_special_tokens=True).split("Question: ", 1)[1]
            p = self.by_q[next(k for k in self.by_q if text.startswith(k))]
            t = text.count("<information>") + text.count("Invalid action")
            unrouted = "<search>" in text
            gold = self.env.gold_actions(p)
            if t == 0:
                unrouted = self.wrong(len(texts))
            if unrouted:
                gold = [g.replace(f' kb="{k}"', "") for g, k in zip(gold, p.meta["support_kbs"])]
                gold.append("<answer>zzzz</answer>")
            texts.append(gold[t])
        eos = self.tok.eos_token_id
        rows = [self.tok.encode(t, add_special_tokens=False) + [eos] for t in texts]
        w = max(len(r) for r in rows)
        c_ids = torch.full((len(rows), w), self.tok.pad_token_id, dtype=torch.long)
        c_mask = torch.zeros((len(rows), w), dtype=torch.long)
        for i, r in enumerate(rows):
            c_ids[i, : len(r)] = torch.tensor(r)
            c_mask[i, : len(r)] = 1
        p_ids, p_mask = left_pad(prompts, self.tok.pad_token_id)
        return Rollouts(p_ids, p_mask, c_ids, c_mask, ["stop"] * len(rows), texts)


def test_gold_conversation_matches_the_runner(task, tok):
    from grpo_core.prepare import gold_conversation

    p = next(q for q in task.train() if q.meta["hops"] == 2)
    prompt, comp, labels = gold_conversation(_env(task), p, 0, tok, max_turns=4)
    # the runner driven by an engine that emits the same actions builds the same trajectory
    env = _env(task)
    first = chat_ids(tok, env.reset(p, 0).messages)
    assert first == prompt
    ro, ep = run_episodes(
        [env], [p], [0], [first], GoldEngine(tok, task), tok, SamplingParams(max_new_tokens=48),
        max_turns=4,
    )  # fmt: skip
    m = int(ro.completion_mask[0].sum())
    assert ro.completion_ids[0, :m].tolist() == comp
    # labels: the policy's tokens, -100 on the observations (the loss mask's zeros)
    lm = ro.loss_mask[0, :m].tolist()
    assert [x != -100 for x in labels] == [bool(v) for v in lm]
    assert ep.end_reasons == ["done"] and ep.n_turns == [3] and ep.success() == [True]
    assert ep.infos[0]["searches"] == 2 and ro.turn_ids[0, :m].max().item() == 2


def test_agent_metrics_count_searches(task, tok):
    from evals.agent import agent_metrics

    ps = [p for p in task.train() if p.meta["hops"] == 2][:2] + [
        p for p in task.train() if p.meta["hops"] == 1
    ][:1]
    envs = [_env(task) for _ in ps]
    firsts = [chat_ids(tok, e.reset(p, 0).messages) for e, p in zip(envs, ps)]
    eng = GoldEngine(tok, task, wrong=lambda j: j == 1)
    _, ep = run_episodes(envs, ps, [0] * 3, firsts, eng, tok, SamplingParams(), max_turns=4)
    m = agent_metrics(ep)["metrics"]
    # 2 + 2 + 1 searches; episode 1 answered wrong
    assert m["searches_mean"] == pytest.approx(5 / 3)
    assert m["success_rate"] == pytest.approx(2 / 3) and m["steps_mean"] == pytest.approx(8 / 3)


# ------------------------------------------------------------------------------------ profile, smoke


def test_tiny_search_profile_resolves():
    from grpo_core.config import list_reproductions, load_config

    for repro in list_reproductions():
        load_config(repro, "tiny_search", [])
    cfg = load_config("grpo", "tiny_search", [])
    assert (cfg.task.name, cfg.env.name, cfg.task.template) == ("search_qa", "search", "search")
    assert [r.name for r in cfg.rewards] == ["env"]
    assert cfg.workflow.reproductions == ["grpo", "rloo", "e_grpo", "r1_router", "llds"]
    assert cfg.workflow.seeded_start and cfg.model.name_or_path == "tiny" and cfg.sft.steps > 0
    # the longest gold action fits in the tokenizer fitted to the train conversations (a
    # routed search of a name, or the answer) + EOS
    from grpo_core.models import build_bpe_tokenizer
    from grpo_core.prepare import multi_turn_rows, tokenizer_corpus
    from grpo_core.tasks import make_task

    assert cfg.model.tiny.tokenizer == "bpe"
    tok = build_bpe_tokenizer(tokenizer_corpus(cfg), cfg.model.tiny.vocab_size)
    task = make_task(cfg.task)
    longest = 0
    for _, _, labels in multi_turn_rows(cfg, task, task.train(), tok):
        run = 0
        for x in labels:
            run = run + 1 if x != -100 else 0
            longest = max(longest, run)
    assert 5 <= longest <= cfg.rollout.max_new_tokens  # the action's tokens and its EOS
    assert cfg.env.max_tokens <= cfg.model.tiny.max_position_embeddings
    assert [r.name for r in load_config("e_grpo", "tiny_search", []).rewards] == ["e_grpo"]
    assert [r.name for r in load_config("r1_router", "tiny_search", []).rewards] == ["r1_router"]


SHRINK = [
    "run.threads=1",
    "workflow.seeded_start=false",
    "model.tiny={hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2, "
    "num_kv_heads: 2, max_position_embeddings: 1024}",
    "env.max_tokens=1024",
    "task.n_train=16",
    "task.n_test=4",
    "sft.steps=2",
    "sft.batch_size=4",
    "train.steps=2",
    "rollout.group_size=2",
    "rollout.prompts_per_step=2",
    "train.micro_batch_size=8",
]


@pytest.fixture(scope="module")
def search_results(prepared_start):
    """The shrunken tiny_search start (built, 2 SFT steps on gold conversations)."""
    return prepared_start("tiny_search", SHRINK)


@pytest.mark.parametrize("repro", ["e_grpo", "r1_router"])
def test_smoke_training(search_results, repro, tmp_path):
    from grpo_core.config import load_config
    from grpo_core.trainer import Trainer

    cfg = load_config(repro, "tiny_search", [f"run.results_dir={search_results}", *SHRINK])
    Trainer(cfg, tmp_path / "run").train(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["reward_mean"])
        assert f"reward/{repro}" in r


def test_trainer_hands_the_episodes_to_the_rewards(search_results, tmp_path, monkeypatch):
    """Through the trainer with an engine that plays gold episodes (the second of each group
    unrouted with a wrong answer): the rewards see the episodes' infos and turn texts."""
    from grpo_core import trainer as T
    from grpo_core.config import load_config

    seen = []
    orig = T.compute_rewards

    def spy(terms, ctx):
        out = orig(terms, ctx)
        seen.append((ctx, out[0]))
        return out

    monkeypatch.setattr(T, "compute_rewards", spy)
    for repro in ("grpo", "e_grpo", "r1_router"):
        cfg = load_config(
            repro, "tiny_search", [f"run.results_dir={search_results}", *SHRINK, "train.steps=1"]
        )
        tr = T.Trainer(cfg, tmp_path / repro)
        tr.engine = GoldEngine(tr.tok, tr.task, wrong=lambda j: j % 2 == 1)
        tr.train(progress=False)
    (g_ctx, g_r), (e_ctx, e_r), (r_ctx, r_r) = seen
    hops = [p.meta["hops"] for p in g_ctx.problems]
    assert g_r.tolist() == [1.0, 0.0, 1.0, 0.0]  # EM
    # the wrong row named every gold entity (gamma 1 = the group's max): 0.3
    assert torch.allclose(e_r, torch.tensor([1.0, 0.3, 1.0, 0.3]))
    # wrong rows: unrouted searches 0.5 each, answer 0: 2-hop 1/3, 1-hop 1/4
    want = [
        x for h in [p.meta["hops"] for p in r_ctx.problems[::2]] for x in (1.0, h * 0.5 / (h + 1))
    ]
    assert torch.allclose(r_r, torch.tensor(want))
    assert len(g_ctx.turn_texts[0]) == hops[0] + 1 and g_ctx.infos[0]["success"]
