"""Samples a researcher can read: `qval samples` (text, --json, --limit, unknown cells), the stored transcripts of
an LLM scorer and the text of decoding turns, and the report's drill-down pages (one per leaderboard row, hostile
model text escaped)."""

import json
import re
import shutil

import duckdb
import numpy as np
import pytest
from conftest import PLUGINS, run_qval, write_suite
from path_plugins import expose_package

import qval.results as R
from qval.models.packaged import SmolLM2Instruct
from qval.report.drilldown import write_pages
from qval.report.links import cell_page, page_file
from qval.store.db import connect_writer

XSS = "<script>alert('xss')</script>"


@pytest.fixture(scope="module")
def model_free(tmp_path_factory):
    """A model-free run: oracle-q; the example plugin's echo scorer, whose every candidate fails quoting a hostile
    reply; and its transcript scorer, which "asks the model" in prepare() and scores two points per call."""
    root = tmp_path_factory.mktemp("samples")
    env = expose_package(root / "site", PLUGINS / "qval-example-plugin")  # seen by every qval process of the run
    suite = write_suite(
        root / "s.yaml",
        f"""\
        name: seen
        models: [smollm2-135m-instruct]
        qalign:
          envs: [{{name: frozenlake, params: {{map: 4x4}}}}]
          methods: [oracle-q, {{name: example-echo, params: {{reply: "{XSS}"}}}}, example-transcript]
          points: {{episodes: 2, max_points_per_episode: 2}}
        """,
    )
    proc = run_qval("run", suite, "--results", root / "r", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_qval("report", "--results", root / "r", "--out", root / "rep", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = R.cells(root / "r").set_index("method")["cell_id"].to_dict()
    return root, cells


def test_samples_text_json_and_limit(model_free):
    root, cells = model_free
    oracle = cells["oracle-q"]
    proc = run_qval("samples", oracle[:6], "--results", root / "r")
    assert proc.returncode == 0, proc.stderr
    states = R.cell_samples(oracle, root / "r")
    assert proc.stdout.count("── sample ") == states["sample_id"].nunique() > 0
    assert f"cell {oracle}" in proc.stdout and "rank disagreement 0" in proc.stdout  # oracle ranks as Q does
    for action in states["action"]:
        assert action in proc.stdout
    data = json.loads(run_qval("samples", oracle, "--results", root / "r", "--json").stdout)
    assert data["cell"]["cell_id"] == oracle and data["cell"]["method"] == "oracle-q"
    assert len(data["samples"]) == len(states)
    assert {"sample_id", "candidate", "action", "score", "ref_q", "error", "requests"} <= set(data["samples"][0])
    assert all(s["requests"] is None for s in data["samples"])  # oracle-q asks no model
    assert data["prepare_requests"] == [] and "while preparing" not in proc.stdout
    limited = json.loads(run_qval("samples", oracle, "--results", root / "r", "--json", "--limit", "1").stdout)
    assert len({s["sample_id"] for s in limited["samples"]}) == 1
    assert "1 of " in run_qval("samples", oracle, "--results", root / "r", "--limit", "1").stdout


def test_failed_parse_is_shown_as_text(model_free):
    root, cells = model_free
    proc = run_qval("samples", cells["example-echo"], "--results", root / "r")
    assert proc.returncode == 0 and f"error: no number in the reply {XSS!r}" in proc.stdout


def test_prepare_requests_are_stored_once_per_cell(model_free):
    """codegen asks the model in prepare(), before any point: those requests are the cell's, shown at the top."""
    root, cells = model_free
    cell = cells["example-transcript"]
    n = R.cell_samples(cell, root / "r")["sample_id"].nunique()
    assert n >= 3  # two batches of points, one of them full
    data = json.loads(run_qval("samples", cell, "--results", root / "r", "--json").stdout)
    assert [q["prompt"] for q in data["prepare_requests"]] == [f"write a scorer for {n} points"]
    assert data["prepare_requests"][0]["reply"] == "def score" and data["prepare_requests"][0]["kind"] == "generate"
    prompts = [q["prompt"] for s in data["samples"] for q in s["requests"] or []]
    assert not any("write a scorer" in p for p in prompts)  # in no sample's transcript
    text = run_qval("samples", cell, "--results", root / "r", "--limit", "1").stdout
    assert "── requests made while preparing the cell (once, before any point): 1" in text
    assert f"prompt │ write a scorer for {n} points" in text and text.index("preparing") < text.index("── sample")
    page = (root / "rep" / "seen" / cell_page(cell)).read_text()
    assert "Requests made while preparing the cell" in page and f"write a scorer for {n} points" in page
    oracle = (root / "rep" / "seen" / cell_page(cells["oracle-q"])).read_text()
    assert "while preparing the cell" not in oracle


def test_unreadable_prepare_requests_warn_and_keep_the_cell(model_free, tmp_path):
    root, cells = model_free
    cell = cells["example-transcript"]
    shutil.copytree(root / "r", tmp_path / "r")
    (tmp_path / "r" / "parts" / cell / "prepare-requests.parquet").write_bytes(b"not parquet")
    proc = run_qval("ingest", "--results", tmp_path / "r")
    assert proc.returncode == 0 and "warning: skipped unreadable" in proc.stderr and "prepare-requests" in proc.stderr
    data = json.loads(run_qval("samples", cell, "--results", tmp_path / "r", "--json").stdout)
    assert data["prepare_requests"] == [] and data["cell"]["status"] == "done" and data["samples"]


def test_batched_requests_are_labelled_as_the_batch(model_free):
    """A scorer that scores two points per call: the batch's requests on its first point, labelled as the
    batch's; the other point names that point instead of "none recorded"."""
    root, cells = model_free
    cell = cells["example-transcript"]
    frame = R.cell_samples(cell, root / "r")
    ids = list(dict.fromkeys(frame["sample_id"]))
    batches = [ids[i : i + 2] for i in range(0, len(ids), 2)]
    data = json.loads(run_qval("samples", cell, "--results", root / "r", "--json").stdout)
    firsts = {s["sample_id"]: s for s in data["samples"] if s["candidate"] == 0}
    for batch in batches:
        head = firsts[batch[0]]
        assert [q["prompt"] for q in head["requests"]] == ["score points " + " ".join(batch)]
        if len(batch) == 1:  # a batch of one point: its requests are its own
            assert head["batch"] is None
            continue
        assert head["batch"] == batch and firsts[batch[1]]["batch"] == batch and firsts[batch[1]]["requests"] is None
    text = run_qval("samples", cell, "--results", root / "r").stdout
    assert f"requests of the batch of points {batches[0][0]}, {batches[0][1]} (scored in one call" in text
    assert f"requests: in the batch of point {batches[0][0]}" in text
    page = (root / "rep" / "seen" / cell_page(cell)).read_text()
    assert f"the batch's requests: points {batches[0][0]}, {batches[0][1]}, scored in one call" in page
    assert f"in the batch of point {batches[0][0]}" in page and "none recorded" not in page
    assert page.count("<details>") == len(batches) + 1  # one request per batch, one while preparing


def test_unknown_or_ambiguous_cell_exits_2_with_suggestions(model_free):
    root, cells = model_free
    proc = run_qval("samples", "zz" + cells["oracle-q"][2:], "--results", root / "r")
    assert proc.returncode == 2 and "no cell" in proc.stderr and "closest" in proc.stderr
    assert "Traceback" not in proc.stderr and cells["oracle-q"][:12] in proc.stderr
    proc = run_qval("samples", "", "--results", root / "r")  # an empty id names no cell (not all of them)
    assert proc.returncode == 2 and "no cell ''" in proc.stderr


def test_exact_id_wins_over_the_ids_it_prefixes(tmp_path):
    """Two cells whose ids share a prefix (one id is a prefix of the other): the exact id names its cell, the shared
    prefix is ambiguous and lists both, and the report's drill-down pages are written for both."""
    results = tmp_path / "r"
    con = connect_writer(results)
    for cell_id, method in (("abc123", "oracle-q"), ("abc1234", "random")):
        con.execute(
            "INSERT INTO cells (cell_id, track, model, method, dataset, dataset_label, temperature, seed, status, "
            "n_samples) VALUES (?, 'qalign', NULL, ?, 'frozenlake', 'frozenlake', 0, 0, 'done', 0)",
            [cell_id, method],
        )
    con.close()
    proc = run_qval("samples", "abc123", "--results", results, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cell"]["method"] == "oracle-q"
    proc = run_qval("samples", "ABC1234 ", "--results", results)  # case and spaces as pasted
    assert proc.returncode == 0 and "cell abc1234 " in proc.stdout and "random" in proc.stdout
    proc = run_qval("samples", "abc", "--results", results)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "prefix 'abc' matches 2 cells" in proc.stderr and "give more of it" in proc.stderr
    assert "abc123 (–/oracle-q, frozenlake)" in proc.stderr and "abc1234 (–/random, frozenlake)" in proc.stderr
    pages = write_pages(results, tmp_path / "rep", ["abc123", "abc1234"])
    assert [p.name for p in pages] == [page_file(c) for c in ("abc123", "abc1234")]
    assert "oracle-q" in pages[0].read_text() and "random" in pages[1].read_text()


def test_database_of_an_older_qval_asks_for_one_ingest(model_free, tmp_path):
    root, cells = model_free
    shutil.copytree(root / "r", tmp_path / "r")
    con = duckdb.connect(str(tmp_path / "r" / "qval.duckdb"))
    con.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    con.close()
    proc = run_qval("samples", cells["oracle-q"], "--results", tmp_path / "r")
    assert proc.returncode == 2 and "Run `qval ingest" in proc.stderr


def test_each_leaderboard_row_links_its_drill_down_page(model_free):
    root, cells = model_free
    folder = root / "rep" / "seen"
    index = (folder / "index.html").read_text()
    links = re.findall(r'<a href="(cells/[0-9a-f]+\.html)"', index)
    assert sorted(links) == sorted(cell_page(c) for c in cells.values())
    for link in links:
        page = (folder / link).read_text()
        assert page.count("<script") == 1  # the leaderboard's own hash-pinned script, nothing else
        assert '<a href="../index.html">' in page
    oracle = (folder / cell_page(cells["oracle-q"])).read_text()
    assert oracle.count("<tr data-i=") == R.cell_samples(cells["oracle-q"], root / "r")["sample_id"].nunique()
    echo = (folder / cell_page(cells["example-echo"])).read_text()
    assert XSS not in echo and "&lt;script&gt;alert(" in echo  # the model's reply is text


SMOL_SUITE = """\
name: transcripts
seeds: [0]
models: [smollm2-135m-instruct]
qalign:
  envs: [{name: frozenlake, params: {map: 4x4}}]
  methods: [{name: direct, params: {max_new_tokens: 8}}, action-logprob]
  points: {episodes: 1, max_points_per_episode: 2}
decode:
  datasets: [{name: spec-bench, params: {categories: [coding], limit_per_category: 1, max_turns: 1}}]
  policies: [ar, {name: prompt-lookup, params: {num_draft: 4}}]
  max_new_tokens: 16
"""


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("transcripts")
    suite = write_suite(root / "s.yaml", SMOL_SUITE)
    proc = run_qval("run", suite, "--results", root / "r")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = R.cells(root / "r").set_index("method")["cell_id"].to_dict()
    return root, cells


def test_llm_scorer_keeps_prompt_reply_and_parse(smol_run):
    root, cells = smol_run
    frame = R.cell_samples(cells["direct"], root / "r")
    for _, point in frame.groupby("sample_id"):
        first, rest = point.iloc[0], point.iloc[1:]
        assert not any(isinstance(r, list | np.ndarray) for r in rest["requests"])  # one copy per point
        requests = list(first["requests"])
        assert len(requests) == len(point)  # direct: one request per candidate
        for q, (_, cand) in zip(requests, point.iterrows()):
            assert q["kind"] == "generate" and not q["capped"]
            assert "<|im_start|>" in q["prompt"] and cand["action"] in q["prompt"]  # as the model saw it
            assert (q["parsed"] is None) != (q["parse_error"] is None)
            if q["parsed"] is not None:
                assert float(q["parsed"]) == pytest.approx(cand["score"])
            else:
                assert cand["error"] == q["parse_error"]
    proc = run_qval("samples", cells["direct"], "--results", root / "r", "--limit", "1")
    assert proc.returncode == 0 and "request 1: generate" in proc.stdout and "prompt │" in proc.stdout
    logprob = R.cell_samples(cells["action-logprob"], root / "r")
    kinds = {q["kind"] for r in logprob["requests"] if isinstance(r, list | np.ndarray) for q in r}
    assert kinds and kinds <= {"next", "logprobs", "tokens"}


def test_decoding_turns_keep_their_text(smol_run, smollm):
    root, cells = smol_run
    con = duckdb.connect(str(root / "r" / "qval.duckdb"), read_only=True)
    stored = con.execute("SELECT cell_id, output_ids, output_text, accepted_chars FROM decode_samples").fetchall()
    con.close()
    assert len(stored) == 2
    for cell_id, ids, text, spans in stored:
        assert text and text == smollm.tokenizer.decode(ids, skip_special_tokens=True)
        assert spans is not None and len(spans) % 2 == 0
        assert all(0 <= a < b <= len(text) for a, b in zip(spans[0::2], spans[1::2]))
        if cell_id == cells["ar"]:
            assert spans == []  # AR drafts nothing
    proc = run_qval("samples", cells["prompt-lookup"], "--results", root / "r", "--json")
    turn = json.loads(proc.stdout)["samples"][0]
    assert "output_ids" not in turn and turn["output_text"] and turn["accepted"] is not None
    assert SmolLM2Instruct.name in {c for c in R.cells(root / "r")["model"]}


def test_page_escaping_equals_markupsafe():
    """Drill-down pages escape a turn's text pieces without markupsafe's per-call object (drilldown._escaped): the
    result must be markupsafe.escape's, character for character, on hostile text."""
    import random

    import markupsafe

    from qval.report.drilldown import _escaped, _highlight

    def reference(segments):  # each piece escaped by markupsafe, the accepted ones marked
        return "".join(
            f'<mark class="acc">{markupsafe.escape(p)}</mark>' if a else str(markupsafe.escape(p)) for p, a in segments
        )

    rng = random.Random(0)
    alphabet = "<>&\"'/ =a\u00e9\u2603\x00\x01\n;#"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert _escaped(text) == str(markupsafe.escape(text))
        segments = [(text[: len(text) // 2], rng.random() < 0.5), (text[len(text) // 2 :], rng.random() < 0.5)]
        assert _highlight(segments) == reference(segments)
    html = _highlight([("<script>", False), ("x\"'&", True)])
    assert html == '&lt;script&gt;<mark class="acc">x&#34;&#39;&amp;</mark>'
    # Texts holding the characters that stand in for the marks while a text is escaped whole: marked as ever.
    for segments in ([("a\x00b", True), ("\x01", False)], [("\x00\x01", False)], [("\x01<", True), ("\x00", True)]):
        assert _highlight(segments) == reference(segments)


# The decoding table's rows as the template's loop wrote them before drilldown built them in Python
# (drilldown._turn_rows): the reference those rows must equal, byte for byte, rendered by the page's own Jinja2
# environment (autoescape, None as "–"). The text's pieces are escaped here by the template too, not by drilldown.
JINJA_TURN_ROWS = """\
{% for t in turns %}
<tr data-i="{{ loop.index0 }}"><td class="name">{{ t.sample_id }}</td><td class="num" data-sort="{{ t.turn }}">{{ t.turn }}</td><td class="name">{{ t.category }}</td><td class="num" data-sort="{{ '' if t.new_tokens is none else t.new_tokens }}">{{ t.new_tokens }}</td><td class="num" data-sort="{{ '' if t.target_steps is none else t.target_steps }}">{{ t.target_steps }}</td><td class="num" data-sort="{{ '' if t.tau is none else '%.6f' % t.tau }}">{{ t.tau | num }}</td><td class="num" data-sort="{{ t.accepted }}">{{ t.accepted }} / {{ t.drafted }}</td><td>{% if t.error %}<span class="err">{{ t.error }}</span>{% else %}<pre class="out">{% for piece, accepted in t.segments %}{% if accepted %}<mark class="acc">{{ piece }}</mark>{% else %}{{ piece }}{% endif %}{% endfor %}</pre>{% if t.capped %}<p class="note">text capped at its stored length</p>{% endif %}{% if not t.highlighted %}<p class="note">no per-step spans stored: not highlighted</p>{% endif %}{% if t.steps %}<details><summary>per step</summary><div class="steps">{{ t.steps_text }}</div></details>{% endif %}{% endif %}</td></tr>
{% endfor %}
"""  # noqa: E501


def _hostile_turns() -> list[dict]:
    """Decoding turns as a hostile or broken run could store them."""
    nan = float("nan")
    base = {"turn": 0, "category": "coding", "new_tokens": 12, "target_steps": 5, "drafted": [4, 4, 4],
            "accepted": [1, 0, 3], "output_capped": False, "error": None, "accepted_chars": [0, 3]}  # fmt: skip
    return [
        {**base, "sample_id": "0", "output_text": XSS, "accepted_chars": [0, 5, 3, 1000]},  # spans past the text
        {**base, "sample_id": "<s1>&'\"", "output_text": "a & b \"q\" 'q' </pre></td>", "accepted_chars": None},
        {**base, "sample_id": "2", "output_text": "", "accepted_chars": [], "error": "", "category": None},
        {**base, "sample_id": "3", "output_text": None, "error": "<b>boom</b> & 'x'", "new_tokens": None},
        {**base, "sample_id": "4", "output_text": "héllo ☃ 𝔘 \u202e\x00\n\tx\u0301", "accepted_chars": [2, 4, 6, 5]},
        {**base, "sample_id": "5", "output_text": "x" * 300, "output_capped": True, "target_steps": 0},
        {**base, "sample_id": "6", "output_text": "no steps", "drafted": None, "accepted": None, "category": "<i>&"},
        {**base, "sample_id": "7", "output_text": nan, "error": nan, "category": nan, "target_steps": None},
        {**base, "sample_id": "8", "turn": 1, "output_text": "&amp;&lt;", "accepted_chars": [-3, 2, 1, 9, 8]},
    ]


def test_page_turn_rows_equal_the_template_loop():
    """The decoding table's rows, built in Python for speed (drilldown._turn_rows), are the bytes the template's
    loop wrote, on hostile turns read the ways a frame can hold them (Python objects, DuckDB's types, pandas'
    nullable types; columns an older table lacks), and sit in the page's table as they did."""
    import pandas as pd
    import pyarrow as pa

    from qval import samples_view
    from qval.report import drilldown

    reference = drilldown._ENV.from_string(JINJA_TURN_ROWS)
    rows = _hostile_turns()
    schema = pa.schema(
        [("sample_id", pa.string()), ("turn", pa.int32()), ("category", pa.string()), ("new_tokens", pa.int32()),
         ("target_steps", pa.int32()), ("drafted", pa.list_(pa.int32())), ("accepted", pa.list_(pa.int32())),
         ("output_text", pa.string()), ("output_capped", pa.bool_()), ("accepted_chars", pa.list_(pa.int32())),
         ("error", pa.string())]
    )  # fmt: skip
    arrow = pa.Table.from_pylist([{k: None if v != v else v for k, v in r.items()} for r in rows], schema=schema)
    frames = {
        "objects": pd.DataFrame(rows),
        "duckdb": duckdb.from_arrow(arrow).df(),  # as results.cells_samples reads them
        "nullable": pd.DataFrame(rows).convert_dtypes(),
        "older table": pd.DataFrame(rows).drop(columns=["category", "accepted_chars", "output_capped", "error"]),
    }
    for name, frame in frames.items():
        turns = samples_view.turns(frame)
        html = str(drilldown._turn_rows(turns))
        assert html == reference.render(turns=turns), name
        assert html.count("<tr data-i=") == len(rows) and "<script" not in html and "<s1>" not in html
        frame.attrs["cell"] = {"cell_id": "c1", "track": "decode", "model": "m", "method": "<p>", "n_samples": 9,
                               "dataset_label": "d", "temperature": 0.0, "seed": 0, "status": "done"}  # fmt: skip
        assert f"<tbody>\n{html}</tbody>" in drilldown.render(frame), name
    empty = pd.DataFrame({"sample_id": [], "turn": []})
    empty.attrs["cell"] = frames["objects"].attrs["cell"]
    assert "<tbody>\n</tbody>" in drilldown.render(empty)


def test_samples_text_shows_a_missing_action_or_candidate_as_a_dash():
    """An imported point can lack its action: `qval samples` prints "–" there instead of raising on the padding."""
    import pandas as pd

    from qval import samples_view

    frame = pd.DataFrame(
        {
            "sample_id": ["p0", "p0"],
            "state_key": ["s", "s"],
            "candidate": [None, 1],
            "action": [None, "left"],
            "score": [0.5, None],
            "ref_q": [1.0, 0.0],
            "is_behaviour": [True, False],
            "error": [None, None],
        }
    )
    frame.attrs["cell"] = {
        "cell_id": "c",
        "track": "qalign",
        "model": None,
        "method": "m",
        "dataset_label": "d",
        "temperature": 0.0,
        "seed": 0,
        "status": "done",
        "n_samples": 1,
    }
    lines = samples_view.text(frame).splitlines()
    assert lines[-2].startswith("  *  –  –") and "left" in lines[-1]
