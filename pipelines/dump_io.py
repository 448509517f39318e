"""Opening dump files: plain, .gz (rapidgzip, parallel) or .bz2 (indexed-bzip2, parallel), checksums, and
the exception a truncated compressed file raises, so that callers keep what was read and record a reject."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

READ_BUFFER = 4 << 20


class InputMissing(FileNotFoundError):
    """An input file that does not exist (the CLIs print it as one line and exit non-zero)."""


class TruncatedInput(Exception):
    """The compressed stream ended early or is corrupt; everything before it was delivered."""


def compression_of(path: str | os.PathLike) -> str:
    name = str(path).lower()
    if name.endswith(".bz2"):
        return "bz2"
    if name.endswith(".gz"):
        return "gz"
    return "plain"


def require_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputMissing(f"input file not found: {path}")
    return path


def open_binary(path: str | os.PathLike, threads: int | None = None) -> BinaryIO:
    """A buffered binary reader of the decompressed content, decompressing in parallel where possible."""
    path = require_file(path)
    threads = threads or min(os.cpu_count() or 1, 4)
    kind = compression_of(path)
    if kind == "bz2":
        import indexed_bzip2

        raw = indexed_bzip2.open(str(path), parallelization=threads)
    elif kind == "gz":
        import rapidgzip

        raw = rapidgzip.open(str(path), parallelization=threads)
    else:
        return open(path, "rb", buffering=READ_BUFFER)
    return io.BufferedReader(raw, READ_BUFFER)


def file_checksum(path: str | os.PathLike, chunk: int = 8 << 20) -> str:
    """Identity of an input for resumable stages: sha1 over size + first/last 8 MiB + mtime-free content sample.

    Full hashing of a 75 GiB dump would cost minutes; size plus head and tail catches re-downloads and
    truncation. Small files (<= 64 MiB) are hashed whole.
    """
    path = require_file(path)
    size = path.stat().st_size
    digest = hashlib.sha1(str(size).encode())
    with open(path, "rb") as handle:
        if size <= 64 << 20:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
        else:
            digest.update(handle.read(chunk))
            handle.seek(size - chunk)
            digest.update(handle.read(chunk))
    return digest.hexdigest()


# --- Keeping everything before the damage (additions; the functions above are unchanged) ---------------------


def _bz2_shifted(handle: BinaryIO, bit_offset: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The bytes of a bz2 file from `bit_offset` on, shifted to start on a byte boundary (bz2 blocks are not).

    The last byte holds `shift` made-up zero bits; it comes alone, so that a caller can tell it apart.
    """
    import numpy as np

    byte, shift = divmod(bit_offset, 8)
    handle.seek(byte)
    data = handle.read(chunk)
    while data:
        following = handle.read(chunk)
        if shift == 0:
            yield data
        else:
            window = np.frombuffer(data + (following[:1] or b"\0"), np.uint8).astype(np.uint16)
            shifted = (((window[:-1] << shift) | (window[1:] >> (8 - shift))) & 0xFF).astype(np.uint8).tobytes()
            if following:
                yield shifted
            else:
                yield shifted[:-1]
                yield shifted[-1:]
        data = following


def sequential_tail(path: str | os.PathLike, skip: int, block: tuple[int, int] | None = None) -> Iterator[bytes]:
    """Decompressed bytes from offset `skip` on, decoded by the standard library (bz2 or zlib, one thread).

    For bz2, `block` = (compressed bit offset, decompressed offset) of a block that starts at or before `skip`:
    decoding starts there instead of at the beginning of the file. Raises TruncatedInput where the data is
    damaged or ends before the end-of-stream marker. Concatenated streams (pbzip2, multi-member gzip) are read.
    """
    import bz2
    import itertools
    import zlib

    path = require_file(path)
    kind = compression_of(path)
    if kind == "plain":
        raise ValueError("sequential_tail is for compressed files")
    with open(path, "rb") as handle:
        shifted = kind == "bz2" and block is not None and block[0] > 32
        if shifted:
            assert block is not None
            header = handle.read(4)
            chunks: Iterator[bytes] = itertools.chain([header], _bz2_shifted(handle, block[0]))
            skip -= block[1]
        else:
            chunks = iter(lambda: handle.read(1 << 20), b"")

        def fresh() -> bz2.BZ2Decompressor | zlib._Decompress:
            return bz2.BZ2Decompressor() if kind == "bz2" else zlib.decompressobj(31)

        decoder = fresh()
        in_stream = False
        # small pieces: a decoder that meets damage raises and loses what it decoded within that call
        pieces = (buf[i : i + 8192] for buf in chunks for i in range(0, len(buf), 8192) if buf)
        data = next(pieces, b"")
        while data:
            following = next(pieces, b"")
            while data:
                in_stream = True
                try:
                    out = decoder.decompress(data)
                except (OSError, EOFError, ValueError, zlib.error) as exc:
                    if shifted and not following:  # the made-up bits of the last byte: the file just ends here
                        raise TruncatedInput(f"{kind} input ends before its end-of-stream marker") from exc
                    raise TruncatedInput(f"corrupt {kind} data: {exc}") from exc
                if skip > 0:
                    cut = min(skip, len(out))
                    out, skip = out[cut:], skip - cut
                if out:
                    yield out
                if not decoder.eof:
                    break
                in_stream = False
                if shifted:  # a stream decoded from its middle ends here; its overall CRC cannot be checked
                    return
                data = decoder.unused_data.lstrip(b"\0") if kind == "gz" else decoder.unused_data
                decoder = fresh()
            data = following
        if in_stream:
            raise TruncatedInput(f"{kind} input ends before its end-of-stream marker (truncated file)")


class RecoveringReader(io.RawIOBase):
    """A parallel decompressing reader that keeps as much as the standard library would where the input is damaged.

    Parallel decoders deliver data in large units and lose the last ones before a damaged block (rapidgzip even
    ends a truncated gzip file silently). On an error, or a gzip end short of the file's end, this reader goes on
    with `sequential_tail` from the last good bz2 block (gzip: from the start, output skipped), then ends like
    EOF with `error` set. `position` counts the decompressed bytes delivered.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.path = require_file(path)
        self.kind = compression_of(self.path)
        threads = threads or min(os.cpu_count() or 1, 4)
        self.error: str | None = None
        self.position = 0
        self.recovered = 0
        self._tail: Iterator[bytes] | None = None
        self._done = False
        self._pending = b""
        if self.kind == "bz2":
            import indexed_bzip2

            self.inner: BinaryIO = indexed_bzip2.open(str(self.path), parallelization=threads)
        elif self.kind == "gz":
            import rapidgzip

            self.inner = rapidgzip.open(str(self.path), parallelization=threads)
        else:
            self.inner = open(self.path, "rb", buffering=0)

    def readable(self) -> bool:
        return True

    def _last_block(self) -> tuple[int, int] | None:
        try:
            offsets = self.inner.available_block_offsets()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the index is an optimisation only
            return None
        good = [(bits, out) for bits, out in offsets.items() if out <= self.position]
        return max(good, key=lambda item: item[1]) if good else None

    def _start_tail(self) -> None:
        block = self._last_block() if self.kind == "bz2" else None
        self._tail = sequential_tail(self.path, self.position, block)

    def _gzip_complete(self) -> bool:
        try:
            return self.inner.tell_compressed() >= self.path.stat().st_size * 8  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            return False

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._done:
            return 0
        if self._tail is None:
            try:
                n = self.inner.readinto(buffer)  # type: ignore[attr-defined]
            except (RuntimeError, EOFError, OSError, ValueError):
                self._start_tail()
            else:
                if n:
                    self.position += n
                    return n
                if self.kind != "gz" or self._gzip_complete():
                    self._done = True
                    return 0
                self._start_tail()
        return self._read_tail(buffer)

    def _read_tail(self, buffer: bytearray | memoryview) -> int:
        while not self._pending and self._tail is not None:
            try:
                self._pending = next(self._tail)
            except StopIteration:
                self._tail, self._done = None, True
            except TruncatedInput as exc:
                self._tail, self._done = None, True
                self.error = f"truncated or corrupt compressed input after {self.position} bytes: {exc}"
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.position += n
        self.recovered += n
        return n

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            super().close()


def open_recovering(path: str | os.PathLike, threads: int | None = None) -> RecoveringReader:
    """A raw reader of the decompressed content; read it to the end, then check `.error` (None if intact)."""
    return RecoveringReader(path, threads)
