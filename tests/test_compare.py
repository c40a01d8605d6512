import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import run_qval, write_suite
from scipy import stats as sps

from qval import compare as C
from qval.stats import paired_permutation_test


def test_paired_permutation_matches_scipy():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.3, 1, 12), rng.normal(0, 1, 12)
    ref = sps.permutation_test(
        (x, y), lambda a, b: np.mean(a - b), permutation_type="samples", alternative="two-sided", n_resamples=np.inf
    ).pvalue
    assert paired_permutation_test(x, y) == pytest.approx(ref, abs=1e-9)  # exact for ≤ 16 pairs
    x, y = rng.normal(0.3, 1, 60), rng.normal(0, 1, 60)
    ref = sps.permutation_test(
        (x, y), lambda a, b: np.mean(a - b), permutation_type="samples", n_resamples=20000, random_state=0
    ).pvalue
    assert paired_permutation_test(x, y, n_resamples=20000) == pytest.approx(ref, abs=0.02)


def _board(value, lo, hi, cell):
    return pd.DataFrame(
        [
            {
                "track": "decode",
                "model": "m",
                "method": "pl",
                "dataset": "d",
                "temperature": 0.0,
                "seed": 0,
                "cell_id": cell,
                "speedup": value,
                "speedup__lo": lo,
                "speedup__hi": hi,
                "acceptance_length_per_sample": 1.5,
                "acceptance_length_per_sample__lo": 1.4,
                "acceptance_length_per_sample__hi": 1.6,
            }
        ]
    )


def test_verdicts(monkeypatch):
    boards = {"A": _board(1.0, 0.9, 1.1, "a"), "B": _board(1.5, 1.3, 1.7, "b")}
    taus = {
        "a": pd.Series([1.0, 1.1, 1.2, 1.0, 1.1, 1.3], index=list("uvwxyz")),
        "b": pd.Series([2.0, 2.1, 2.2, 2.0, 2.1, 2.3], index=list("uvwxyz")),
    }
    monkeypatch.setattr(C, "_cells", lambda side: boards[side.suite])
    monkeypatch.setattr(C, "_per_sample", lambda side, track: taus)  # every cell of a side, by cell id
    monkeypatch.setattr(C, "_conditions", lambda side: {})  # no measurement conditions recorded on either side
    table = C.compare(C.Side(None, "A"), C.Side(None, "B")).set_index("metric")
    assert table.loc["speedup", "verdict"] == "B higher (CIs disjoint)"
    row = table.loc["acceptance_length_per_sample"]
    assert row["verdict"] == "B higher" and row["p_value"] == pytest.approx(2 / 64)
    boards["B"] = boards["B"].assign(method="other")
    verdicts = set(C.compare(C.Side(None, "A"), C.Side(None, "B"))["verdict"])
    assert verdicts == {"only in A", "only in B"}


def test_cli_compare_two_results_folders(tmp_path):
    suite = write_suite(
        tmp_path / "s.yaml",
        """\
        name: cmp
        models: [smollm2-135m-instruct]
        qalign:
          envs: [frozenlake]
          methods: [oracle-q, random]
          points: {episodes: 8, max_points_per_episode: 3}
        """,
    )
    a = tmp_path / "a"
    assert run_qval("run", suite, "--results", a).returncode == 0
    shutil.copytree(a, tmp_path / "b")
    proc = run_qval("compare", a, tmp_path / "b", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    per_state = [r for r in rows if r["metric"] == "per_state_spearman"]
    assert len(per_state) == 2 and all(r["verdict"] == "no significant change" for r in per_state)
    table = run_qval("compare", a, tmp_path / "b")  # the human table: no pandas warning, no 'nan' (issue #16)
    assert table.returncode == 0 and "Warning" not in table.stderr and "nan" not in table.stdout, table.stderr
    assert run_qval("compare", a, f"{a}:nosuch").returncode == 2
