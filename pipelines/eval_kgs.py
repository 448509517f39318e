"""Unseen evaluation KGs -> TSVs -> their own stores through `build_from_tsv` (never the pretraining store).

    metaqa       WikiMovies KB (kb_reconstructed_from_keallm_ids.txt.gz) with entity2text.txt names
    metaqa-half  the same entities, half of the distinct triples dropped (fixed seed)
    codex-m      CoDEx-M triples (all splits); categories from entity2types.json; labels and descriptions
                 from labels/qid_label_description.tsv.gz where known (else no text: the store falls back to
                 the QID, and the graph has to carry the entity)
    fewrel       a KG around FewRel val_wiki's head/tail entities: every QID triple available offline
                 (CoDEx S/M/L, Wiki27K, LAMA T-REx facts, the T-REx corpus sample) with at least one end
                 in FewRel, minus the triples joining a FewRel (head, tail) pair (the answer would sit on
                 an edge)

The conversions are pure functions (rows in, rows out); `build_eval_kg` writes TSVs, imports them and caches
the store under WORK/<name>-<checksum of the inputs and of the conversion>.duckdb, so a rerun is instant.
Entity text follows the Wikidata pipeline's rule: "label, description" so that the description mentions
the entity (its mention span is then found by the importer).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

VERSION = "1"   # bump when a conversion changes: the cache key includes it
KG_NAMES = ("metaqa", "metaqa-half", "codex-m", "fewrel")
QID_RE = re.compile(r"[QP]\d+$")


def open_text(path: Path) -> object:
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")


def clean_field(text: str | None) -> str:
    return " ".join((text or "").replace("\t", " ").split())


def entity_text(label: str | None, description: str | None) -> str:
    label, description = clean_field(label), clean_field(description)
    if label and description:
        return f"{label}, {description}"
    return label or description


def short_id(uri: str) -> str:
    """'http://www.wikidata.org/entity/Q42' or 'Q42' -> 'Q42'."""
    return uri.rsplit("/", 1)[-1]


# ---------------------------------------------------------------- MetaQA
def parse_metaqa_kb(lines: Iterable[str], relations: Iterable[str]) -> Iterator[tuple[str, str, str]]:
    """'head|relation|tail' lines -> triples. Names may contain '|': the relation field is found by name."""
    rels = set(relations)
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        parts = line.split("|")
        if len(parts) == 3:
            yield parts[0], parts[1], parts[2]
            continue
        for i in range(1, len(parts) - 1):
            if parts[i] in rels:
                yield "|".join(parts[:i]), parts[i], "|".join(parts[i + 1:])
                break


METAQA_RELATIONS = ("directed_by", "written_by", "starred_actors", "release_year", "in_language", "has_tags",
                    "has_genre", "has_imdb_votes", "has_imdb_rating")


def drop_half(triples: list[tuple], seed: int = 0, keep_fraction: float = 0.5) -> list[tuple]:
    """Keep exactly round(len * keep_fraction) of the DISTINCT triples, chosen by `seed`, in sorted order."""
    distinct = sorted(set(triples))
    keep = round(len(distinct) * keep_fraction)
    chosen = sorted(random.Random(seed).sample(range(len(distinct)), keep))
    return [distinct[i] for i in chosen]


def metaqa_rows(data: Path, half: bool = False, seed: int = 0) -> dict[str, list[tuple]]:
    root = data / "eval" / "metaqa"
    with open_text(root / "entity2text.txt") as handle:
        names = [line.rstrip("\n").split("\t", 1)[1] for line in handle if "\t" in line]
    with open_text(root / "kb_reconstructed_from_keallm_ids.txt.gz") as handle:
        triples = sorted(set(parse_metaqa_kb(handle, METAQA_RELATIONS)))
    known = set(names)
    names += sorted({x for h, _, t in triples for x in (h, t)} - known)   # none expected; never dangling
    if half:
        triples = drop_half(triples, seed)
    relations = [(r, r.replace("_", " "), "") for r in METAQA_RELATIONS]
    return {"entities": [(n, clean_field(n), "", "") for n in names], "triples": triples, "relations": relations}


# ---------------------------------------------------------------- shared QID helpers
def read_labels(path: Path, wanted: set[str] | None = None) -> dict[str, tuple[str, str]]:
    """qid -> (label, description) from qid_label_description.tsv.gz (header: qid label _ description _)."""
    out = {}
    with open_text(path) as handle:
        next(handle, None)
        for line in handle:
            f = line.rstrip("\n").split("\t")
            if len(f) >= 4 and (wanted is None or f[0] in wanted):
                out[f[0]] = (f[1], f[3])
    return out


def read_qid_triples(path: Path) -> Iterator[tuple[str, str, str]]:
    with open_text(path) as handle:
        for line in handle:
            f = line.split()
            if len(f) == 3 and QID_RE.match(f[0]) and QID_RE.match(f[2]) and f[1].startswith("P"):
                yield f[0], f[1], f[2]


def trex_triples(path: Path) -> Iterator[tuple[str, str, str]]:
    """(subject, predicate, object) QID triples of T-REx-shaped JSON lines."""
    with open_text(path) as handle:
        for line in handle:
            doc = json.loads(line)
            for t in doc.get("triples") or []:
                try:
                    s, p, o = (short_id(t[k]["uri"]) for k in ("subject", "predicate", "object"))
                except (KeyError, TypeError, AttributeError):
                    continue
                if QID_RE.match(s) and QID_RE.match(o) and p.startswith("P"):
                    yield s, p, o


def relation_names(data: Path) -> dict[str, tuple[str, str]]:
    """pid -> (label, description) from FewRel's pid2name, CoDEx's relations.json, Wiki27K's labels."""
    out: dict[str, tuple[str, str]] = {}
    p = data / "labels" / "wiki27k" / "relation2label.json"
    if p.exists():
        out.update({k: (v, "") for k, v in json.loads(p.read_text()).items()})
    p = data / "eval" / "fewrel" / "pid2name.json"
    if p.exists():
        out.update({k: (v[0], v[1] if len(v) > 1 else "") for k, v in json.loads(p.read_text()).items()})
    p = data / "eval" / "codex" / "relations" / "en" / "relations.json"
    if p.exists():
        out.update({k: (v.get("label", k), v.get("description", "")) for k, v in json.loads(p.read_text()).items()})
    return out


def relation_table_rows(pids: Iterable[str], names: dict[str, tuple[str, str]]) -> list[tuple[str, str, str]]:
    return [(p, clean_field(names.get(p, (p, ""))[0]) or p, clean_field(names.get(p, ("", ""))[1]))
            for p in sorted(set(pids))]


# ---------------------------------------------------------------- CoDEx-M
def most_frequent_type(types: list[str], counts: Counter) -> str:
    return min(types, key=lambda t: (-counts[t], t)) if types else ""


def codex_rows(data: Path, variant: str = "codex-m") -> dict[str, list[tuple]]:
    root = data / "eval" / "codex"
    triples = sorted({t for split in ("train", "valid", "test")
                      for t in read_qid_triples(root / "triples" / variant / f"{split}.txt")})
    qids = sorted({x for h, _, t in triples for x in (h, t)})
    types = json.loads((root / "types" / "entity2types.json").read_text())
    counts = Counter(t for q in qids for t in types.get(q, []))
    labels = read_labels(data / "labels" / "qid_label_description.tsv.gz", set(qids))
    entities = []
    for q in qids:
        label, desc = labels.get(q, ("", ""))
        entities.append((q, clean_field(label), entity_text(label, desc) if desc else "",
                         most_frequent_type(types.get(q, []), counts)))
    return {"entities": entities, "triples": triples,
            "relations": relation_table_rows((r for _, r, _ in triples), relation_names(data))}


# ---------------------------------------------------------------- FewRel
def fewrel_instances(path: Path) -> dict[str, list[dict]]:
    return json.loads(Path(path).read_text())


def fewrel_rows(data: Path) -> dict[str, list[tuple]]:
    val = fewrel_instances(data / "eval" / "fewrel" / "val_wiki.json")
    surface: dict[str, Counter] = {}
    pairs = set()
    for instances in val.values():
        for inst in instances:
            h, t = inst["h"], inst["t"]
            for e in (h, t):
                surface.setdefault(e[1], Counter())[e[0]] += 1
            pairs.add(frozenset((h[1], t[1])))
    fewrel = set(surface)
    sources = [data / "eval" / "codex" / "triples" / v / f"{s}.txt"
               for v in ("codex-s", "codex-m", "codex-l") for s in ("train", "valid", "test")]
    sources += [data / "labels" / "wiki27k" / f"{s}.txt" for s in ("train", "valid", "test")]
    triples: set[tuple[str, str, str]] = set()
    for src in sources:
        if src.exists():
            triples.update(t for t in read_qid_triples(src) if t[0] in fewrel or t[2] in fewrel)
    for src in (data / "corpus" / "lama" / "lama_trex_sentences.jsonl.gz", data / "corpus" / "sample.jsonl"):
        if src.exists():
            triples.update(t for t in trex_triples(src) if t[0] in fewrel or t[2] in fewrel)
    triples = {t for t in triples if t[0] != t[2] and frozenset((t[0], t[2])) not in pairs}
    qids = sorted(fewrel | {x for h, _, t in triples for x in (h, t)})
    labels = read_labels(data / "labels" / "qid_label_description.tsv.gz", set(qids))
    entities = []
    for q in qids:
        label, desc = labels.get(q, ("", ""))
        if not label and q in surface:   # FewRel's own (lower-cased) surface form
            label = surface[q].most_common(1)[0][0]
        entities.append((q, clean_field(label), entity_text(label, desc) if desc else "", ""))
    return {"entities": entities, "triples": sorted(triples),
            "relations": relation_table_rows((r for _, r, _ in triples), relation_names(data))}


# ---------------------------------------------------------------- build + cache
def inputs_of(name: str, data: Path) -> list[Path]:
    m, c, lab = data / "eval" / "metaqa", data / "eval" / "codex", data / "labels"
    if name in ("metaqa", "metaqa-half"):
        return [m / "entity2text.txt", m / "kb_reconstructed_from_keallm_ids.txt.gz"]
    if name == "codex-m":
        optional = [c / "relations" / "en" / "relations.json", lab / "wiki27k" / "relation2label.json",
                    data / "eval" / "fewrel" / "pid2name.json"]
        return [c / "triples" / "codex-m" / f"{s}.txt" for s in ("train", "valid", "test")] + [
            c / "types" / "entity2types.json", lab / "qid_label_description.tsv.gz"] + [
            f for f in optional if f.exists()]
    if name == "fewrel":
        files = [data / "eval" / "fewrel" / "val_wiki.json", data / "eval" / "fewrel" / "pid2name.json",
                 lab / "qid_label_description.tsv.gz", c / "relations" / "en" / "relations.json",
                 data / "corpus" / "lama" / "lama_trex_sentences.jsonl.gz", data / "corpus" / "sample.jsonl"]
        files += [c / "triples" / v / f"{s}.txt" for v in ("codex-s", "codex-m", "codex-l")
                  for s in ("train", "valid", "test")]
        files += [lab / "wiki27k" / f for f in ("train.txt", "valid.txt", "test.txt", "relation2label.json")]
        return [f for f in files if f.exists()]
    raise ValueError(f"unknown eval KG {name!r}; known: {', '.join(KG_NAMES)}")


def cache_key(name: str, data: Path, seed: int = 0) -> str:
    from pipelines.dump_io import file_checksum

    h = hashlib.sha1(f"{name}|{VERSION}|{seed}".encode())
    for f in inputs_of(name, data):
        h.update(f"{f.name}:{file_checksum(f)}".encode())
    return h.hexdigest()[:12]


def rows_for(name: str, data: Path, seed: int = 0) -> dict[str, list[tuple]]:
    if name == "metaqa":
        return metaqa_rows(data)
    if name == "metaqa-half":
        return metaqa_rows(data, half=True, seed=seed)
    if name == "codex-m":
        return codex_rows(data)
    if name == "fewrel":
        return fewrel_rows(data)
    raise ValueError(f"unknown eval KG {name!r}; known: {', '.join(KG_NAMES)}")


def write_tsvs(rows: dict[str, list[tuple]], folder: Path) -> dict[str, Path]:
    headers = {"entities": ("id", "label", "description", "category"), "triples": ("head", "relation", "tail"),
               "relations": ("id", "label", "description")}
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, header in headers.items():
        path = folder / f"{kind}.tsv"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\t".join(header) + "\n")
            for row in rows[kind]:
                handle.write("\t".join(clean_field(str(x)) for x in row) + "\n")
        paths[kind] = path
    return paths


def build_eval_kg(name: str, data: str | Path, work: str | Path = "kg_store/eval", seed: int = 0) -> Path:
    """The store of eval KG `name`, built once per input checksum; returns its path."""
    from flows.import_tsv import build_from_tsv

    data, work = Path(data), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / ".gitignore").exists():      # generated stores, TSVs and caches stay out of git
        (work / ".gitignore").write_text("*\n")
    key = cache_key(name, data, seed)
    out = work / f"{name}-{key}.duckdb"
    if out.exists():
        return out
    paths = write_tsvs(rows_for(name, data, seed), work / f"{name}-{key}.tsv")
    build_from_tsv(out, paths["entities"], paths["triples"], paths["relations"], header=True)
    return out


def coverage(store_path: str | Path, qids: Iterable[str] | None = None) -> dict[str, int]:
    """Entity text coverage of a store (or of the given qids inside it)."""
    from kg_store.store import KGStore

    with KGStore(store_path) as kg:
        kg.con.execute("CREATE OR REPLACE TEMP TABLE deg AS SELECT id, count(*) AS d FROM (SELECT head_id AS id "
                       "FROM triples UNION ALL SELECT tail_id FROM triples) GROUP BY id")
        base = ("SELECT count(*), count(label), count(*) FILTER (WHERE desc_source = 'custom'), "
                "count(*) FILTER (WHERE d.d > 0) FROM entities e LEFT JOIN deg d ON d.id = e.entity_id")
        if qids is None:
            row = kg.query(base)[0]
        else:
            row = kg.query(base + " WHERE e.qid IN (SELECT unnest(?::VARCHAR[]))", [sorted(set(qids))])[0]
    return dict(zip(("entities", "with_label", "with_description", "with_triples"), map(int, row), strict=True))
