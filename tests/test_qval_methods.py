"""QVal's eureka and direct-batch8-seq: their loops with a scripted model (what is asked, what is kept, who wins,
what fails), then both through the real CLI on SmolLM2."""

import json
import re

import numpy as np
import pytest
from conftest import ROOT, run_qval, write_suite
from path_plugins import expose_package

import qval.results as R
from qval.models.requests import Requests
from qval.qalign.envs.toy_text import FrozenLakeEnv
from qval.qalign.points import collect_points
from qval.qalign.scorers.base import Failed, ScorerContext, build_scorer
from qval.qalign.scorers.direct import DirectSequentialScorer
from qval.qalign.scorers.eureka import EurekaScorer


class _ChatModel:
    """Chat ids that index the conversations seen, so a scripted reply can read the whole conversation."""

    def __init__(self):
        self.seen: list[list[dict]] = []

    def chat_ids(self, messages):
        self.seen.append([dict(m) for m in messages])
        return [len(self.seen) - 1]


class Scripted(Requests):
    """A request layer whose replies come from ``reply(messages, assistant_start)``; records every request."""

    def __init__(self, reply):
        self.model, self.reply, self.asked = _ChatModel(), reply, []

    def encode(self, text):
        return [-1] if text else []  # marks an opened assistant turn (the judge's "<winner>")

    def generate(self, prompt, max_new_tokens, temperature, seed):
        messages = self.model.seen[prompt[0]]
        self.asked.append((messages, temperature))
        return self.reply(messages, "<winner>" if prompt[1:] == [-1] else "")


def _points(n):
    env = FrozenLakeEnv(FrozenLakeEnv.Params())
    points = collect_points(
        env, env.reference_q(0.95), episodes=4, epsilon=0.3, max_points_per_episode=2, max_steps=20, seed=0
    )
    assert len(points) >= n
    return env, points[:n]


def _scorer(cls, layer, env, **params):
    return build_scorer(cls, cls.Params(**params), ScorerContext(env=env, seed=0, request_layer=layer))


GOOD = "def score(observation, action, task):\n    return {'left': 0.1, 'down': 0.4, 'right': 0.9, 'up': 0.2}[action]\n"
FLAT = "def score(observation, action, task):\n    return 0.5\n"
BROKEN = "def score(observation, action, task):\n    return (\n"


def _user(messages):
    return messages[-1]["content"]


def _label_of_uncollapsed(judge_prompt):
    """The judge as a rule: the first candidate whose values did not collapse."""
    for label, body in re.findall(r"Candidate (\d+)\n(- scores.*?collapsed: \w+)", judge_prompt, re.S):
        if "collapsed: no" in body:
            return label
    return "99"


def test_eureka_search_judges_reflects_and_keeps_the_winner():
    env, points = _points(4)
    written = {1: [GOOD, BROKEN], 2: [FLAT, FLAT], 3: [FLAT, BROKEN]}

    def reply(messages, start):
        text = _user(messages)
        if start:  # the judge: round 3's reply names no shown candidate, which ends the search
            label = _label_of_uncollapsed(text)
            rnd = sum(1 for m, _ in layer.asked if _user(m).startswith("You are selecting"))
            return (
                ("7" if rnd == 3 else label)
                + "</winner><rationale>varies by action</rationale>"
                + ("<feedback>reward moving right</feedback>")
            )
        iteration = int(re.search(r"Search iteration (\d+) of 3", text).group(1))
        k = sum(1 for m, _ in layer.asked if f"Search iteration {iteration} of" in _user(m))
        return f"```python\n{written[iteration][k - 1]}```"

    layer = Scripted(reply)
    scorer = _scorer(EurekaScorer, layer, env, iterations=3, candidates=2, judge_points=3)
    assert scorer.prepare_work() == 9  # prepare may take 9 points' time limits: 3 rounds of 2 programs and a verdict
    scorer.prepare(points)
    rounds = scorer.artifacts["iterations"]
    assert [r["iteration"] for r in rounds] == [1, 2, 3]
    # round 1: the broken program is rejected and named to the judge; the judge picks the good one
    assert rounds[0]["programs"][1]["rejected"].startswith("SyntaxError")
    judge_prompts = [_user(m) for m, _ in layer.asked if _user(m).startswith("You are selecting")]
    assert len(judge_prompts) == 3 and "Rejected candidate 1: it did not load (SyntaxError" in judge_prompts[0]
    assert judge_prompts[0].count("Point ") == 3  # judge_points sampled points, each with every program's value
    assert [c["code"] for c in rounds[0]["candidates"]] == [GOOD]
    assert rounds[0]["winner"] == 1
    # round 2: the writer sees the winner's code and the judge's feedback; the incumbent competes with two flat ones
    second = [_user(m) for m, _ in layer.asked if "Search iteration 2 of 3" in _user(m)][0]
    assert GOOD.strip() in second and "reward moving right" in second and "collapsed: no" in second
    assert len(rounds[1]["candidates"]) == 3 and sum(c["incumbent"] for c in rounds[1]["candidates"]) == 1
    assert rounds[1]["candidates"][rounds[1]["winner"] - 1]["code"] == GOOD
    assert all(c["collapsed"] for c in rounds[1]["candidates"] if c["code"] == FLAT)
    # round 3: no valid verdict, so the search stops and keeps round 2's winner
    assert rounds[2]["winner"] is None and "no shown candidate (7)" in rounds[2]["stopped"]
    assert scorer.artifacts["program"] == GOOD
    # programs are sampled (the cell's T, else sample_temperature); the judge is greedy
    assert {t for m, t in layer.asked if "Search" in _user(m)} == {0.7}
    assert {t for m, t in layer.asked if _user(m).startswith("You are selecting")} == {0.0}
    scores = scorer.score_batch(points)
    expected = {"left": 0.1, "down": 0.4, "right": 0.9, "up": 0.2}
    assert scores == [[expected[c.action] for c in p.candidates] for p in points]


def test_eureka_without_a_first_winner_fails_every_candidate_with_the_reason():
    env, points = _points(2)
    no_load = Scripted(lambda messages, start: "no code here")
    scorer = _scorer(EurekaScorer, no_load, env, iterations=2, candidates=2)
    scorer.prepare(points)
    assert len(scorer.artifacts["iterations"]) == 1 and scorer.artifacts["program"] is None
    scores = scorer.score_batch(points)
    assert all(
        isinstance(s, Failed) and s.reason.startswith("eureka: no program of iteration 1 loaded")
        for p in scores
        for s in p
    )

    no_verdict = Scripted(lambda messages, start: "I like them all" if start else GOOD)
    scorer = _scorer(EurekaScorer, no_verdict, env, iterations=2, candidates=1)
    scorer.prepare(points)
    reasons = {s.reason for p in scorer.score_batch(points) for s in p}
    assert reasons == {"eureka: the judge named no valid winner in iteration 1"}
    assert scorer.artifacts["iterations"][0]["judge_reply"] == "<winner>I like them all"


def test_direct_sequential_asks_one_candidate_of_every_point_per_conversation():
    env, points = _points(3)

    def reply(messages, start):
        turn = int(re.match(r"Datapoint (\d+) of", _user(messages)).group(1)) if len(messages) > 1 else 1
        return f"My estimate: <answer>0.{turn}</answer>"

    layer = Scripted(reply)
    scorer = _scorer(DirectSequentialScorer, layer, env)
    scores = scorer.score_batch(points)
    conversations = [m for m, _ in layer.asked]
    n_candidates = max(len(p.candidates) for p in points)
    assert len(conversations) == 3 * n_candidates  # one conversation per candidate slot, three turns each
    finals = [m for m in conversations if len(m) == 6]  # system, then user/assistant, user/assistant, user
    assert len(finals) == n_candidates
    for final in finals:
        assert final[0]["role"] == "system" and "successive user turns" in final[0]["content"]
        assert [m["role"] for m in final[1:]] == ["user", "assistant", "user", "assistant", "user"]
        assert (
            final[1]["content"].startswith("Datapoint 1 of 3.\n\n") and "Keep your earlier" not in final[1]["content"]
        )
        assert final[3]["content"].startswith("Datapoint 2 of 3. Keep your earlier answers fixed")
        assert [final[2]["content"], final[4]["content"]] == ["<answer>0.1</answer>", "<answer>0.2</answer>"]
        # turn t asks point t: each point's own observation
        for t, point in enumerate(points):
            assert point.observation in final[1 + 2 * t]["content"]
    # every candidate of point t was asked exactly once, at turn t + 1
    assert scores == [[[0.1, 0.2, 0.3][t]] * len(p.candidates) for t, p in enumerate(points)]
    assert {t for _, t in layer.asked} == {0.0}  # greedy unless samples > 1
    # the candidate of each point that a conversation asks is shuffled per point: not one move throughout
    firsts = [re.search(r"Proposed action: (\w+)", f[1]["content"]).group(1) for f in finals]
    seconds = [re.search(r"Proposed action: (\w+)", f[3]["content"]).group(1) for f in finals]
    assert sorted(firsts) == sorted(c.action for c in points[0].candidates) and firsts != seconds


def test_direct_sequential_reply_without_a_number_ends_its_conversation():
    env, points = _points(3)

    def reply(messages, start):
        return "I am not sure." if _user(messages).startswith("Datapoint 2") else "<answer>0.5</answer>"

    scorer = _scorer(DirectSequentialScorer, Scripted(reply), env, points_per_conversation=8)
    scores = scorer.score_batch(points)
    assert scores[0] == [0.5] * len(points[0].candidates)
    assert all(isinstance(s, Failed) and s.reason.startswith("no number in the reply") for s in scores[1])
    assert {s.reason for s in scores[2]} == {
        "not asked: turn 2 of its conversation had no number, which ends it (as QVal)"
    }
    # a conversation of one point is direct's plain prompt; samples: k holds k conversations and averages
    replies = iter(["<answer>0.2</answer>", "<answer>0.6</answer>"] * 8)
    layer = Scripted(lambda messages, start: next(replies))
    scorer = _scorer(DirectSequentialScorer, layer, env, samples=2, points_per_conversation=1)
    assert scorer.score_batch(points[:1]) == [[pytest.approx(0.4)] * len(points[0].candidates)]
    assert all(len(m) == 1 and m[0]["content"].startswith(points[0].task) for m, _ in layer.asked)
    assert {t for _, t in layer.asked} == {0.7}


SUITE = """\
name: methods
seeds: [0]
models: [smollm2-135m-instruct]
qalign:
  envs: [{name: frozenlake, params: {map: 4x4}}]
  methods:
    - {name: eureka, params: {iterations: 1, candidates: 1, max_new_tokens: 128, judge_max_new_tokens: 16}}
    - {name: direct-batch8-seq, params: {max_new_tokens: 16}}
  points: {episodes: 1, max_points_per_episode: 2}
"""


@pytest.mark.slow
def test_eureka_and_direct_sequential_run_on_smollm_through_the_cli(tmp_path):
    env = expose_package(tmp_path / "site", ROOT)  # the entry points of this checkout, as `pip install -e .` gives
    suite = write_suite(tmp_path / "s.yaml", SUITE)
    proc = run_qval("run", suite, "--results", tmp_path / "r", env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = R.cells(tmp_path / "r").set_index("method")["cell_id"].to_dict()

    seq = R.cell_samples(cells["direct-batch8-seq"], tmp_path / "r")
    assert seq["sample_id"].nunique() == 2 and len(seq) == 8
    assert all((s is not None and np.isfinite(s)) != (e is not None) for s, e in zip(seq["score"], seq["error"]))
    requests = [q for r in seq["requests"] if isinstance(r, list | np.ndarray) for q in r]
    assert len(requests) >= 4  # four conversations (one per candidate slot), one or two turns each
    assert all("Datapoint 1 of 2." in q["prompt"] for q in requests)
    for q in requests:
        if "Datapoint 2 of 2." in q["prompt"]:  # the first answer is kept, bare, and the model told to keep it
            assert "<answer>" in q["prompt"] and "Keep your earlier answers fixed" in q["prompt"]

    artifacts = json.loads((tmp_path / "r" / "parts" / cells["eureka"] / "artifacts.json").read_text())
    (only,) = artifacts["iterations"]
    assert len(only["programs"]) == 1
    eureka = R.cell_samples(cells["eureka"], tmp_path / "r")
    if artifacts["program"] is None:  # SmolLM2 may write no loadable program, or no verdict: then every one fails
        assert all(e.startswith("eureka: ") for e in eureka["error"])
    else:
        assert only["candidates"][only["winner"] - 1]["code"] == artifacts["program"]
    data = json.loads(run_qval("samples", cells["eureka"], "--results", tmp_path / "r", "--json", env=env).stdout)
    asked = [q["prompt"] for q in data["prepare_requests"]]
    assert sum("Search iteration 1 of 1" in p for p in asked) == 1  # the program was written once, in prepare
