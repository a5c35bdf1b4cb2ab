"""The device scheduler: shared batches, interactive first, round-robin by client, split requests,
errors handed back, the priority lock. Ordering only: no timings are asserted."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from segloop.engines.scheduler import DeviceLock, DeviceScheduler, Priority, client_scope, current_client


class _Device:
    """A ``run`` that records each batch's parts and can hold the device thread in a batch."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, ...]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, parts: list[Sequence[str]]) -> list[str]:
        self.batches.append([tuple(p) for p in parts])
        self.entered.set()
        self.gate.wait()
        return [x.upper() for p in parts for x in p]


def _spawn(sched: DeviceScheduler[str, str], items: list[str], prio: Priority, client: str,
           out: dict[str, list[str]]) -> threading.Thread:
    def go() -> None:
        out[items[0]] = sched.submit(items, prio, client)

    t = threading.Thread(target=go)
    t.start()
    return t


def _wait_pending(sched: DeviceScheduler[str, str], n: int) -> None:
    deadline = time.monotonic() + 30
    while sched.pending() < n:
        assert time.monotonic() < deadline, "requests never queued"
        time.sleep(0.001)


def _blocked(max_batch: int) -> tuple[DeviceScheduler[str, str], _Device, dict[str, list[str]],
                                     list[threading.Thread]]:
    """A scheduler whose device thread is held inside a first batch (client A's "a0")."""
    dev = _Device()
    dev.gate.clear()
    sched: DeviceScheduler[str, str] = DeviceScheduler(dev, max_batch=max_batch, max_wait_s=0)
    out: dict[str, list[str]] = {}
    threads = [_spawn(sched, ["a0"], Priority.AHEAD, "A", out)]
    assert dev.entered.wait(30)
    return sched, dev, out, threads


def test_a_2d_prompt_goes_before_queued_propagation_chunks() -> None:
    sched, dev, out, threads = _blocked(max_batch=2)
    for k in range(1, 6):  # user A's propagation has five chunks queued
        threads.append(_spawn(sched, [f"a{k}x", f"a{k}y"], Priority.AHEAD, "A", out))
    _wait_pending(sched, 10)
    threads.append(_spawn(sched, ["b"], Priority.INTERACTIVE, "B", out))
    _wait_pending(sched, 11)
    dev.gate.set()
    for t in threads:
        t.join(30)
    assert dev.batches[1][0] == ("b",), dev.batches  # right after the batch that was running
    assert out["b"] == ["B"] and out["a1x"] == ["A1X", "A1Y"]
    sched.close()


def test_propagations_of_two_users_take_turns() -> None:
    sched, dev, out, threads = _blocked(max_batch=2)
    for k in range(1, 5):
        threads.append(_spawn(sched, [f"a{k}x", f"a{k}y"], Priority.AHEAD, "A", out))
        _wait_pending(sched, 2 * k)  # A's chunks queue in order
    threads.append(_spawn(sched, ["c1x", "c1y"], Priority.AHEAD, "C", out))
    _wait_pending(sched, 10)
    dev.gate.set()
    for t in threads:
        t.join(30)
    served = [b[0] for b in dev.batches[1:]]
    # FIFO would serve C last (after a1..a4): round-robin serves it in the second turn
    assert served == [("a1x", "a1y"), ("c1x", "c1y"), ("a2x", "a2y"), ("a3x", "a3y"),
                      ("a4x", "a4y")], served
    sched.close()


def test_interactive_load_slows_a_propagation_but_never_stops_it() -> None:
    dev = _Device()
    dev.gate.clear()
    sched: DeviceScheduler[str, str] = DeviceScheduler(dev, max_batch=1, max_wait_s=0,
                                                       max_bypass=2)
    out: dict[str, list[str]] = {}
    threads = [_spawn(sched, ["x0"], Priority.AHEAD, "X", out)]
    assert dev.entered.wait(30)
    threads.append(_spawn(sched, ["a1"], Priority.AHEAD, "A", out))
    _wait_pending(sched, 1)
    for k in range(5):
        threads.append(_spawn(sched, [f"i{k}"], Priority.INTERACTIVE, f"U{k}", out))
        _wait_pending(sched, k + 2)
    dev.gate.set()
    for t in threads:
        t.join(30)
    served = [b[0][0] for b in dev.batches[1:]]
    assert served == ["i0", "i1", "a1", "i2", "i3", "i4"], served
    sched.close()


def test_requests_share_batches_and_big_ones_are_split_in_order() -> None:
    sched, dev, out, threads = _blocked(max_batch=4)
    threads.append(_spawn(sched, [f"p{k}" for k in range(6)], Priority.AHEAD, "P", out))
    _wait_pending(sched, 6)
    threads.append(_spawn(sched, ["q0", "q1"], Priority.AHEAD, "Q", out))
    _wait_pending(sched, 8)
    dev.gate.set()
    for t in threads:
        t.join(30)
    assert dev.batches[1] == [("p0", "p1", "p2", "p3")]
    assert dev.batches[2] == [("q0", "q1"), ("p4", "p5")], "Q's turn first, then the rest of P"
    assert out["p0"] == [f"P{k}" for k in range(6)] and out["q0"] == ["Q0", "Q1"]
    assert sched.stats.slices == 9 and sched.stats.mixed == 1 and sched.stats.largest == 4
    sched.close()


def test_a_batch_waits_for_an_active_user_but_a_lone_user_never_waits() -> None:
    dev = _Device()
    sched: DeviceScheduler[str, str] = DeviceScheduler(dev, max_batch=4, max_wait_s=60.0,
                                                       active_window_s=60.0)
    assert sched.submit(["x"], Priority.INTERACTIVE, "A") == ["X"]  # alone: no 60 s wait
    out: dict[str, list[str]] = {}
    first = _spawn(sched, ["b"], Priority.INTERACTIVE, "B", out)  # A is active: B's batch waits
    _wait_pending(sched, 1)
    second = _spawn(sched, ["a"], Priority.INTERACTIVE, "A", out)
    first.join(90)
    second.join(90)
    assert dev.batches[-1] == [("b",), ("a",)], dev.batches
    assert out == {"b": ["B"], "a": ["A"]}
    sched.close()


def test_a_failed_batch_raises_in_its_callers_and_the_scheduler_goes_on() -> None:
    calls: list[int] = []

    def run(parts: list[Sequence[int]]) -> list[int]:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("device fault")
        return [x * 2 for p in parts for x in p]

    sched: DeviceScheduler[int, int] = DeviceScheduler(run, max_batch=2, max_wait_s=0)
    with pytest.raises(ValueError, match="device fault"):
        sched.submit([1, 2, 3], Priority.AHEAD, "A")  # split in two: the rest is dropped
    assert sched.pending() == 0
    assert sched.submit([4], Priority.AHEAD, "A") == [8]
    sched.close()
    with pytest.raises(RuntimeError, match="closed"):
        sched.submit([5], Priority.AHEAD, "A")


def test_the_device_thread_ends_when_idle_and_comes_back() -> None:
    sched: DeviceScheduler[int, int] = DeviceScheduler(
        lambda parts: [x for p in parts for x in p], idle_exit_s=0.01)
    assert sched.submit([1], Priority.AHEAD, "A") == [1]
    deadline = time.monotonic() + 30
    while sched._thread is not None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert sched.submit([2], Priority.AHEAD, "A") == [2]
    sched.close()


def test_client_scope_nests() -> None:
    assert current_client() is None
    with client_scope("ana"):
        with client_scope("ben"):
            assert current_client() == "ben"
        assert current_client() == "ana"
    assert current_client() is None


def _queue_on_lock(lock: DeviceLock, waiters: list[tuple[str, Priority]]) -> list[str]:
    """Start one thread per (name, priority), each queued on the held ``lock`` before the next
    starts, release the lock, and return the order in which they got it."""
    order: list[str] = []

    def take(name: str, prio: Priority) -> None:
        with lock.hold(prio):
            order.append(name)

    threads = []
    for name, prio in waiters:
        t = threading.Thread(target=take, args=(name, prio))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 30
        while len(lock._waiting) < len(threads):
            assert time.monotonic() < deadline
            time.sleep(0.001)
    lock.release()
    for t in threads:
        t.join(30)
    return order


def test_the_device_lock_hands_over_by_priority_then_arrival() -> None:
    lock = DeviceLock()
    lock.acquire()
    with lock:  # reentrant
        pass
    order = _queue_on_lock(lock, [("track1", Priority.AHEAD), ("track2", Priority.AHEAD),
                                  ("prompt", Priority.INTERACTIVE)])
    assert order == ["prompt", "track1", "track2"]
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()


def test_the_device_lock_lets_a_tracking_step_through_after_max_bypass_prompts() -> None:
    lock = DeviceLock(max_bypass=2)
    lock.acquire()
    order = _queue_on_lock(lock, [("track", Priority.AHEAD)]
                           + [(f"p{k}", Priority.INTERACTIVE) for k in range(4)])
    assert order == ["p0", "p1", "track", "p2", "p3"], order
