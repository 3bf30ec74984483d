"""The producer's confirm window: full on either limit, room again when a confirm comes."""

from __future__ import annotations

import asyncio

from producer.window import ConfirmWindow


async def test_full_on_batches_or_bytes_and_room_after_a_confirm() -> None:
    window = ConfirmWindow(max_batches=3, max_bytes=100)
    stop = asyncio.Event()
    window.add(60)
    assert not window.full()
    window.add(60)  # one batch may pass the byte limit: reading stops after it
    assert window.full()
    waiting = asyncio.ensure_future(window.wait_for_room(stop))
    await asyncio.sleep(0)
    assert not waiting.done()
    window.remove(60)
    assert await asyncio.wait_for(waiting, 1) is True
    for _ in range(2):
        window.add(1)
    assert window.full() and window.batches == 3


async def test_stop_ends_the_wait() -> None:
    window = ConfirmWindow(max_batches=1, max_bytes=100)
    window.add(1)
    stop = asyncio.Event()
    waiting = asyncio.ensure_future(window.wait_for_room(stop))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(waiting, 1) is False
