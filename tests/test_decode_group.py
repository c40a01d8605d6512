"""Timed cells sharing an AR baseline run interleaved, sample by sample, in a rotating order."""

from conftest import write_suite

from qval.decode.task import run_decode_group
from qval.plan import build_plan
from qval.suite import load_suite


class RecordingWriter:
    def __init__(self, done=()):
        self.rows, self.done = [], set(done)

    def done_sample_ids(self):
        return set(self.done)

    def add_sample(self, rows):
        self.rows += rows


def test_group_interleaves_rotates_and_resumes(tmp_path, smollm):
    suite = write_suite(
        tmp_path / "s.yaml",
        """\
        name: group
        models: [smollm2-135m-instruct]
        decode:
          datasets: [{name: spec-bench, params: {categories: [qa], limit_per_category: 4, max_turns: 1}}]
          policies: [ar, prompt-lookup, jacobi]
          max_new_tokens: 6
        """,
    )
    cells = list(build_plan(load_suite(suite)).cells.values())
    ar = next(c for c in cells if c.method == "ar")
    first_id = next(c for c in cells if c.method == "jacobi").cell_id
    samples = ["321", "322", "323", "324"]  # the first four qa prompts
    writers = {c.cell_id: RecordingWriter(done=samples[:2] if c.cell_id == first_id else ()) for c in cells}
    events = []
    outcome = run_decode_group(cells, smollm, writers, lambda e, **kw: events.append((e, kw.get("cell"))), warmup=0)
    order = [cell for e, cell in events if e == "sample"]
    # 4 samples × 3 cells, minus the 2 samples the jacobi cell had already finished (resume).
    assert len(order) == 3 * 4 - 2
    # Samples 1-2: two cells each (jacobi resumed past them); samples 3-4: all three, led by a different cell.
    per_sample = [order[0:2], order[2:4], order[4:7], order[7:10]]
    assert [len(set(p)) for p in per_sample] == [2, 2, 3, 3]
    assert per_sample[0][0] != per_sample[1][0] and per_sample[2][0] != per_sample[3][0]
    assert outcome[ar.cell_id] == (4, 0)
    assert {r["sample_id"] for r in writers[first_id].rows} == set(samples[2:])
