"""The confirm window: how many batches and bytes await their confirm, and waiting for room."""

from __future__ import annotations

import asyncio


class ConfirmWindow:
    """Reading waits while `max_batches` batches or `max_bytes` bytes are unconfirmed. Bytes bound
    memory when batches are large (a fast file); the count keeps many small batches (a slow file,
    sent at once for latency) from queueing behind each other. At most max_bytes - 1 plus one
    batch are ever in flight."""

    def __init__(self, max_batches: int, max_bytes: int) -> None:
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.batches = 0
        self.bytes = 0
        self._changed = asyncio.Event()

    def full(self) -> bool:
        return self.batches >= self.max_batches or self.bytes >= self.max_bytes

    def add(self, nbytes: int) -> None:
        self.batches += 1
        self.bytes += nbytes

    def remove(self, nbytes: int) -> None:
        self.batches -= 1
        self.bytes -= nbytes
        self._changed.set()

    async def wait_for_room(self, stop: asyncio.Event) -> bool:
        """True once there is room; False when `stop` is set first."""
        while self.full():
            if stop.is_set():
                return False
            self._changed.clear()
            changed = asyncio.ensure_future(self._changed.wait())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            stopping.cancel()
        return True
