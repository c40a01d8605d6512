"""Work a report hands to worker processes (qval/report/background.py): the same value as computed in process, an
error raised once by the report's own process (no worker traceback), and no worker outliving its report. Real
processes; the work is stdlib functions, which pickle by reference."""

import math
import operator
import time

import pytest

from qval.report import background


@pytest.fixture
def spawned(monkeypatch):
    monkeypatch.setenv("QVAL_REPORT_WORKERS", "1")
    procs = []
    real = background.spawn

    def spawn(module, *argv):
        proc = real(module, *argv)
        procs.append(proc)
        return proc

    monkeypatch.setattr(background, "spawn", spawn)
    return procs


def test_outside_a_report_or_when_not_worth_it_the_work_is_done_here_and_now(spawned):
    assert background.start(math.factorial, 20).result() == math.factorial(20)
    with background.beside():
        assert background.start(math.factorial, 5, worth_a_worker=False).result() == 120
    assert spawned == []


def test_a_worker_computes_the_value_the_report_process_would(spawned):
    with background.beside():
        deferred = background.start(math.factorial, 300)
        assert len(spawned) == 1
        assert deferred.result() == math.factorial(300)
    assert spawned[0].returncode == 0


def test_a_failing_worker_leaves_its_error_to_the_report_process_once_without_a_traceback(spawned, capfd):
    with background.beside():
        deferred = background.start(operator.truediv, 1, 0)
        with pytest.raises(ZeroDivisionError):
            deferred.result()
    assert spawned[0].returncode == 1
    assert "Traceback" not in capfd.readouterr().err


def test_a_report_that_ends_early_stops_its_workers(spawned):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="report failed"), background.beside():
        background.start(time.sleep, 60)
        raise RuntimeError("report failed")
    assert spawned[0].poll() is not None  # killed and waited for, not left to sleep for a minute
    assert time.monotonic() - start < 30


def test_an_interrupted_wait_stops_the_worker(spawned):
    import signal

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), background.beside():
            deferred = background.start(time.sleep, 60)
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            deferred.result()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert spawned[0].poll() is not None  # killed and waited for while the report stopped


def test_a_stopped_worker_leaves_its_value_to_the_report_process(spawned):
    with background.beside():
        deferred = background.start(math.factorial, 10)
        deferred.cancel()
        assert deferred.result() == math.factorial(10)


def test_a_qval_folder_in_the_working_directory_does_not_stand_in_for_qval(spawned, tmp_path, monkeypatch):
    (tmp_path / "qval").mkdir()
    (tmp_path / "qval" / "__init__.py").write_text("raise SystemExit(7)\n")
    monkeypatch.chdir(tmp_path)
    with background.beside():
        assert background.start(math.factorial, 6).result() == 720
    assert spawned[0].returncode == 0  # the worker ran this qval (the stand-in would have ended it with 7)


def test_a_worker_that_fails_where_the_report_process_succeeds_is_said_once(spawned, capfd, monkeypatch):
    monkeypatch.setattr(background.sys, "executable", "/bin/false")  # a worker that cannot even start Python
    with background.beside():
        assert background.start(math.factorial, 7).result() == 5040
    err = capfd.readouterr().err
    assert err.count("a report worker failed (exit code 1)") == 1 and "factorial" in err


def test_a_worker_dies_with_a_report_killed_outright(tmp_path):
    """SIGKILL leaves a report no chance to stop its workers: the kernel ends them (PR_SET_PDEATHSIG)."""
    import os
    import signal
    import subprocess
    import sys

    program = (
        "import time\n"
        "from qval.report import background\n"
        "procs = []\n"
        "real = background.spawn\n"
        "background.spawn = lambda *a: procs.append(real(*a)) or procs[-1]\n"
        "with background.beside():\n"
        "    background.start(time.sleep, 120)\n"
        "    print(procs[0].pid, flush=True)\n"
        "    time.sleep(120)\n"
    )
    report = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "QVAL_REPORT_WORKERS": "1"},
    )
    worker = None
    try:
        assert report.stdout is not None
        worker = int(report.stdout.readline())
        time.sleep(1.0)  # the worker is past its start (and its prctl)
        assert _alive(worker), "the worker did not start (or ended before its report)"
        report.send_signal(signal.SIGKILL)
        report.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived the report killed outright"
    finally:
        if report.poll() is None:
            report.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running, not a zombie (a worker whose parent died is reparented and reaped; a zombie has ended)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
