"""The model's oracle (tests/support/model.py) on hand-made histories: it must catch every kind of
wrong output and accept only the losses nobody could prevent, or the model proves nothing."""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

from tests.support.model import Generation, assess, confirms, cut_lines, parse_kinds


def gen(gen_id: int, *lines: bytes, lost_by: str | None = None, **extra: object) -> Generation:
    g = Generation(gen_id, bytearray(b"".join(lines)), {"input.txt"}, lost_by=lost_by)
    for key, value in extra.items():
        setattr(g, key, value)
    return g


A = [b"a%d \x00\xff\r\n" % i for i in range(4)]
B = [b"b%d\n" % i for i in range(3)]


def problems(gens: list[Generation], output: bytes, mode: str = "suffix") -> list[str]:
    return assess(gens, output, [], mode).problems


def test_the_exact_concatenation_passes() -> None:
    assert problems([gen(1, *A), gen(2, *B)], b"".join(A + B)) == []


def test_a_lone_carriage_return_is_data_not_a_line_end() -> None:
    assert cut_lines(b"x\ry\nz") == [b"x\ry\n", b"z"]


def test_duplicates_reorders_strangers_and_losses_are_caught() -> None:
    gens = [gen(1, *A), gen(2, *B)]
    assert "duplicate" in problems(gens, b"".join(A + A[3:] + B))[0]
    assert "out of order" in " ".join(problems(gens, b"".join(A[1:2] + A[0:1] + A[2:] + B)))
    assert "never written" in problems(gens, b"".join([*A, b"junk\n", *B]))[0]
    assert "nothing could have lost it" in problems(gens, b"".join(A[:2] + B))[0]


def test_only_a_suffix_of_a_truncated_file_may_go_missing() -> None:
    gens = [gen(1, *A, lost_by="truncate"), gen(2, *B)]
    found = assess(gens, b"".join(A[:2] + B), [], "suffix")
    assert found.problems == [] and "truncate" in found.expected_losses[0]
    assert "not a suffix" in problems(gens, b"".join(A[:1] + A[2:] + B))[0]


def test_reported_mode_wants_a_bytes_lost_event_at_or_before_the_gap() -> None:
    gens = [gen(1, *A, lost_by="truncate"), gen(2, *B)]
    output = b"".join(A[:2] + B)
    gap = len(A[0] + A[1])
    assert "not reported" in problems(gens, output, "reported")[0]
    event: dict[str, object] = {"path": "/x/input.txt", "start": gap, "end": 99, "bytes": 9}
    assert assess(gens, output, [event], "reported").problems == []
    assert (
        "not reported"
        in assess(gens, output, [{**event, "start": gap + 1}], "reported").problems[0]
    )


def test_a_line_torn_by_a_rotation_whose_first_part_was_lost() -> None:
    gens = [gen(1, A[0], A[1][:3], lost_by="delete"), gen(2, A[1][3:], *B)]
    assert problems(gens, b"".join([A[0], A[1][3:], *B])) == []
    assert problems(gens, b"".join([A[0], A[1], *B])) == []


def test_a_rewrite_keeping_what_was_read_ships_those_lines_once() -> None:
    old = gen(1, *A, lost_by="rewrite")
    new = gen(2, A[0], *B, rewrite_of=1)
    found = assess([old, new], b"".join([A[0], *B]), [], "reported")
    assert found.problems == []  # A[1:] is gone, and nobody could tell: no report needed
    # read past what the new content shares: the rewrite is seen, the new file read from 0
    assert problems([old, new], b"".join([A[0], A[1], A[0], *B])) == []
    assert "nothing could have lost it" in problems([old, new], b"".join([A[0], A[1], *B]))[0]


def test_a_rewrite_keeping_what_was_read_then_cut_is_judged_for_its_cut_alone() -> None:
    """Model seed 501464445: the rewrite's first line is the old file's (shipped once, as the
    old file's) and its last line went with a truncate: a reported suffix, not a hole."""
    old = gen(1, A[0], lost_by="rewrite")
    new = gen(2, A[0], *B, rewrite_of=1, lost_by="truncate")
    output = b"".join([A[0], *B[:2]])
    cut = len(A[0] + B[0] + B[1])
    event: dict[str, object] = {"path": "/x/input.txt", "start": cut, "end": 99, "bytes": 3}
    assert assess([old, new], output, [event], "reported").problems == []
    assert "not reported" in assess([old, new], output, [], "reported").problems[0]


def test_a_half_line_refilled_with_its_own_first_bytes_is_an_unreportable_loss() -> None:
    """Model seed 501464203 (the README's first limit): the producer saw only "s1 g" of a line,
    went down, the file was cut and refilled with lines that begin with "s1 g": it looks grown,
    so the half line's loss cannot be reported. With the producer watching it must be."""
    gens = [
        gen(1, *A),
        gen(2, b"s1 g", lost_by="delete", producer_up_at_loss=False),
        gen(3, b"2 rest\n", lost_by="delete", unseen=True),
        gen(4, b"s1 g4 x\n"),
    ]
    output = b"".join([*A, b"s1 g4 x\n"])
    assert assess(gens, output, [], "reported").problems == []
    gens[1].producer_up_at_loss = True
    assert "not reported" in assess(gens, output, [], "reported").problems[0]


def test_op_kinds_from_the_environment() -> None:
    default = ("append", "rename")
    assert parse_kinds(None, default) == {"append", "rename"}
    assert parse_kinds("+rewrite,-rename", default) == {"append", "rewrite"}
    assert parse_kinds("append,delete", default) == {"append", "delete"}
    assert "output_rotation" in parse_kinds("all", default)


def test_a_rotation_waits_for_this_file_not_for_one_that_had_its_inode(tmp_path: Path) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes(b"new content\n")
    st = path.stat()
    head = path.read_bytes()
    mine = {"ino": st.st_ino, "offset": 12, "head_len": 12, "head_sha": sha256(head).hexdigest()}
    assert confirms(mine, st, head)
    assert not confirms({**mine, "offset": 11}, st, head)  # not read to its end
    assert not confirms({**mine, "finished": True}, st, head)
    old = sha256(b"old content, longer\n"[:12]).hexdigest()  # a deleted file, same inode number
    assert not confirms({**mine, "offset": 20, "head_sha": old}, st, head)
    assert confirms({"ino": st.st_ino, "offset": 12}, st, head)  # no fingerprint in the format


def test_a_lost_line_split_by_a_rotation_is_reported_from_where_the_file_holds_it() -> None:
    """Model seed 50004: a line half written when its file was copied away, finished in the next
    file; the copy went. The producer reports from the half's start in the old file, which holds
    only that half: the report is at the gap, not past it."""
    gens = [gen(1, *A[:3], A[3][:4], lost_by="delete"), gen(2, A[3][4:], *B)]
    output = b"".join(A[:3] + B)
    gap = len(b"".join(A[:3]))
    event: dict[str, object] = {"path": "/x/input.txt", "start": gap, "end": gap + 4, "bytes": 4}
    assert assess(gens, output, [event], "reported").problems == []
    assert "not reported" in assess(gens, output, [], "reported").problems[0]


def test_a_half_line_whose_rest_was_lost_runs_on_into_the_next_line() -> None:
    """Model seed 60010: a line half written to a file rotated away, its rest written to the next
    file, deleted while the producer was down. The half ships as it is and the next line runs on
    from it: no stranger, nothing missing but the lost file's lines."""
    half, rest = A[3][:4], A[3][4:]
    gens = [gen(1, *A[:3], half), gen(2, rest, *B[:1], lost_by="delete"), gen(3, *B[1:])]
    output = b"".join([*A[:3], half + B[1], B[2]])
    found = assess(gens, output, [], "suffix")
    assert found.problems == [] and "runs on" in found.notes[0]
    assert "never written" in " ".join(problems(gens, b"".join([*A[:3], b"xx" + B[1], B[2]])))


def test_a_half_line_runs_on_into_a_line_that_begins_like_its_lost_rest() -> None:
    """Model seed 520001145: the lost rest and the next line both begin with "s<seed> ", so the
    longest common prefix of the whole line and the joined one overshoots the cut by a byte."""
    whole, after = b"s1 g5 n64 sihh\n", b"s1 END\n"
    gens = [gen(1, *B, whole[:10]), gen(2, whole[10:], lost_by="truncate"), gen(3, after)]
    found = assess(gens, b"".join(B) + whole[:10] + after, [], "suffix")
    assert found.problems == [] and "runs on" in found.notes[0]


def test_the_first_pieces_of_a_long_line_then_its_file_rewritten_run_on_into_the_next() -> None:
    """Model seed 540003108: the first pieces of a line longer than a batch were shipped, then
    its file was rewritten in place before the rest could be read. The pieces run on into the
    new file's first line: nothing missing, no stranger, but the lost rest must be reported,
    from where the pieces end."""
    long_line = b"a4 " + b"L" * 6000 + b"\n"
    old = gen(1, *A[:3], long_line, lost_by="rewrite")
    new = gen(2, *B, rewrite_of=1)
    output = b"".join([*A[:3], long_line[:4096], *B])
    cut = len(b"".join(A[:3])) + 4096
    event = {"event": "bytes_lost", "path": "/w/input.txt", "start": cut, "bytes": 5}
    found = assess([old, new], output, [event], "reported")
    assert found.problems == [] and "runs on" in found.notes[0]
    late = {**event, "start": cut + 1}  # a report that starts past the cut misses bytes
    assert "not reported" in " ".join(assess([old, new], output, [late], "reported").problems)
    assert "not reported" in " ".join(assess([old, new], output, [], "reported").problems)


def test_a_half_line_lost_with_the_next_file_is_not_taken_for_pieces_of_another() -> None:
    """Model seed 550004108: a 6-byte half line whose rest was lost with the next file runs on
    into a later line; a lost file's last line that begins with the same bytes is no match
    (pieces of a long line are whole batches)."""
    other_last = b"s1 g2 n9 tail\n"  # begins like the half line
    half, rest = b"s1 g2 n10 x"[:6], b"s1 g2 n10 x"[6:] + b"\n"
    gens = [
        gen(1, *B, other_last, lost_by="truncate"),
        gen(2, half),
        gen(3, rest, lost_by="delete"),
        gen(4, b"s1 g4 n11\n"),
    ]
    found = assess(gens, half + b"s1 g4 n11\n", [], "suffix")
    assert found.problems == [] and "s1 g2" in found.notes[0]


def test_rewrites_in_a_row_keeping_what_was_read_ship_those_lines_once() -> None:
    """Model seed 70001: read the first line, then rewritten twice while the producer was down,
    each time with the same first line: shipped once, as the first file's."""
    first = gen(1, *A, lost_by="rewrite")
    unseen = gen(2, A[0], B[0], rewrite_of=1, lost_by="rewrite", unseen=True)
    last = gen(3, A[0], *B[1:], rewrite_of=2)
    found = assess([first, unseen, last], b"".join([A[0], *B[1:]]), [], "reported")
    assert found.problems == []


def test_the_first_pieces_of_a_long_line_then_the_file_cut_after_more_lines() -> None:
    """Model chaos seed 630012405: the producer had shipped the first pieces of a line longer
    than a batch when its file, holding more lines after it, was truncated. Its rest and the
    lines after it were lost with the cut, reported from where the pieces end; the pieces run
    on into the next file's first line, as for a file's last line (seed 540003108)."""
    long_line = b"a4 " + b"L" * 6000 + b"\n"
    old = gen(1, *A[:2], long_line, *A[2:], lost_by="truncate")
    new = gen(2, *B)
    output = b"".join([*A[:2], long_line[:4096], *B])
    cut = len(b"".join(A[:2])) + 4096
    event = {"event": "bytes_lost", "path": "/w/input.txt", "start": cut, "bytes": 5}
    found = assess([old, new], output, [event], "reported")
    assert found.problems == [] and "runs on" in found.notes[0]
    late = {**event, "start": cut + 1}
    assert "not reported" in " ".join(assess([old, new], output, [late], "reported").problems)


def test_a_half_line_runs_on_into_the_second_part_of_a_torn_line() -> None:
    """Model chaos seed 630012345: a half line whose rest was lost with the next file runs on
    into the second part of a line torn by a later rotation, whose first part was lost with its
    own file: the half line arrived, the torn line is missing (its file's loss), no stranger."""
    line1, line2 = b"s1 g1 n1 first\n", b"s1 g3 n2 second\n"
    gens = [
        gen(1, line1[:6]),
        gen(2, line1[6:], *B, lost_by="truncate"),
        gen(3, line2[:9], lost_by="delete"),
        gen(4, line2[9:], *A),
    ]
    found = assess(gens, line1[:6] + line2[9:] + b"".join(A), [], "suffix")
    assert found.problems == [] and "second part" in found.notes[0]
    assert "never written" in " ".join(assess(gens, line1[:6] + b"x\n", [], "suffix").problems)
