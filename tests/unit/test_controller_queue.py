"""The reconciler's queue: one reconcile for a burst, never two at once, nothing lost while active."""

from __future__ import annotations

from controller.queue import WorkQueue


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_one_item_and_the_earliest_request_wins() -> None:
    clock = Ticks()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add("a", 5.0)
    queue.add("a", 1.0)
    queue.add("a", 3.0)
    assert queue.waiting() == 1
    assert queue.get(timeout=0) is None
    clock.now = 1.0
    assert queue.get(timeout=0) == "a"
    assert queue.get(timeout=0) is None


def test_a_key_asked_for_while_active_comes_back_once_done() -> None:
    clock = Ticks()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")
    queue.add("a")
    assert queue.get(timeout=0) is None  # not twice at once
    queue.done("a")
    assert queue.get(timeout=0) == "a"
    queue.done("a")
    assert queue.get(timeout=0) is None


def test_keys_come_in_due_order_and_close_ends_waiting() -> None:
    clock = Ticks()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add("late", 2.0)
    queue.add("soon", 1.0)
    clock.now = 3.0
    assert [queue.get(timeout=0), queue.get(timeout=0)] == ["soon", "late"]
    queue.close()
    assert queue.get() is None
