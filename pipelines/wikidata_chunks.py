"""Cutting a decompressed Wikidata dump into line-aligned chunks that DuckDB's NDJSON reader takes as they are.

The dump layout (`[` / one entity per line followed by `,` / `]`) becomes NDJSON by editing bytes in place:
the trailing commas and the bracket lines are overwritten with spaces (whitespace-only lines are skipped by
the reader). Line numbers are kept, so that a row of the reader maps back to its line in the dump.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

SPACE, COMMA, NEWLINE, CR, TAB = 32, 44, 10, 13, 9
LAYOUT = (b"", b"[", b"]", b",")


@dataclass
class Chunk:
    """Complete lines of the dump (edited to NDJSON), with the 1-based number of the first one."""

    first_line: int
    buf: np.ndarray  # uint8, ends with a newline
    ends: np.ndarray  # offset of the newline that ends each line
    skipped: np.ndarray  # 0-based indexes of the lines the reader skips (blank or layout)
    path: str | None = None
    layout_lines: int = 0
    _rows: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_lines(self) -> int:
        return len(self.ends)

    @property
    def row_lines(self) -> np.ndarray:
        """0-based line index of each row the NDJSON reader returns, in order."""
        if self._rows is None:
            self._rows = np.delete(np.arange(self.n_lines), self.skipped)
        return self._rows

    def line(self, index: int) -> bytes:
        start = int(self.ends[index - 1]) + 1 if index else 0
        return self.buf[start : int(self.ends[index])].tobytes().rstrip()


@dataclass
class DamagedTail:
    """The incomplete last line of an input that ended early (position = its line number)."""

    line_number: int
    raw: bytes


def read_blocks(reader: io.RawIOBase, size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(bytes, newline offsets): blocks of whole lines; at the end maybe one without a newline (offsets None)."""
    carry = b""
    while True:
        buf = np.empty(len(carry) + size, np.uint8)  # not zero-filled: readinto writes it
        buf[: len(carry)] = np.frombuffer(carry, np.uint8)
        filled = len(carry)
        with memoryview(buf) as view:
            while filled < len(buf):
                n = reader.readinto(view[filled:])
                if not n:
                    break
                filled += n
        at_end = filled < len(buf)
        ends = np.flatnonzero(buf[:filled] == NEWLINE)
        cut = int(ends[-1]) + 1 if len(ends) else 0
        if not at_end and cut == 0:  # one line longer than a block: read on
            carry = buf[:filled].tobytes()
            continue
        carry = buf[cut:filled].tobytes()
        if cut:
            yield buf[:cut], ends
        if at_end:
            if carry:
                yield np.frombuffer(bytearray(carry), np.uint8), None
            return


def to_ndjson(buf: np.ndarray, ends: np.ndarray, first_line: int) -> Chunk:
    """Blank trailing commas and layout lines in place; find the lines the reader will skip."""
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    last = ends - 1
    with_cr = (last >= starts) & (buf[np.maximum(last, 0)] == CR)
    last = np.where(with_cr, last - 1, last)
    comma = (last >= starts) & (buf[np.maximum(last, 0)] == COMMA)
    buf[last[comma]] = SPACE
    # a line can only be skipped if it is very short or starts with whitespace; check those one by one
    first = buf[starts]
    suspects = np.flatnonzero(
        (ends - starts <= 2) | (first == NEWLINE) | (first == SPACE) | (first == TAB) | (first == CR)
    )
    skipped, layout = [], 0
    for index in suspects.tolist():
        start, end = int(starts[index]), int(ends[index])
        content = buf[start:end].tobytes().strip()
        if content in LAYOUT:
            skipped.append(index)
            layout += content != b""
            buf[start:end] = SPACE
    return Chunk(first_line, buf, ends, np.asarray(skipped, dtype=np.int64), layout_lines=layout)


def iter_chunks(
    reader: io.RawIOBase, size: int, damaged: Callable[[], bool]
) -> Iterator[Chunk | DamagedTail]:
    """Chunks of the decompressed input; `damaged()` says, once the input is read, whether it ended early."""
    line = 1
    for buf, ends in read_blocks(reader, size):
        if ends is None:
            if damaged():
                yield DamagedTail(line, buf.tobytes())
                return
            buf = np.append(buf, np.uint8(NEWLINE))
            ends = np.asarray([len(buf) - 1])
        chunk = to_ndjson(buf, ends, line)
        line += chunk.n_lines
        yield chunk


class Prefetch:
    """Runs an iterator in a background thread, one item ahead (decompression overlaps parsing).

    Double buffering: the next item is produced while the consumer works on the current one, and the thread
    waits until that item is taken before producing another, so at most two items are alive at a time.
    """

    _END = object()

    def __init__(self, items: Iterator) -> None:
        self._queue: queue.Queue = queue.Queue(1)
        self._taken = threading.Semaphore(0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True)
        self._thread.start()

    def _hand_over(self, item: object) -> bool:
        self._queue.put(item)  # never blocks: the previous item was taken
        while not self._stop.is_set():
            if self._taken.acquire(timeout=0.1):
                return True
        return False

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._hand_over(item):
                    return
                del item
        except BaseException as exc:  # noqa: BLE001 - handed over to the consuming thread
            self._hand_over(_Failure(exc))
        self._hand_over(self._END)

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            self._taken.release()
            if item is self._END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
            del item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class _Failure:
    exc: BaseException
