"""Sentence splitting and passage packing, shared by the `wikipedia` and `corpus` stages.

Choice (measured in benchmarks/bench_sentences.py, numbers in benchmarks/README.md): the rule splitter
`split_sentences` is the default. It ends a sentence at `.`, `!`, `?` (plus closing quotes/brackets) followed
by whitespace and an upper-case letter, digit or opening quote, and at every newline; it does not end one after
a known abbreviation ("Dr.", "e.g."), a single initial ("J. R. R.") or a dotted acronym ("U.S."). spaCy's blank
English + `sentencizer` (`spacy_sentences`) is kept as the alternative.

Both never end a sentence inside a protected span (a link or mention), so mentions do not cross passages.
Spans are (start, end) code-point offsets into the text, end exclusive, without surrounding whitespace.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

Span = tuple[int, int]
Splitter = Callable[[str, int, int], list[Span]]

DEFAULT_MAX_PASSAGE_CHARS = 600
ABBREVIATIONS = frozenset("""
mr mrs ms dr prof st jr sr mt ft gen col lt sgt capt cmdr adm gov rev hon pres sen rep fr br sr messrs mme mlle
inc ltd co corp bros dept univ assn est no nos vol vols pp p ch fig figs ed eds approx ca c fl b d cf al vs v
etc e.g i.e viz jan feb mar apr jun jul aug sep sept oct nov dec op nr repr ave blvd rd hwy
""".split())
_CANDIDATE = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019\u00bb)\]]*(?=\s)|\n")
_NEXT_STARTS = re.compile(r"\s+[\"'\u201c\u2018\u00ab(\[]*[A-Z0-9\u00c0-\u00de\u0391-\u03a9\u0400-\u042f]")
_WORD_BEFORE = re.compile(r"(\S+)$")
_INITIAL_OR_ACRONYM = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")
_SPACE_RUN = re.compile(r"\s+")


def _trimmed(text: str, lo: int, hi: int) -> Span | None:
    while lo < hi and text[lo].isspace():
        lo += 1
    while hi > lo and text[hi - 1].isspace():
        hi -= 1
    return (lo, hi) if lo < hi else None


def split_sentences(text: str, lo: int = 0, hi: int | None = None) -> list[Span]:
    """Rule-based sentence spans of text[lo:hi]."""
    hi = len(text) if hi is None else hi
    spans: list[Span] = []
    start = lo
    for m in _CANDIDATE.finditer(text, lo, hi):
        end = m.end()
        if m.group(0) != "\n":
            if not _NEXT_STARTS.match(text, end, hi):
                continue
            if m.group(0).startswith(".") and not m.group(0).startswith(".."):
                word = _WORD_BEFORE.search(text, start, m.start())
                if word:
                    w = word.group(1).lstrip("(\"'\u201c\u2018[").rsplit("-", 1)[-1]
                    if w.lower() in ABBREVIATIONS or _INITIAL_OR_ACRONYM.fullmatch(w):
                        continue
        span = _trimmed(text, start, end)
        if span:
            spans.append(span)
        start = end
    span = _trimmed(text, start, hi)
    if span:
        spans.append(span)
    return spans


@lru_cache(maxsize=1)
def _sentencizer():  # noqa: ANN202 - spaCy Language, imported lazily
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def spacy_sentences(text: str, lo: int = 0, hi: int | None = None) -> list[Span]:
    """spaCy blank English + sentencizer; newlines end sentences too (like the rule splitter)."""
    hi = len(text) if hi is None else hi
    nlp = _sentencizer()
    spans: list[Span] = []
    line_start = lo
    while line_start < hi:
        line_end = text.find("\n", line_start, hi)
        line_end = hi if line_end < 0 else line_end
        if text[line_start:line_end].strip():
            doc = nlp(text[line_start:line_end])
            for sent in doc.sents:
                span = _trimmed(text, line_start + sent.start_char, line_start + sent.end_char)
                if span:
                    spans.append(span)
        line_start = line_end + 1
    return spans


def merge_protected(sentences: list[Span], protected: Sequence[Span]) -> list[Span]:
    """Join consecutive sentences where a boundary would fall inside a protected span (sorted by start)."""
    if not protected or len(sentences) < 2:
        return sentences
    starts = [p[0] for p in protected]
    merged = [sentences[0]]
    for sent in sentences[1:]:
        if _inside(protected, starts, merged[-1][1]):
            merged[-1] = (merged[-1][0], sent[1])
        else:
            merged.append(sent)
    return merged


def _inside(protected: Sequence[Span], starts: list[int], pos: int) -> bool:
    """Whether a cut at pos would split a protected span (spans sorted by start, not nested)."""
    i = bisect.bisect_left(starts, pos) - 1
    return i >= 0 and protected[i][1] > pos


def _hard_split(text: str, span: Span, max_chars: int, protected: Sequence[Span]) -> list[Span]:
    """Cut an over-long sentence at whitespace outside protected spans (at max_chars if there is none)."""
    starts = [p[0] for p in protected]
    out: list[Span] = []
    lo, hi = span
    while hi - lo > max_chars:
        limit = lo + max_chars
        cut = -1
        for ws in reversed(list(_SPACE_RUN.finditer(text, lo + 1, limit))):
            if not _inside(protected, starts, ws.start()):
                cut = ws.start()
                break
        cut = limit if cut <= lo else cut
        piece = _trimmed(text, lo, cut)
        if piece:
            out.append(piece)
        lo = cut
        while lo < hi and text[lo].isspace():
            lo += 1
    piece = _trimmed(text, lo, hi)
    if piece:
        out.append(piece)
    return out


def paragraphs(text: str) -> list[Span]:
    """Spans of the blank-line separated paragraphs (trimmed, non-empty)."""
    out: list[Span] = []
    start = 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        span = _trimmed(text, start, m.start())
        if span:
            out.append(span)
        start = m.end()
    span = _trimmed(text, start, len(text))
    if span:
        out.append(span)
    return out


def make_passages(text: str, max_chars: int = DEFAULT_MAX_PASSAGE_CHARS, protected: Sequence[Span] = (),
                  splitter: Splitter = split_sentences) -> list[Span]:
    """Passages: whole sentences packed greedily up to max_chars, never across a paragraph break.

    A sentence longer than max_chars is cut at whitespace; only such a cut can split a protected span.
    """
    protected = sorted(protected)
    passages: list[Span] = []
    for p_lo, p_hi in paragraphs(text):
        sentences = merge_protected(splitter(text, p_lo, p_hi), _within(protected, p_lo, p_hi))
        cur: Span | None = None
        for sent in sentences:
            pieces = [sent] if sent[1] - sent[0] <= max_chars else _hard_split(text, sent, max_chars, protected)
            for piece in pieces:
                if cur is not None and piece[1] - cur[0] <= max_chars:
                    cur = (cur[0], piece[1])
                else:
                    if cur is not None:
                        passages.append(cur)
                    cur = piece
        if cur is not None:
            passages.append(cur)
    return passages


def _within(protected: list[Span], lo: int, hi: int) -> list[Span]:
    i = bisect.bisect_left(protected, (lo, lo))
    j = bisect.bisect_left(protected, (hi, hi))
    return protected[i:j]


def locate(passages: Sequence[Span], start: int, end: int) -> int | None:
    """Index of the passage holding [start, end) entirely; None when the span crosses a passage edge."""
    i = bisect.bisect_right(passages, (start, float("inf"))) - 1
    if i >= 0 and passages[i][0] <= start and end <= passages[i][1]:
        return i
    return None
