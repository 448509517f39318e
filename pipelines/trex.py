"""Stage `corpus`: already-linked text in the T-REx JSON shape -> documents, passages, mentions (source='corpus').

Input: JSON lines (plain/.gz/.bz2, streamed line by line: constant memory) or one JSON array (detected by a
leading `[`; loaded whole, as T-REx ships it in arrays of < 100 MB). Each record has `text` and
`entities[{uri, boundaries: [start, end], surfaceform}]`, optionally `docid`, `title`, `uri` (the document's
subject). `uri` is a QID or an entity URL (`http://www.wikidata.org/entity/Q42` -> Q42); anything else
is not an entity: typed literals (`2010-01-01T00:00:00Z^^xsd:dateTime`, `+2^^xsd:decimal`) are only counted
(`literal_values`), other non-QIDs (`None`) are rejected ('invalid_uri').

Offsets: when text[start:end] is not the surface form, the nearest occurrence of the surface form within
`window` characters of the given start is taken instead (counted as `offsets_repaired`); if there is none the
mention is rejected ('offset_mismatch', dropped). Overlapping mentions: the longer one is kept (then the
earlier), the others are counted (`overlapping_dropped`); exact duplicates are merged (`duplicates`).
Passages come from the same splitter as the wikipedia stage, never cutting a mention; offsets are re-based
to their passage.

documents.page_id is the record's 0-based position in the input (docids repeat or are not numeric); the
original id is kept in documents.docid.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa

from pipelines.dump_io import READ_BUFFER, open_recovering, require_file
from pipelines.progress import progress
from pipelines.sentences import DEFAULT_MAX_PASSAGE_CHARS, locate, make_passages
from pipelines.text_stage import (
    MENTIONS,
    PASSAGES,
    Rejects,
    ResilientLines,
    RowWriter,
    finish_stage,
    prepare_out_dir,
)

STAGE = "corpus"
SOURCE = "corpus"
DEFAULT_WINDOW = 50
TREX_DOCUMENTS = pa.schema([("page_id", pa.int64()), ("title", pa.string()), ("qid", pa.string()),
                            ("docid", pa.string())])
_QID = re.compile(r"(?:^|/)(Q[1-9][0-9]*)$")


def to_qid(uri: object) -> str | None:
    """'Q42' or '.../entity/Q42' -> 'Q42'; None for anything else (None, 'None', literals)."""
    if not isinstance(uri, str):
        return None
    m = _QID.search(uri.strip())
    return m.group(1) if m else None


def repair_offsets(text: str, surface: str, start: int, end: int, window: int = DEFAULT_WINDOW) -> int | None:
    """Start of the occurrence of `surface` nearest to `start`, among those starting within +-window
    characters of it; None if there is none. (`end` is not trusted: shifted spans keep their length only
    sometimes.)"""
    lo = max(0, start - window)
    hi = min(len(text), start + window + len(surface))
    best: int | None = None
    pos = text.find(surface, lo, hi)
    while pos >= 0:
        if best is None or abs(pos - start) < abs(best - start):
            best = pos
        pos = text.find(surface, pos + 1, hi)
    return best


def iter_records(path: Path) -> Iterator[tuple[int, object]]:
    """(line or array index, parsed record or the bad bytes) for JSON lines or one JSON array."""
    with io.BufferedReader(open_recovering(path), READ_BUFFER) as reader:
        head = reader.peek(64)[:64].lstrip()
    if head.startswith(b"["):
        raw = open_recovering(path)
        with io.BufferedReader(raw, READ_BUFFER) as reader:
            data = reader.read()
        try:
            records = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a valid JSON array ({raw.error or exc})") from exc
        yield from enumerate(records if isinstance(records, list) else [records], start=1)
        return
    lines = ResilientLines(path)
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield n, orjson.loads(line)
        except orjson.JSONDecodeError:
            yield n, line
    if lines.error:
        yield -1, lines.error


class _Corpus:
    def __init__(self, out: Path, source: str, max_chars: int, window: int) -> None:
        self.docs = RowWriter(out / "documents.parquet", TREX_DOCUMENTS)
        self.passages = RowWriter(out / "passages.parquet", PASSAGES)
        self.mentions = RowWriter(out / "mentions.parquet", MENTIONS)
        self.rejects = Rejects(out / "rejects.parquet", STAGE, source)
        self.max_chars, self.window = max_chars, window
        self.stats = {k: 0 for k in ("records", "documents", "passages", "entities", "mentions", "offsets_exact",
                                     "offsets_repaired", "offset_mismatch", "invalid_uri", "literal_values", "duplicates",
                                     "overlapping_dropped", "mentions_crossing_passage")}
        self.truncated = False

    def close(self) -> None:
        for writer in (self.docs, self.passages, self.mentions, self.rejects):
            writer.close()

    def record(self, n: int, rec: object) -> None:
        self.stats["records"] += 1
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            reason = "bad_json" if isinstance(rec, bytes) else "missing_text"
            raw = rec.decode("utf-8", "replace") if isinstance(rec, bytes) else orjson.dumps(rec).decode()
            self.rejects.reject(f"record {n}", reason, raw, "dropped")
            return
        text = rec["text"]
        page_id = self.stats["documents"]
        docid = rec.get("docid")
        where = f"record {n} docid {docid}" if docid is not None else f"record {n}"
        spans = self._mentions(text, rec.get("entities") or [], where)
        self.docs.add(page_id, rec.get("title"), to_qid(rec.get("uri")), None if docid is None else str(docid))
        self.stats["documents"] += 1
        passages = make_passages(text, self.max_chars, [(s, e) for s, e, _ in spans])
        for idx, (s, e) in enumerate(passages):
            self.passages.add(page_id, idx, text[s:e], s)
        self.stats["passages"] += len(passages)
        for s, e, qid in spans:
            idx = locate(passages, s, e)
            if idx is None:
                self.stats["mentions_crossing_passage"] += 1
                self.rejects.reject(f"{where} {s}:{e}", "mention_crosses_passage", text[s:e], "dropped")
                continue
            base = passages[idx][0]
            self.mentions.add(page_id, idx, qid, s - base, e - base, "corpus")
            self.stats["mentions"] += 1

    def _mentions(self, text: str, entities: list, where: str) -> list[tuple[int, int, str]]:
        found: dict[tuple[int, int, str], None] = {}
        for ent in entities:
            self.stats["entities"] += 1
            ent = ent if isinstance(ent, dict) else {}
            qid, surface, bounds = to_qid(ent.get("uri")), ent.get("surfaceform"), ent.get("boundaries")
            if qid is None and "^^" in str(ent.get("uri")):  # a typed literal (date, quantity): not an entity
                self.stats["literal_values"] += 1
                continue
            if qid is None:
                self.stats["invalid_uri"] += 1
                self.rejects.reject(where, "invalid_uri", ent.get("uri"), "dropped")
                continue
            if not isinstance(surface, str) or not surface or not isinstance(bounds, (list, tuple)) \
                    or len(bounds) != 2 or not all(isinstance(b, int) for b in bounds):
                self.stats["offset_mismatch"] += 1
                self.rejects.reject(where, "offset_mismatch", orjson.dumps(ent).decode(), "dropped")
                continue
            start, end = bounds
            if 0 <= start and text[start:end] == surface:
                self.stats["offsets_exact"] += 1
            else:
                pos = repair_offsets(text, surface, start, end, self.window)
                if pos is None:
                    self.stats["offset_mismatch"] += 1
                    self.rejects.reject(f"{where} {start}:{end}", "offset_mismatch",
                                        f"{surface!r} (text there: {text[max(start, 0):max(end, 0)]!r})", "dropped")
                    continue
                self.stats["offsets_repaired"] += 1
                start, end = pos, pos + len(surface)
            if (start, end, qid) in found:
                self.stats["duplicates"] += 1
            found[(start, end, qid)] = None
        chosen: list[tuple[int, int, str]] = []
        for s, e, qid in sorted(found, key=lambda m: (m[0] - m[1], m[0])):
            if any(s < ce and cs < e for cs, ce, _ in chosen):
                self.stats["overlapping_dropped"] += 1
                continue
            chosen.append((s, e, qid))
        return sorted(chosen)


def parse_trex(path: str | Path, out_dir: str | Path, *, max_passage_chars: int = DEFAULT_MAX_PASSAGE_CHARS,
               window: int = DEFAULT_WINDOW, max_docs: int | None = None) -> dict:
    """Run the stage (see the module docstring); returns (and writes to stats.json) its counts.
    `max_docs` stops after that many records (for tests and quick looks)."""
    t0 = time.perf_counter()
    path = require_file(path)
    out, tmp = prepare_out_dir(out_dir)
    corpus = _Corpus(out, path.name, max_passage_chars, window)
    try:
        for n, rec in progress(iter_records(path), desc=f"corpus {path.name}: records", unit="rec"):
            if n == -1:
                corpus.truncated = True
                corpus.rejects.reject(f"after record {corpus.stats['records']}", "truncated_input", rec, "kept")
                break
            if max_docs is not None and corpus.stats["records"] >= max_docs:
                break
            corpus.record(n, rec)
    finally:
        corpus.close()
    stats = dict(corpus.stats, truncated=corpus.truncated, rejects_by_reason=dict(sorted(
        corpus.rejects.by_reason.items())), seconds=round(time.perf_counter() - t0, 3))
    return finish_stage(out, tmp, stats)
