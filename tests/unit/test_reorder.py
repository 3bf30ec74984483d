"""The reorder hold: a batch that arrives before the ones in front of it in its file waits for
them (unwritten), and everything is released in file order once they come or the wait is over;
with several consumers on the queue nothing waits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.ranges import RangeSet
from consumer.reorder import ReorderHold
from logship.wire import Delivered


def batch(start: int, end: int, source: str | None = "a") -> tuple[str, Delivered]:
    return f"{source}:{start}", Delivered(source, start, end, 1, None, b"x" * (end - start))


class Output:
    """What the sink would hold: ranges per source, and the order batches were written in."""

    def __init__(self) -> None:
        self.sources: dict[str, RangeSet] = {}
        self.order: list[str] = []

    def has_byte(self, source: str, offset: int) -> bool:
        ranges = self.sources.get(source)
        return ranges is not None and not ranges.missing(offset, offset + 1)

    def write(self, items: list[tuple[str, Delivered]]) -> None:
        for name, item in items:
            assert item.source is not None
            self.sources.setdefault(item.source, RangeSet()).add(item.start, item.end)
            self.order.append(name)


def hold(wait: float = 10, now: list[float] | None = None) -> ReorderHold[str]:
    clock = now if now is not None else [0.0]
    h: ReorderHold[str] = ReorderHold(wait, max_held=100, clock=lambda: clock[0])
    h.enabled = True
    return h


def test_later_batches_wait_for_the_one_in_front_of_them() -> None:
    out, h = Output(), hold()
    out.write(h.take([batch(0, 10)], out.has_byte))
    out.write(h.take([batch(20, 30), batch(30, 40)], out.has_byte))  # 10-20 still on its way
    assert out.order == ["a:0"] and h.count == 2
    out.write(h.take([batch(10, 20)], out.has_byte))
    assert out.order == ["a:0", "a:10", "a:20", "a:30"] and h.count == 0
    assert h.latest == "a:10"  # the last to arrive: a multiple ack through it covers them all


def test_a_gap_that_never_fills_is_written_after_the_wait() -> None:
    now = [0.0]
    out, h = Output(), hold(wait=5, now=now)
    out.write(h.take([batch(0, 10), batch(50, 60)], out.has_byte))
    assert h.deadline() == 5.0 and h.count == 1
    now[0] = 5.0
    out.write(h.take([], out.has_byte))
    assert out.order == ["a:0", "a:50"] and h.deadline() is None


def test_other_files_and_plain_lines_do_not_wait() -> None:
    out, h = Output(), hold()
    items = [batch(40, 50, "a"), batch(0, 5, "b"), batch(0, 3, None)]
    ready = h.take(items, out.has_byte)
    assert [name for name, _ in ready] == ["b:0", "None:0"] and h.count == 1


def test_a_new_hold_holds_before_the_queue_was_polled() -> None:
    """At start the unacknowledged batches of the consumer before this one may still be on their
    way back to the queue, behind later ones: they are waited for from the first delivery."""
    out, h = Output(), ReorderHold[str](10, max_held=100, clock=lambda: 0.0)
    out.write([batch(0, 10)])
    assert h.take([batch(20, 30)], out.has_byte) == [] and h.count == 1
    assert [n for n, _ in h.take([batch(10, 20)], out.has_byte)] == ["a:10", "a:20"]


def test_with_other_consumers_on_the_queue_nothing_waits() -> None:
    out, h = Output(), hold()
    h.enabled = False
    assert [n for n, _ in h.take([batch(40, 50), batch(0, 10)], out.has_byte)] == ["a:40", "a:0"]


def test_held_batches_are_due_at_once_when_another_consumer_joins() -> None:
    """Holding switched off with a batch held: its deadline is now, not the end of the wait
    (the consumer's write loop is also woken), and the next take writes it."""
    now = [0.0]
    out, h = Output(), hold(now=now)
    assert h.take([batch(40, 50)], out.has_byte) == []
    assert h.deadline() == 10
    now[0] = 1.0
    h.enabled = False
    assert h.deadline() == 1.0
    assert [n for n, _ in h.take([], out.has_byte)] == ["a:40"]
    assert h.deadline() is None


@given(st.permutations(list(range(12))), st.integers(1, 5))
def test_any_arrival_order_is_written_in_file_order(order: list[int], group: int) -> None:
    out, h = Output(), hold()
    arrivals = [batch(i * 10, i * 10 + 10) for i in order]
    for i in range(0, len(arrivals), group):
        out.write(h.take(arrivals[i : i + group], out.has_byte))
    assert out.order == [f"a:{i * 10}" for i in range(12)] and h.count == 0
