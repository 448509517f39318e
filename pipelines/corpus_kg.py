"""A pretraining KG around the real linked corpora in ../shared/data/corpus (T-REx shape), for `jaket-train`.

    text       LAMA T-REx evidence sentences (117k, two linked mentions each) + the T-REx abstract sample
    triples    the facts aligned to that text + Wiki27K (train/valid/test), all Wikidata QID triples,
               minus every triple joining a FewRel val_wiki (head, tail) pair: relation prediction (L_r) on
               exactly those pairs would teach the evaluation's labels
    entities   every QID of the triples and mentions; text = "label, description" from the offline label
               tables (qid_label_description.tsv.gz, Wiki27K), the label alone, or the most frequent
               surface form of its mentions (counted in `entities_text_from_surface`)

No categories: the P31 classes of these entities are not available offline (L_c is then off). The rows go
through the TSV importer (`build_from_tsv` with `corpus=`), so the store is an ordinary custom-KG store.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipelines.eval_kgs import (
    QID_RE,
    clean_field,
    entity_text,
    open_text,
    read_labels,
    read_qid_triples,
    relation_names,
    relation_table_rows,
    short_id,
    trex_triples,
    write_tsvs,
)


def corpus_files(data: Path) -> list[Path]:
    files = [data / "corpus" / "lama" / "lama_trex_sentences.jsonl.gz", data / "corpus" / "sample.jsonl"]
    return [f for f in files if f.exists()]


def fewrel_pairs(data: Path) -> set[frozenset]:
    path = data / "eval" / "fewrel" / "val_wiki.json"
    if not path.exists():
        return set()
    return {frozenset((inst["h"][1], inst["t"][1])) for insts in json.loads(path.read_text()).values()
            for inst in insts}


def mention_surfaces(path: Path) -> dict[str, Counter]:
    """QID -> Counter of the surface forms it is mentioned by in a T-REx-shaped file."""
    out: dict[str, Counter] = {}
    with open_text(path) as handle:
        for line in handle:
            for ent in json.loads(line).get("entities") or []:
                qid = short_id(str(ent.get("uri", "")))
                if QID_RE.match(qid) and qid.startswith("Q") and ent.get("surfaceform"):
                    out.setdefault(qid, Counter())[ent["surfaceform"]] += 1
    return out


def pretraining_rows(data: Path) -> tuple[dict[str, list[tuple]], dict[str, int]]:
    data = Path(data)
    surfaces: dict[str, Counter] = {}
    triples: set[tuple[str, str, str]] = set()
    for f in corpus_files(data):
        for qid, counts in mention_surfaces(f).items():
            surfaces.setdefault(qid, Counter()).update(counts)
        triples.update(trex_triples(f))
    for split in ("train", "valid", "test"):
        path = data / "labels" / "wiki27k" / f"{split}.txt"
        if path.exists():
            triples.update(read_qid_triples(path))
    excluded = fewrel_pairs(data)
    kept = {t for t in triples if t[0] != t[2] and frozenset((t[0], t[2])) not in excluded}
    qids = sorted(set(surfaces) | {x for h, _, t in kept for x in (h, t)}, key=lambda q: int(q[1:]))
    labels = read_labels(data / "labels" / "qid_label_description.tsv.gz", set(qids))
    wiki27k = data / "labels" / "wiki27k"
    extra_label = _two_columns(wiki27k / "entity2label.txt")
    extra_desc = _two_columns(wiki27k / "entity2definition.txt")
    stats = Counter()
    entities = []
    for q in qids:
        label, desc = labels.get(q, ("", ""))
        label, desc = label or extra_label.get(q, ""), desc or extra_desc.get(q, "")
        if not label and q in surfaces:
            label = surfaces[q].most_common(1)[0][0]
            stats["entities_text_from_surface"] += 1
        stats["entities_with_description"] += bool(desc)
        entities.append((q, clean_field(label), entity_text(label, desc) if desc else "", ""))
    stats.update(triples_seen=len(triples), triples_fewrel_pairs_excluded=len(triples) - len(kept))
    return ({"entities": entities, "triples": sorted(kept),
             "relations": relation_table_rows((r for _, r, _ in kept), relation_names(data))}, dict(stats))


def _two_columns(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as handle:
        return dict(line.rstrip("\n").split("\t", 1) for line in handle if "\t" in line)


def build_corpus_kg(data: str | Path, out: str | Path) -> dict:
    """Write the TSVs beside `out` and import them with the linked text; returns the counts."""
    from flows.import_tsv import build_from_tsv

    data, out = Path(data), Path(out)
    rows, stats = pretraining_rows(data)
    paths = write_tsvs(rows, Path(f"{out}.tsv"))
    result = build_from_tsv(out, paths["entities"], paths["triples"], paths["relations"], header=True,
                            corpus=corpus_files(data))
    return {**result, **stats}
