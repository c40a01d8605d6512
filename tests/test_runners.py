"""Runners: submitit (local executor in CI, golden sbatch for SLURM), GPU pinning, strict options."""

import re
from pathlib import Path

import pytest
from conftest import run_qval, write_suite

import qval.results as R
from qval.errors import UsageError
from qval.runners.local import LocalRunner
from qval.runners.slurm import SubmititRunner, make_executor

GOLDEN = Path(__file__).parent / "golden" / "sbatch_array.txt"
SUITE = """\
    name: sub
    models: [smollm2-135m-instruct]
    qalign:
      envs: [frozenlake, cliffwalking]
      methods: [oracle-q, random]
      points: {episodes: 3, max_points_per_episode: 2, max_steps: 60}
    """


def test_submitit_local_executor_runs_the_same_code_path(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", SUITE)
    proc = run_qval(
        "run",
        suite,
        "--results",
        tmp_path / "r",
        "--runner",
        "submitit",
        "--runner-opt",
        "cluster=local",
        "--runner-opt",
        "timeout_min=10",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = R.cells(tmp_path / "r", "sub")
    assert len(cells) == 4 and set(cells["status"]) == {"done"}
    assert any((tmp_path / "r" / "submitit").rglob("*_log.out"))  # submitit's own job logs
    again = run_qval("run", suite, "--results", tmp_path / "r", "--runner", "submitit", "--runner-opt", "cluster=local")
    assert "nothing to run" in again.stdout


def _sbatch_text(folder):
    executor = make_executor(
        folder,
        {
            "cluster": "slurm",
            "partition": "gpu",
            "gpus_per_shard": 1,
            "cpus_per_shard": 8,
            "timeout_min": 240,
            "array_parallelism": 4,
        },
        "qval-decode-specbench",
    )
    text = executor._executor._make_submission_file_text("python -u -m submitit.core._submit '%j'", "UID")
    return re.sub(re.escape(str(folder)), "<FOLDER>", text)


def test_sbatch_script_matches_golden_file(tmp_path, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor

    # No SLURM here: pretend srun exists so the real executor (and qval's parameters) render the script.
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    text = _sbatch_text(tmp_path / "submitit")
    assert text == GOLDEN.read_text()  # on a submitit upgrade: regenerate with _sbatch_text, review, commit
    for flag in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --requeue",
        "#SBATCH --time=240",
        "#SBATCH --cpus-per-task=8",
    ):
        assert flag in text


def test_runner_options_are_strict(tmp_path):
    with pytest.raises(UsageError, match="has no option 'gpu'"):
        SubmititRunner.parse_options({"gpu": "1"})
    with pytest.raises(UsageError, match="not a valid int"):
        SubmititRunner.parse_options({"gpus_per_shard": "two"})
    suite = write_suite(tmp_path / "s.yaml", SUITE)
    proc = run_qval("run", suite, "--results", tmp_path / "r", "--runner-opt", "nonsense")
    assert proc.returncode == 2 and "KEY=VALUE" in proc.stderr and not (tmp_path / "r").exists()
    proc = run_qval("run", suite, "--results", tmp_path / "r", "--runner-opt", "colour=red")
    assert proc.returncode == 2 and "has no option 'colour'" in proc.stderr and not (tmp_path / "r").exists()


def test_local_runner_pins_one_gpu_per_worker(tmp_path):
    runner = LocalRunner(tmp_path, workers=4, options={"gpus": "0, 3"})
    assert [runner._gpu_env(slot) for slot in range(3)] == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "3"},
        {"CUDA_VISIBLE_DEVICES": "0"},
    ]
    assert LocalRunner(tmp_path)._gpu_env(0) == {}
