"""Access-log lines from a byte stream, within the record size limit, resumable.

The one line splitter of the log readers (``policy replay``, ``policy suggest``, ``flows``):
a line over :data:`policy_dsl.record.MAX_LINE` is yielded as its first ``MAX_LINE + 1`` bytes,
which :func:`policy_dsl.record.read_record` refuses by size naming the line, and the rest of it
is skipped without being held. A :class:`LinePosition` remembers where a stream stopped, so a
follower can come back for what was appended.

    >>> import io
    >>> position = LinePosition()
    >>> list(read_lines(io.BytesIO(b'{"v":1}\\n{"v":'), position, final=False))
    [(1, b'{"v":1}\\n')]
    >>> position.offset  # the second line waits for its newline
    8
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from policy_dsl.record import MAX_LINE

__all__ = ["LinePosition", "read_lines"]


@dataclass
class LinePosition:
    """Where reading a stream stopped: byte offset, lines read, and whether it is inside the
    tail of a line over the limit (already yielded)."""

    offset: int = 0
    line: int = 0
    skipping: bool = False


def read_lines(handle: BinaryIO, position: LinePosition, *, final: bool = True) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for each line of ``handle`` from where ``position`` says, updating
    it. ``final``: the stream will not grow, so a last line without its newline is yielded too;
    otherwise it is left for a later call (``handle`` is then read again from
    ``position.offset``)."""
    while True:
        line = handle.readline(MAX_LINE + 1)
        if not line:
            return
        complete = line.endswith(b"\n")
        if position.skipping:  # the tail of a line over the limit
            position.offset += len(line)
            position.skipping = not complete
            continue
        if not complete and len(line) <= MAX_LINE and not final:
            return  # still being written: wait for its newline
        position.offset += len(line)
        position.line += 1
        position.skipping = not complete and len(line) > MAX_LINE
        yield position.line, line
