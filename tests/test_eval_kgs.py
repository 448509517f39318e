"""Evaluation KGs: pure transforms, the 50% drop, and the import of each eval KG on a slice of the real files."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from kg_store.store import KGStore
from pipelines.eval_kgs import (
    METAQA_RELATIONS,
    build_eval_kg,
    cache_key,
    coverage,
    drop_half,
    entity_text,
    parse_metaqa_kb,
    short_id,
)


def test_drop_half_is_exact_distinct_and_reproducible():
    triples = [(h, "r", t) for h in range(51) for t in range(3)] + [(0, "r", 0)]   # one duplicate
    a, b = drop_half(triples, seed=3), drop_half(triples, seed=3)
    assert a == b and len(a) == round(153 / 2) and len(set(a)) == len(a)
    assert set(a) <= set(triples) and drop_half(triples, seed=4) != a


def test_parse_metaqa_kb_names_with_bars_and_small_helpers():
    lines = ["Kismet|directed_by|William Dieterle\n", "A|B|has_genre|Drama\n", "\n", "x|unknown|y|z\n"]
    assert list(parse_metaqa_kb(lines, METAQA_RELATIONS)) == [
        ("Kismet", "directed_by", "William Dieterle"), ("A|B", "has_genre", "Drama")]
    assert entity_text("Paris", "capital of France") == "Paris, capital of France"
    assert entity_text("Paris", "") == "Paris" and entity_text("", "") == ""
    assert short_id("http://www.wikidata.org/entity/Q42") == "Q42" and short_id("P31") == "P31"


def _head(src: Path, dst: Path, n: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt", encoding="utf-8") as f, opener(dst, "wt", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i >= n:
                break
            g.write(line)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


@pytest.fixture(scope="module")
def sliced(shared_data, tmp_path_factory):
    """A data folder with slices of the real eval files (labels and types linked whole)."""
    root = tmp_path_factory.mktemp("data")
    m = shared_data / "eval" / "metaqa"
    _head(m / "entity2text.txt", root / "eval/metaqa/entity2text.txt", 300)
    _head(m / "kb_reconstructed_from_keallm_ids.txt.gz", root / "eval/metaqa/kb_reconstructed_from_keallm_ids.txt.gz",
          1001)
    c = shared_data / "eval" / "codex"
    for split, n in (("train", 1500), ("valid", 100), ("test", 100)):
        _head(c / "triples/codex-m" / f"{split}.txt", root / "eval/codex/triples/codex-m" / f"{split}.txt", n)
    for rel in ("types/entity2types.json", "relations/en/relations.json"):
        _link(c / rel, root / "eval/codex" / rel)
    _link(shared_data / "labels/qid_label_description.tsv.gz", root / "labels/qid_label_description.tsv.gz")
    _link(shared_data / "eval/fewrel/pid2name.json", root / "eval/fewrel/pid2name.json")
    val = json.loads((shared_data / "eval/fewrel/val_wiki.json").read_text())
    (root / "eval/fewrel/val_wiki.json").write_text(json.dumps({r: v[:10] for r, v in val.items()}))
    for f in ("train.txt", "relation2label.json"):
        _link(shared_data / "labels/wiki27k" / f, root / "labels/wiki27k" / f)
    return root


def test_metaqa_and_half(sliced, tmp_path):
    full = build_eval_kg("metaqa", sliced, tmp_path)
    half = build_eval_kg("metaqa-half", sliced, tmp_path)
    with KGStore(full) as a, KGStore(half) as b:
        assert a.num_entities == b.num_entities >= 300 and a.num_relations == b.num_relations == 9
        n = a.counts()["triples"]
        assert 900 < n <= 1001 and b.counts()["triples"] == round(n / 2)
        assert a.qid_to_id() == b.qid_to_id()
        assert a.scalar("SELECT count(*) FROM rejects WHERE reason LIKE 'dangling%'") == 0
        assert a.scalar("SELECT label FROM entities WHERE qid = 'Kismet'") == "Kismet"
    # cached by input checksum: a second call does not rebuild
    mtime = full.stat().st_mtime_ns
    assert build_eval_kg("metaqa", sliced, tmp_path) == full and full.stat().st_mtime_ns == mtime
    assert cache_key("metaqa-half", sliced, seed=1) != cache_key("metaqa-half", sliced, seed=0)


def test_codex_m_slice(sliced, tmp_path):
    path = build_eval_kg("codex-m", sliced, tmp_path)
    cov = coverage(path)
    with KGStore(path) as kg:
        assert kg.counts()["triples"] > 1500 and kg.num_relations > 10
        assert kg.num_categories > 5   # most frequent CoDEx type per entity
        row = kg.query("SELECT label, description, desc_mention_start FROM entities "
                       "WHERE desc_source = 'custom' LIMIT 1")[0]
        assert row[1].startswith(row[0] + ", ") and row[2] == 0        # "label, description"
        assert kg.scalar("SELECT count(*) FROM entities WHERE label IS NULL") == cov["entities"] - cov["with_label"]
    assert 0 < cov["with_description"] <= cov["with_label"] < cov["entities"] == cov["with_triples"]


def test_fewrel_slice(sliced, tmp_path):
    path = build_eval_kg("fewrel", sliced, tmp_path)
    val = json.loads((sliced / "eval/fewrel/val_wiki.json").read_text())
    pairs = {frozenset((i["h"][1], i["t"][1])) for v in val.values() for i in v}
    qids = {q for p in pairs for q in p}
    cov = coverage(path, qids)
    assert cov["entities"] == len(qids) and cov["with_label"] == len(qids)   # surface forms as fallback
    with KGStore(path) as kg:
        q = kg.entity_qids()
        joined = {frozenset((q[h], q[t])) for h, _, t in kg.triples().tolist()}
    assert not joined & pairs            # no edge joins a FewRel (head, tail) pair
