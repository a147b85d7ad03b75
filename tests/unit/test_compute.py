"""The compute pool: wide jobs run alone, narrow jobs one per core, nobody starves."""

from __future__ import annotations

import threading
import time

from zesty.serving.compute import ComputePool


class Probe:
    """Records which jobs run at the same time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.overlaps: list[frozenset[str]] = []
        self.order: list[str] = []

    def job(self, name: str, hold: threading.Event | None = None, sleep: float = 0.0):
        def run() -> str:
            with self.lock:
                self.running.add(name)
                self.overlaps.append(frozenset(self.running))
                self.order.append(name)
            if hold is not None:
                assert hold.wait(10)
            time.sleep(sleep)
            with self.lock:
                self.running.discard(name)
            return name

        return run


def _started(probe: Probe, name: str) -> None:
    deadline = time.monotonic() + 10
    while name not in probe.order:
        assert time.monotonic() < deadline, f"{name} never started"
        time.sleep(0.001)


def test_narrow_jobs_run_side_by_side_and_wide_jobs_alone():
    pool = ComputePool(2)
    probe = Probe()
    release = threading.Event()
    a = pool.submit_narrow(probe.job("n1", release))
    b = pool.submit_narrow(probe.job("n2", release))
    _started(probe, "n1")
    _started(probe, "n2")
    assert pool.busy
    wide = pool.submit(probe.job("wide"))
    time.sleep(0.05)
    assert "wide" not in probe.order  # waits for both cores
    release.set()
    assert [f.result(10) for f in (a, b, wide)] == ["n1", "n2", "wide"]
    assert frozenset({"n1", "n2"}) in probe.overlaps
    assert all(len(s) == 1 for s, name in zip(probe.overlaps, probe.order) if name == "wide")
    pool.shutdown()
    assert not pool.busy


def test_a_waiting_wide_job_goes_before_later_narrow_ones():
    pool = ComputePool(2)
    probe = Probe()
    release = threading.Event()
    first = pool.submit_narrow(probe.job("n1", release))
    _started(probe, "n1")
    wide = pool.submit(probe.job("wide", sleep=0.02))
    time.sleep(0.05)  # the wide job now holds the other worker, waiting for n1's core
    late = pool.submit_narrow(probe.job("late"))
    release.set()
    for f in (first, wide, late):
        f.result(10)
    assert probe.order == ["n1", "wide", "late"]
    pool.shutdown()


def test_jobs_take_cores_in_arrival_order():
    """On 3 cores a narrow job waiting behind a running wide one goes before a wide job that
    arrived after it: a stream of wide jobs cannot shut narrow ones out."""
    pool = ComputePool(3)
    probe = Probe()
    release = threading.Event()
    first = pool.submit(probe.job("wide-a", release))
    _started(probe, "wide-a")
    narrow = pool.submit_narrow(probe.job("narrow"))
    time.sleep(0.05)
    second = pool.submit(probe.job("wide-b"))
    time.sleep(0.05)
    release.set()
    for f in (first, narrow, second):
        f.result(10)
    assert probe.order == ["wide-a", "narrow", "wide-b"]
    pool.shutdown()


def test_one_core_pool_runs_everything_in_turn():
    pool = ComputePool(1)
    probe = Probe()
    futures = [pool.submit_narrow(probe.job(f"n{i}", sleep=0.005)) for i in range(3)]
    futures.append(pool.submit(probe.job("wide", sleep=0.005)))
    assert [f.result(10) for f in futures] == ["n0", "n1", "n2", "wide"]
    assert all(len(s) == 1 for s in probe.overlaps)
    pool.shutdown()
