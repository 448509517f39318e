"""Byte-range shards of a (maybe compressed) dump, read in parallel by independent processes.

A shard is [start, end) in *decompressed* byte offsets. It reads from the first record start >= start up to
the first record start >= end, so the shards of a plan cover every record exactly once, whatever their number.
A record start is offset 0 or the byte after a newline (Wikidata: every line; Wikipedia: a line that opens a
`<page>` element).

Seeking inside a compressed file needs its block index: `plan_shards` builds it once (one decompression pass,
parallel) and saves it beside the stage output, so that every shard seeks straight to its range:
  .bz2   indexed-bzip2 block offsets (compressed bit -> decompressed byte), saved as JSON
  .gz    rapidgzip's seek index (`export_index` / `import_index`)
  plain  the file itself (no index)

Test hook (tests only): `JAKET_FAIL_SHARD=1:1,2,wikipedia/0` makes wikidata shard 1 raise on its first attempt,
wikidata shard 2 and wikipedia shard 0 on every attempt (`[<stage>/]<index>[:<attempts>]`, comma-separated; the
stage defaults to wikidata), to exercise retries and the report of a failing shard.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from pipelines.dump_io import TruncatedInput, compression_of, require_file

LINE_START = re.compile(rb"\n")
PAGE_START = re.compile(rb"\n[ \t]*<page[ >]")
_SCAN_BLOCK = 1 << 20
_SCAN_CARRY = 64  # longer than any boundary pattern
FAIL_HOOK = "JAKET_FAIL_SHARD"


class ShardsFailed(RuntimeError):
    """Some shards kept failing; the store was built without them (the CLI prints it as one line)."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: decompressed bytes [start, end) of the dump."""

    index: int
    count: int
    start: int
    end: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:04d}"

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    def describe(self) -> str:
        return f"shard {self.index} of {self.count}, bytes [{self.start:,}, {self.end:,})"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ShardPlan:
    path: str
    size: int                  # decompressed bytes
    index_file: str | None     # None: plain file (or no index needed)
    shards: list[Shard]


def split(size: int, count: int) -> list[Shard]:
    """`count` ranges of (nearly) equal size covering [0, size)."""
    count = max(1, count)
    bounds = [size * i // count for i in range(count + 1)]
    return [Shard(i, count, bounds[i], bounds[i + 1]) for i in range(count)]


def _index_path(path: Path, index_dir: Path, key: str) -> Path:
    suffix = {"bz2": "bz2-offsets.json", "gz": "gzidx"}[compression_of(path)]
    return index_dir / f"{path.name}.{key[:16]}.{suffix}"


def build_index(path: str | os.PathLike, target: Path, threads: int | None = None) -> int:
    """Write the seek index of a compressed file to `target` (atomically); returns the decompressed size."""
    path = require_file(path)
    threads = threads or min(os.cpu_count() or 1, 4)
    kind = compression_of(path)
    tmp = target.with_name(target.name + ".tmp")
    if kind == "bz2":
        import indexed_bzip2

        with indexed_bzip2.open(str(path), parallelization=threads) as handle:
            offsets = handle.block_offsets()
            size = handle.size()
        tmp.write_text(json.dumps({"size": size, "offsets": sorted(offsets.items())}))
    elif kind == "gz":
        import rapidgzip

        with rapidgzip.open(str(path), parallelization=threads) as handle:
            handle.block_offsets()
            size = handle.size()
            if handle.tell_compressed() < path.stat().st_size * 8:  # rapidgzip ends a truncated file silently
                raise TruncatedInput(f"gz input ends before its end-of-stream marker: {path}")
            with open(tmp, "wb") as out:
                handle.export_index(out)
        tmp.with_name(tmp.name + ".size").write_text(str(size))
        os.replace(tmp.with_name(tmp.name + ".size"), target.with_name(target.name + ".size"))
    else:
        raise ValueError("plain files need no index")
    os.replace(tmp, target)
    return size


def _indexed_size(index_file: Path) -> int | None:
    if not index_file.is_file():
        return None
    if index_file.suffix == ".json":
        return int(json.loads(index_file.read_text())["size"])
    size_file = index_file.with_name(index_file.name + ".size")
    return int(size_file.read_text()) if size_file.is_file() else None


def plan_shards(path: str | os.PathLike, count: int, index_dir: str | os.PathLike, key: str,
                threads: int | None = None) -> ShardPlan:
    """Split `path` into `count` shards; builds (or reuses, by `key`) the seek index of a compressed file.

    Raises what the decompressor raises on a damaged file: the caller then parses the file as one shard
    through the recovering reader (which keeps everything before the damage).
    """
    path = require_file(path)
    if compression_of(path) == "plain":
        size = path.stat().st_size
        return ShardPlan(str(path), size, None, split(size, count))
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    index_file = _index_path(path, index_dir, key)
    size = _indexed_size(index_file)
    if size is None:
        size = build_index(path, index_file, threads)
    return ShardPlan(str(path), size, str(index_file), split(size, count))


def open_seekable(path: str | os.PathLike, index_file: str | None, threads: int = 1) -> BinaryIO:
    """A seekable reader of the decompressed content, with the saved index loaded (no index pass)."""
    path = require_file(path)
    kind = compression_of(path)
    if kind == "plain":
        return open(path, "rb", buffering=0)
    if index_file is None:
        raise ValueError(f"a compressed shard needs the seek index: {path}")
    if kind == "bz2":
        import indexed_bzip2

        handle = indexed_bzip2.open(str(path), parallelization=threads)
        offsets = json.loads(Path(index_file).read_text())["offsets"]
        handle.set_block_offsets({int(bits): int(out) for bits, out in offsets})
        return handle
    import rapidgzip

    handle = rapidgzip.open(str(path), parallelization=threads)
    with open(index_file, "rb") as saved:
        handle.import_index(saved)
    return handle


def align(stream: BinaryIO, offset: int, size: int, boundary: re.Pattern[bytes]) -> int:
    """The first record start >= offset (size if there is none)."""
    if offset <= 0:
        return 0
    if offset >= size:
        return size
    stream.seek(offset - 1)
    base, data = offset - 1, b""
    while True:
        block = stream.read(_SCAN_BLOCK)
        if not block:
            return size
        data += block
        match = boundary.search(data)
        if match:
            return base + match.start() + 1
        keep = min(len(data), _SCAN_CARRY)
        base += len(data) - keep
        data = data[-keep:]


class RangeReader(io.RawIOBase):
    """The bytes of one shard: from the first record start >= shard.start to the first one >= shard.end.

    `prefix` comes first when the range does not start at 0, `suffix` last when it ends before the end of the
    input (an XML shard's root element). `read_seconds` is the time spent reading (decompressing); `position`
    counts the shard's own bytes delivered."""

    error: str | None = None  # the interface of dump_io.RecoveringReader (a shard is never partly read)
    recovered = 0

    def __init__(self, stream: BinaryIO, start: int, end: int, size: int, boundary: re.Pattern[bytes],
                 prefix: bytes = b"", suffix: bytes = b"") -> None:
        self.stream = stream
        self.begin = align(stream, start, size, boundary)
        self.stop = max(self.begin, align(stream, end, size, boundary))
        stream.seek(self.begin)
        self.position = 0
        self.read_seconds = 0.0
        self._extra = [prefix if self.begin > 0 else b"", b"", suffix if self.stop < size else b""]
        self._left = self.stop - self.begin

    @property
    def length(self) -> int:
        return self.stop - self.begin

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._extra[0]:
            return self._give(buffer, 0)
        if self._left > 0:
            t0 = time.perf_counter()
            with memoryview(buffer) as view:
                n = self.stream.readinto(view[: min(len(view), self._left)])  # type: ignore[attr-defined]
            self.read_seconds += time.perf_counter() - t0
            if not n:
                raise EOFError(f"the input ended {self._left} bytes before the end of its shard")
            self._left -= n
            self.position += n
            return n
        return self._give(buffer, 2)

    def _give(self, buffer: bytearray | memoryview, which: int) -> int:
        data = self._extra[which]
        n = min(len(buffer), len(data))
        buffer[:n] = data[:n]
        self._extra[which] = data[n:]
        return n

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            super().close()


def open_shard(path: str | os.PathLike, shard: Shard, size: int, index_file: str | None,
               boundary: re.Pattern[bytes] = LINE_START, threads: int = 1, prefix: bytes = b"",
               suffix: bytes = b"") -> RangeReader:
    return RangeReader(open_seekable(path, index_file, threads), shard.start, shard.end, size, boundary,
                       prefix, suffix)


def count_lines(path: str | os.PathLike, shard: Shard, size: int, index_file: str | None) -> int:
    """Lines that start inside the shard (a last line without a newline counts)."""
    with open_shard(path, shard, size, index_file) as reader:
        lines, last = 0, b"\n"
        while block := reader.read(8 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def failure_hook(stage: str, shard_index: int, attempt: int) -> None:
    """Raise when JAKET_FAIL_SHARD names this shard for this attempt (a test hook; see the module doc)."""
    spec = os.environ.get(FAIL_HOOK, "").strip()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        target, _, times = part.partition(":")
        name, _, index = target.rpartition("/")
        if (name or "wikidata") == stage and int(index) == shard_index and (not times or attempt <= int(times)):
            raise RuntimeError(f"{FAIL_HOOK} test hook: {stage} shard {shard_index} fails on attempt {attempt}")


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (VmHWM), MiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def stage_files(stage_dir: str | os.PathLike, name: str) -> list[Path]:
    """`name.parquet` of a stage: its own file, or the union of its shards' files in shard order."""
    stage_dir = Path(stage_dir)
    whole = stage_dir / f"{name}.parquet"
    if whole.is_file():
        return [whole]
    return sorted(stage_dir.glob(f"shard-[0-9][0-9][0-9][0-9]/{name}.parquet"))
