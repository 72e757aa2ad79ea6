"""The answer limits (bot/limits.py): a FIFO gate that never loses or leaks a slot, and
per-thread locks that vanish when unused."""

from __future__ import annotations

import asyncio

import pytest

from bot.limits import Admission, KeyedLocks


async def test_waiters_get_slots_in_arrival_order() -> None:
    """With one slot taken, later arrivals are admitted first come, first served."""
    gate = Admission(1)
    assert gate.try_enter()
    order: list[int] = []

    async def wait(n: int) -> None:
        await gate.enter()
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)  # let all three queue up
    assert gate.queued == 3 and not gate.try_enter()
    for _ in range(3):
        gate.leave()
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    gate.leave()
    assert gate.active == 0 and gate.queued == 0


async def test_a_cancelled_waiter_neither_takes_nor_loses_a_slot() -> None:
    """Cancelled while waiting: no slot is used; cancelled just after being handed one: the
    slot passes on to the next in line."""
    gate = Admission(1)
    assert gate.try_enter()
    first = asyncio.create_task(gate.enter())
    second = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)
    gate.leave()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the slot went on to `second`
    assert gate.active == 1
    third = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    gate.leave()
    assert gate.active == 0 and gate.queued == 0 and gate.try_enter()


async def test_thread_locks_serialise_one_key_and_are_dropped_when_unused() -> None:
    """Two holders of one key run one after the other; other keys do not wait; no lock stays."""
    locks = KeyedLocks()
    events: list[str] = []
    release = asyncio.Event()

    async def hold(key: str, name: str, wait: bool) -> None:
        async with locks.hold(key):
            events.append(f"{name} in")
            if wait:
                await release.wait()
            events.append(f"{name} out")

    a = asyncio.create_task(hold("t1", "a", wait=True))
    b = asyncio.create_task(hold("t1", "b", wait=False))
    c = asyncio.create_task(hold("t2", "c", wait=False))
    await asyncio.wait_for(c, 1)
    assert events == ["a in", "c in", "c out"] and locks.busy("t1")
    release.set()
    await asyncio.gather(a, b)
    assert events[3:] == ["a out", "b in", "b out"]
    assert len(locks) == 0 and not locks.busy("t1")


async def test_a_place_in_line_is_taken_at_once_and_keeps_its_turn() -> None:
    """`join()` queues without awaiting: a slot freed before the joiner runs again goes to it,
    not to a later `try_enter`; `release()` gives back a place or a slot alike."""
    gate = Admission(1)
    assert gate.try_enter()
    place = gate.join()
    assert not place.done() and gate.queued == 1
    gate.leave()  # the slot goes to the place in line...
    assert place.done() and not gate.try_enter()  # ...not to a later arrival
    gate.release(place)
    assert gate.active == 0
    assert gate.try_enter()
    waiting = gate.join()
    gate.release(waiting)  # given up while waiting: nothing leaks
    assert gate.queued == 0 and gate.active == 1
    gate.leave()
    assert gate.active == 0 and gate.available
