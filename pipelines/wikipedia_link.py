"""Pass 3 of the `wikipedia` stage: alias mentions (and NER candidates) per article (pipelines.linking).

Split in three so that the per-article work can run in shards (article sequence ranges) on several workers:
`prepare_linking` writes the inputs sorted by article (each article's entity names, its anchors), `link_articles`
links the articles of one range (or all), `finish_linking` joins the ranges' outputs. Every article is linked
independently of the others, so the ranges' outputs concatenated in order equal one pass over all articles.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from pipelines.linking import AliasLinker, NerCandidates, entity_names, resolve_ner
from pipelines.text_stage import GroupCursor, RowWriter, iter_groups

EXTRA = pa.schema([("seq", pa.int64()), ("page_id", pa.int64()), ("idx", pa.int32()), ("qid", pa.string()),
                   ("char_start", pa.int32()), ("char_end", pa.int32()), ("source", pa.string())])
NER_CAND = pa.schema([("seq", pa.int64()), ("page_id", pa.int64()), ("idx", pa.int32()),
                      ("char_start", pa.int32()), ("char_end", pa.int32()), ("name_lower", pa.string())])
_INPUTS = ("passages", "anchors_sorted", "page_names")


def prepare_linking(tmp: Path, items_path: list[Path], aliases_path: list[Path]) -> None:
    """page_names.parquet (each article's entities' names) and anchors_sorted.parquet, sorted by article."""
    names = entity_names(items_path, aliases_path)
    entities = pl.concat([
        pl.scan_parquet(tmp / "anchors.parquet").select("seq", "qid"),
        pl.scan_parquet(tmp / "docs_resolved.parquet").filter(pl.col("qid").is_not_null()).select("seq", "qid"),
    ]).unique()
    entities.join(names, on="qid", how="inner").sort("seq", "qid", "name").sink_parquet(tmp / "page_names.parquet")
    pl.scan_parquet(tmp / "anchors.parquet").sort("seq", "idx", "char_start").sink_parquet(tmp / "anchors_sorted.parquet")


def link_articles(tmp: Path, out: Path, seq_range: tuple[int, int] | None, alias_linking: bool,
                  ner: bool) -> dict[str, int]:
    """Link the articles with lo <= seq < hi (all when None) into out/alias.parquet and
    out/ner_candidates.parquet; returns their row counts."""
    out.mkdir(parents=True, exist_ok=True)
    sources = {name: tmp / f"{name}.parquet" for name in _INPUTS}
    if seq_range is not None:
        lo, hi = seq_range
        for name, path in list(sources.items()):  # the files are sorted by seq: row groups outside are skipped
            sources[name] = out / f"range_{name}.parquet"
            pl.scan_parquet(path).filter((pl.col("seq") >= lo) & (pl.col("seq") < hi)).sink_parquet(sources[name])
    anchors = GroupCursor(iter_groups(sources["anchors_sorted"], "seq", ["idx", "char_start", "char_end"]),
                          ["idx", "char_start", "char_end"])
    page_names = GroupCursor(iter_groups(sources["page_names"], "seq", ["qid", "name"]), ["qid", "name"])
    linker = AliasLinker() if alias_linking else None
    recognizer = NerCandidates() if ner else None
    out_alias = RowWriter(out / "alias.parquet", EXTRA)
    out_ner = RowWriter(out / "ner_candidates.parquet", NER_CAND)
    with out_alias, out_ner:
        for seq, rows in iter_groups(sources["passages"], "seq", ["page_id", "idx", "text"]):
            page_id, texts = rows["page_id"][0], rows["text"]
            taken: list[list[tuple[int, int]]] = [[] for _ in texts]
            group = anchors.take(seq)
            for idx, s, e in zip(group["idx"], group["char_start"], group["char_end"], strict=True):
                taken[idx].append((s, e))
            if linker is not None:
                by_qid: dict[str, list[str]] = {}
                group = page_names.take(seq)
                for qid, name in zip(group["qid"], group["name"], strict=True):
                    by_qid.setdefault(qid, []).append(name)
                for idx, qid, s, e in linker.link(texts, taken, by_qid):
                    out_alias.add(seq, page_id, idx, qid, s, e, "alias")
                    taken[idx].append((s, e))
            if recognizer is not None:
                for idx, s, e, text in recognizer.spans(texts, taken):
                    out_ner.add(seq, page_id, idx, s, e, text)
    return {"mentions_alias": out_alias.count, "ner_candidates": out_ner.count}


def finish_linking(tmp: Path, parts: list[Path], items_path: list[Path], aliases_path: list[Path], ner: bool,
                   stats: dict) -> list[Path]:
    """The Parquet files of extra mentions from the ranges' outputs `parts` (in article order)."""
    stats["mentions_alias"] = sum(pl.scan_parquet(p / "alias.parquet").select(pl.len()).collect().item()
                                  for p in parts)
    files = [p / "alias.parquet" for p in parts]
    if ner:
        candidates = pl.concat([pl.scan_parquet(p / "ner_candidates.parquet") for p in parts])
        resolve_ner(candidates, entity_names(items_path, aliases_path)).with_columns(
            pl.lit("ner").alias("source")).select(EXTRA.names).sink_parquet(tmp / "ner.parquet")
        stats["ner_candidates"] = candidates.select(pl.len()).collect().item()
        stats["mentions_ner"] = pl.scan_parquet(tmp / "ner.parquet").select(pl.len()).collect().item()
        files.append(tmp / "ner.parquet")
    return files
