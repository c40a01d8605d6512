"""Ray runner against a real Ray cluster that this module starts (head node, local machine) and always stops."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

# The test cluster's GCS listens on every interface (Ray maps 127.0.0.1 to the node's address): only holders of
# this token may submit work. Ray reads the mode and token when it is imported, so set them first.
TOKEN = secrets.token_hex(16)
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
ray = pytest.importorskip("ray")

from conftest import ROOT, TINY_SUITE  # noqa: E402

import qval.results as R  # noqa: E402
from qval.api import run_suite  # noqa: E402
from qval.errors import UsageError  # noqa: E402
from qval.runners.ray_runner import RayRunner, worker_env  # noqa: E402

RAY_BIN = Path(sys.executable).with_name("ray")
# The tiny suite with a smaller decode track (this test compares runners; it does not need many samples).
CMP_SUITE = TINY_SUITE.replace("limit_per_category: 2", "limit_per_category: 1").replace(
    "max_new_tokens: 16", "max_new_tokens: 8"
)
KILL_SUITE = """\
name: raykill
models: [smollm2-135m-instruct]
decode:
  datasets: [{name: spec-bench, params: {categories: [summarization], limit_per_category: 4, max_turns: 1}}]
  policies: [ar]
  max_new_tokens: 16
  metrics: [speedup, acceptance_length]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def _pss_mb(pids) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _signal_all(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(sid: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def stop_cluster(sid: int) -> dict:
    """Stop exactly this cluster: every process of the session `ray start` opened (daemons, workers, and the
    workers' children). `ray stop` is not scoped: it kills every Ray process of the machine."""
    t0 = time.monotonic()
    # gcs_server last: stopped together with its raylet it can hang in shutdown (then SIGKILL after 5 s).
    _signal_all([p for p in _session_pids(sid) if _comm(p) != "gcs_server"], signal.SIGTERM)
    deadline = time.monotonic() + 5
    while any(_comm(p) not in ("gcs_server", "") for p in _session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_all(_session_pids(sid), signal.SIGTERM)
    forced = _wait_gone(sid, 5)
    _signal_all(forced, signal.SIGKILL)
    left = _wait_gone(sid, 10)
    return {"seconds": time.monotonic() - t0, "forced": len(forced), "left": left}


@pytest.fixture(scope="module")
def ray_cluster():
    temp_dir = tempfile.mkdtemp(prefix="qray-", dir="/tmp")  # short: Ray's socket paths live under it
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, RAY_USAGE_STATS_ENABLED="0")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            str(RAY_BIN),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--num-gpus=2",  # 2 declared GPUs: none exist, pinning is testable
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            "--object-store-memory=100000000",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sid = proc.pid  # a new session: every process of this cluster carries its id, and nothing else does
    saved_address = os.environ.pop("RAY_ADDRESS", None)  # the runner must use the address it is given
    try:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        started = time.monotonic() - t0
        memory = {"idle_mb": _pss_mb(_session_pids(sid)), "peak_mb": 0.0}
        sampling = threading.Event()

        def sample():
            while not sampling.wait(0.5):
                memory["peak_mb"] = max(memory["peak_mb"], _pss_mb(_session_pids(sid)))

        threading.Thread(target=sample, daemon=True).start()
        yield {"address": f"127.0.0.1:{port}", "sid": sid, "temp_dir": temp_dir, "start_s": started}
    finally:
        sampling.set()
        if saved_address is not None:
            os.environ["RAY_ADDRESS"] = saved_address
        if ray.is_initialized():
            ray.shutdown()
        stopped = stop_cluster(sid)
        print(
            f"\nray cluster: start {started:.1f}s, stop {stopped['seconds']:.1f}s "
            f"({stopped['forced']} process(es) needed SIGKILL); PSS of the cluster's processes: idle "
            f"{memory['idle_mb']:.0f} MB, peak {memory['peak_mb']:.0f} MB (Ray workers + qval workers)",
            file=sys.stderr,
        )
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not stopped["left"], f"processes of the Ray cluster survived: {stopped['left']}"
        stray = subprocess.run(["pgrep", "-f", temp_dir], capture_output=True, text=True).stdout.split()
        assert not stray, f"stray processes still reference {temp_dir}: {stray}"


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _run(suite, results, runner, options=None):
    events = []
    summary = run_suite(
        suite,
        results,
        runner=runner,
        runner_options=options,
        on_event=lambda shard, event: events.append((shard, event)),
    )
    return summary, events


def _frame(results, track, suite, drop=()):
    df = R.samples(results, track, suite).drop(columns=list(drop))
    return df.sort_values(list(df.columns[:3])).reset_index(drop=True)


@pytest.mark.slow
def test_ray_runner_matches_local_runner(ray_cluster, tmp_path):
    suite = _write(tmp_path / "tiny.yaml", CMP_SUITE)
    local, _ = _run(suite, tmp_path / "local", "local")
    t0 = time.monotonic()
    remote, events = _run(suite, tmp_path / "ray", "ray", {"address": ray_cluster["address"]})
    print(f"\nray run {time.monotonic() - t0:.1f}s", file=sys.stderr)
    assert local.failed_shards == remote.failed_shards == [] and remote.failed_cells == []
    a, b = R.cells(tmp_path / "local", "tiny"), R.cells(tmp_path / "ray", "tiny")
    cols = ["cell_id", "track", "method", "status", "n_samples", "n_failed"]
    assert len(b) == 5 and set(b["status"]) == {"done"}
    assert a[cols].sort_values("cell_id").values.tolist() == b[cols].sort_values("cell_id").values.tolist()
    assert {e["cell"] for _, e in events if e.get("event") == "cell_done"} == set(b["cell_id"])  # live progress
    # Same samples, one row each; deterministic outputs equal (timings are not compared).
    q_local, q_ray = _frame(tmp_path / "local", "qalign", "tiny"), _frame(tmp_path / "ray", "qalign", "tiny")
    assert q_local.equals(q_ray) and not q_ray.duplicated(["cell_id", "sample_id", "candidate"]).any()
    timing = [
        "prefill_s",
        "decode_s",
        "draft_s",
        "load_other_cores",
        "load_steal",
        "load_avg1",
    ]  # measured, not outputs
    d_local, d_ray = (_frame(tmp_path / r, "decode", "tiny", timing) for r in ("local", "ray"))
    assert d_local.equals(d_ray) and not d_ray.duplicated(["cell_id", "sample_id", "turn"]).any()
    runs = R.runs(tmp_path / "ray")
    assert len(runs) == 1 and runs.iloc[0]["status"] == "done"
    log = next((tmp_path / "ray" / "logs").rglob("shard-0.log")).read_text()
    assert log.count("=== qval-ray attempt") == 1
    again, _ = _run(suite, tmp_path / "ray", "ray", {"address": ray_cluster["address"]})
    assert again.run_id is None  # nothing left to run


def _worker_pids(results) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"qval.worker .*--results {results}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["worker", "ray-worker"])
def test_killed_worker_is_retried_and_resumes(ray_cluster, tmp_path, victim):
    """SIGKILL the worker subprocess (engine crash, OOM kill) or the Ray worker that supervises it (node trouble):
    Ray retries the task, which resumes inside the cell: no finished sample lost, none duplicated."""
    suite = _write(tmp_path / "kill.yaml", KILL_SUITE)
    results = (tmp_path / "results").resolve()
    box = {}
    thread = threading.Thread(
        target=lambda: box.update(
            out=_run(suite, results, "ray", {"address": ray_cluster["address"], "max_retries": "2"})
        )
    )
    t0 = time.monotonic()
    thread.start()
    parts, deadline = [], time.time() + 600
    while not parts and time.time() < deadline and thread.is_alive():
        parts = list((results / "parts").glob("*/part-*.parquet")) if (results / "parts").exists() else []
        time.sleep(0.05)
    assert parts, "no part was written"
    pids = _worker_pids(results)
    assert len(pids) == 1, pids
    target = pids[0] if victim == "worker" else int(Path(f"/proc/{pids[0]}/stat").read_text().split(")")[1].split()[1])
    os.kill(target, signal.SIGKILL)
    cell_dir = parts[0].parent
    assert not (cell_dir / "DONE.json").exists(), "the kill came too late to test a mid-cell resume"
    finished = {}
    for part in sorted(cell_dir.glob("part-*.parquet")):  # the retry needs seconds to load the model
        for row in pq.read_table(part).to_pylist():
            finished[row["sample_id"]] = row["output_sha"]
    assert 0 < len(finished) < 4
    if victim == "ray-worker":  # Ray kills the process group of a dead worker: the subprocess must not live on
        deadline = time.time() + 10
        while pids[0] in _worker_pids(results) and time.time() < deadline:
            time.sleep(0.1)
        assert pids[0] not in _worker_pids(results), "the worker outlived its Ray worker"
    thread.join(timeout=900)
    print(f"\nkill/retry run ({victim}) {time.monotonic() - t0:.1f}s", file=sys.stderr)
    summary, events = box["out"]
    assert summary.failed_shards == [] and summary.failed_cells == []
    samples = R.samples(results, "decode", "raykill")
    assert len(samples) == 4 and samples["sample_id"].nunique() == 4  # none lost, none duplicated
    kept = samples.set_index("sample_id").loc[list(finished), "output_sha"].to_dict()
    assert kept == finished  # samples finished before the kill were kept, not recomputed
    assert set(R.cells(results, "raykill")["status"]) == {"done"}
    log = next((results / "logs").rglob("shard-0.log")).read_text()
    assert log.count("=== qval-ray attempt") == 2
    assert _worker_pids(results) == []


@pytest.mark.slow
def test_retries_exhausted_is_a_clear_failure_and_a_rerun_resumes(ray_cluster, tmp_path):
    suite = _write(tmp_path / "kill.yaml", KILL_SUITE.replace("limit_per_category: 4", "limit_per_category: 2"))
    results = (tmp_path / "results").resolve()
    box = {}
    thread = threading.Thread(
        target=lambda: box.update(
            out=_run(suite, results, "ray", {"address": ray_cluster["address"], "max_retries": "0"})
        )
    )
    thread.start()
    deadline = time.time() + 600
    while not _worker_pids(results) and time.time() < deadline and thread.is_alive():
        time.sleep(0.05)
    os.kill(_worker_pids(results)[0], signal.SIGKILL)
    thread.join(timeout=600)
    summary, events = box["out"]
    assert summary.failed_shards == [0] and summary.failed_cells == ["shard 0"]
    error = next(e["error"] for _, e in events if e.get("event") == "cell_failed")
    assert "ShardCrashed" in error and "killed by signal 9" in error
    again, _ = _run(suite, results, "ray", {"address": ray_cluster["address"]})
    assert again.failed_shards == [] and len(R.samples(results, "decode", "raykill")) == 2


@pytest.mark.slow
def test_sigterm_to_run_cancels_its_tasks(ray_cluster, tmp_path):
    """`qval run --runner ray` (the real CLI, in a subprocess) gets SIGTERM: its tasks are cancelled and their
    workers stopped; nothing is left running on the cluster."""
    suite = _write(tmp_path / "term.yaml", KILL_SUITE.replace("name: raykill", "name: term"))
    results = (tmp_path / "results").resolve()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qval",
            "run",
            str(suite),
            "--results",
            str(results),
            "--runner",
            "ray",
            "--runner-opt",
            f"address={ray_cluster['address']}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not _worker_pids(results) and proc.poll() is None:
        time.sleep(0.1)
    assert _worker_pids(results), "worker did not start: " + (proc.stderr.read() if proc.poll() is not None else "")
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]  # the CLI's own SIGTERM handling, not Ray's sys.exit(15)
    deadline = time.time() + 15
    while _worker_pids(results) and time.time() < deadline:
        time.sleep(0.1)
    assert _worker_pids(results) == [], "an orphan worker survived SIGTERM of qval run"
    ray.init(address=ray_cluster["address"], log_to_driver=False, logging_level="WARNING")
    try:  # the cluster is healthy and idle again
        assert ray.available_resources().get("CPU") == 2
    finally:
        ray.shutdown()


def test_worker_cannot_join_the_cluster(ray_cluster):
    """The worker's environment: no RAY_* but RAY_ADDRESS=local, so a nested ray.init() starts a private
    instance; without that it would find this node's cluster. Ray's GPU assignment is passed on; a task without
    GPUs sees none (Ray >= 2.4x no longer blanks CUDA_VISIBLE_DEVICES for it)."""
    probe = (
        "import os; print(sorted(k for k in os.environ if k.startswith('RAY_'))); "
        "print(repr(os.environ.get('CUDA_VISIBLE_DEVICES'))); "
        "import ray._private.services as s; print(s.canonicalize_bootstrap_address(None)); "
        "print(s.canonicalize_bootstrap_address('auto'))"
    )

    def inside():
        gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        isolated = subprocess.run(
            [sys.executable, "-c", probe], env=worker_env(dict(os.environ), 1, gpus), capture_output=True, text=True
        )
        bare = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        naive = subprocess.run([sys.executable, "-c", probe], env=bare, capture_output=True, text=True)
        return isolated.stdout.splitlines(), naive.stdout.splitlines() + [naive.stderr[-300:]]

    ray.init(address=ray_cluster["address"], log_to_driver=False, logging_level="WARNING")
    try:
        isolated, naive = ray.get(ray.remote(num_cpus=1)(inside).remote())
        pinned = ray.get([ray.remote(num_cpus=0, num_gpus=1)(inside).remote() for _ in range(2)])
    finally:
        ray.shutdown()
    # Each task with num_gpus=1 hands its own device to its worker (the cluster declares GPUs 0 and 1).
    assert sorted(isolated[1] for isolated, _ in pinned) == ["'0'", "'1'"]
    assert isolated == ["['RAY_ADDRESS']", "''", "None", "None"]  # ray.init() and ray.init("auto"): private
    # A stripped environment alone is not enough: ray.init("auto") finds this node's GCS (and ray.init() would
    # too where the cluster uses the default temp dir, through /tmp/ray/ray_current_cluster).
    assert naive[3].endswith(ray_cluster["address"].split(":")[1])


QALIGN_SUITE = """\
name: qonly
models: [smollm2-135m-instruct]
qalign:
  envs: [{name: frozenlake, params: {map: 4x4}}]
  methods: [oracle-q]
  points: {episodes: 1, max_points_per_episode: 1}
  metrics: [per_state_spearman]
"""


def test_results_not_shared_with_the_node_is_a_clear_failure(ray_cluster, tmp_path):
    """A worker that exits non-zero without naming a failed cell: the runner reports the shard with its log tail.
    Here the node cannot see the plan (the results folder is not on a shared filesystem)."""
    from qval.api import plan_suite

    plan = plan_suite(_write(tmp_path / "q.yaml", QALIGN_SUITE))
    events = []
    status = RayRunner(tmp_path / "r", options={"address": ray_cluster["address"]}).run(
        plan, tmp_path / "elsewhere" / "plan.json", [0], "rid", lambda shard, event: events.append(event)
    )
    assert status == {0: 2}
    assert [e["cell"] for e in events] == ["shard 0"] and "not visible on node" in events[0]["error"]


def test_options_are_strict(tmp_path):
    with pytest.raises(UsageError, match="has no option 'gpus'"):
        RayRunner.parse_options({"gpus": "1"})
    with pytest.raises(UsageError, match="not a valid int"):
        RayRunner.parse_options({"max_retries": "many"})
    with pytest.raises(UsageError, match="must be >= 0"):
        RayRunner.parse_options({"num_gpus": "-1"})
    assert RayRunner.parse_options({"num_gpus": "0.5", "address": "auto"}) == {"num_gpus": 0.5, "address": "auto"}
    assert RayRunner(tmp_path)._address() in ("auto", "local")
