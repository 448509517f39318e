"""Incremental updates: a store updated in place equals a from-scratch build of the new data up to id
assignment, unchanged ids are stable, new ids appended, removed entities kept as tombstones; the memory
refresh re-encodes only the changed rows. The dump path runs once through the `update-kg` flow (CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import torch
from click.testing import CliRunner

from kg_store import store
from pipelines.assemble import AssembleOptions, assemble
from pipelines.custom_kg import import_tsv
from pipelines.update import update_from_stages

pytest_plugins = ["tests.jaket_fixtures"]

S = pl.String
E_HEAD = "id\tlabel\tdescription\tcategory\n"
E_OLD = {
    "Q1": "Paris\tParis is the capital of France.\tcity",
    "Q2": "France\tFrance is a country in Europe.\tcountry",
    "Q3": "Berlin\tBerlin is the capital of Germany.\tcity",
    "Q4": "Germany\tGermany is a country in Europe.\tcountry",
    "Q5": "Lyon\tLyon is a city in France.\tcity",
    "Q6": "Oldtown\tOldtown was a village.\tcity",
}
T_OLD = [("Q1", "P17", "Q2"), ("Q1", "P1376", "Q2"), ("Q3", "P17", "Q4"), ("Q5", "P17", "Q2"), ("Q6", "P17", "Q4")]
CHANGED = {"Q3": "Berlin\tThe city of Berlin is the largest city of Germany.\tcity",       # description
           "Q7": "Munich\tMunich is a city in Bavaria, Germany.\tcity"}                   # new
T_CHANGED = [("Q1", "P17", "Q2"),                                                          # Q1 loses P1376
             ("Q7", "P17", "Q4"), ("Q7", "P131", "Q4")]                                    # new relation P131


def _tsv(path: Path, header: str, rows: list) -> Path:
    path.write_text(header + "".join(("\t".join(r) if isinstance(r, tuple) else r) + "\n" for r in rows))
    return path


def _import(path: Path, folder: Path, entities: dict, triples: list) -> Path:
    e = _tsv(folder / f"{path.stem}-E.tsv", E_HEAD, [f"{k}\t{v}" for k, v in entities.items()])
    t = _tsv(folder / f"{path.stem}-T.tsv", "head\trelation\ttail\n", triples)
    a = _tsv(folder / f"{path.stem}-A.tsv", "id\talias\n", [("Q1", "City of Light"), ("Q2", "French Republic")])
    con = store.create(path)
    import_tsv(con, e, t, aliases=a)
    con.close()
    return path


def by_qid(path: Path) -> dict[str, object]:
    """The store's content keyed by QIDs / PIDs / labels instead of dense ids (tombstones left out)."""
    with store.KGStore(path) as s:
        live = "e.desc_source IS DISTINCT FROM 'removed'"
        return {
            "entities": set(s.query(f"""
                SELECT e.qid, e.label, e.description, e.desc_source, e.desc_mention_start, e.desc_mention_end,
                       c.label FROM entities e LEFT JOIN categories c USING (category_id) WHERE {live}""")),
            "triples": set(s.query("SELECT head_qid, pid, tail_qid FROM triples_labelled")),
            "aliases": set(s.query("SELECT e.qid, a.alias FROM aliases a JOIN entities e USING (entity_id)")),
            "used_relations": set(s.query("SELECT pid, label, description FROM relations WHERE relation_id IN "
                                          "(SELECT relation_id FROM triples)")),
            "mentions": set(s.query("SELECT d.source_id, p.idx, e.qid, m.char_start, m.char_end, m.source "
                                    "FROM mentions m JOIN passages p USING (passage_id) JOIN documents d "
                                    "USING (doc_id) JOIN entities e ON e.entity_id = m.entity_id")),
            "documents": set(s.query("SELECT d.source, d.source_id, d.title, e.qid FROM documents d "
                                     "LEFT JOIN entities e USING (entity_id)")),
        }


def ids(path: Path) -> dict[str, int]:
    with store.KGStore(path) as s:
        return s.qid_to_id()


def changes(path: Path, seq: int) -> set[tuple[str, str]]:
    with store.KGStore(path) as s:
        return set(s.query("SELECT qid, change FROM entity_changes WHERE update_seq = ?", [seq]))


def test_tsv_update_equals_scratch_build(tmp_path: Path):
    old = _import(tmp_path / "kg.duckdb", tmp_path, E_OLD, T_OLD)
    before = ids(old)
    new_entities = {k: v for k, v in {**E_OLD, **CHANGED}.items() if k != "Q6"}
    new_triples = [t for t in T_OLD if t[0] not in ("Q1", "Q6")] + T_CHANGED
    scratch = _import(tmp_path / "scratch.duckdb", tmp_path, new_entities, new_triples)
    e = _tsv(tmp_path / "changed.tsv", E_HEAD, [f"{k}\t{v}" for k, v in CHANGED.items()])
    t = _tsv(tmp_path / "changed-T.tsv", "head\trelation\ttail\n", T_CHANGED)
    x = _tsv(tmp_path / "removed.txt", "", ["Q6"])
    from jaket.cli import main

    result = CliRunner().invoke(main, ["kg", "update", "--kg", str(old), "--entities-tsv", str(e),
                                       "--triples-tsv", str(t), "--remove-entities", str(x)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["update_seq"] == 1 and stats["memory_stale"] == 3          # Q3, Q7, and the tombstone Q6
    assert by_qid(old) == by_qid(scratch)
    after = ids(old)
    assert {q: after[q] for q in before} == before                           # every old id is stable
    assert after["Q7"] == len(before)                                        # the new entity is appended
    with store.KGStore(old) as s:
        assert store.check_integrity(s.con) == []
        assert s.query("SELECT label, description, desc_source, category_id FROM entities WHERE qid = 'Q6'") == [
            ("Oldtown", None, "removed", None)]
        assert s.query("SELECT reason, action FROM rejects WHERE stage = 'update'") == [("entity_removed", "kept")]
        assert s.scalar("SELECT count(*) FROM relations WHERE pid = 'P1376'") == 1   # relation ids are kept too
        assert s.meta()["update_seq"] == "1"
    assert changes(old, 1) == {("Q3", "description"), ("Q7", "new"), ("Q6", "removed"), ("Q6", "description"),
                               ("Q6", "category"), ("Q6", "triples"), ("Q1", "triples"), ("Q2", "triples"),
                               ("Q4", "triples")}
    # the same changes again: nothing changes, a second update_seq with no rows
    result = CliRunner().invoke(main, ["kg", "update", "--kg", str(old), "--entities-tsv", str(e)])
    assert result.exit_code == 0, result.output
    assert changes(old, 2) == set() and ids(old) == after
    # a bad line and an unknown triple end are rejected with a reason, not dropped silently
    bad = _tsv(tmp_path / "bad-T.tsv", "", [("Q5", "P17", "Q404"), "only-one-field"])
    result = CliRunner().invoke(main, ["kg", "update", "--kg", str(old), "--triples-tsv", str(bad)])
    assert result.exit_code == 0, result.output
    with store.KGStore(old) as s:
        reasons = {r for (r,) in s.query("SELECT reason FROM rejects WHERE stage = 'update'")}
        assert {"dangling_triple_tail", "missing_required_field"} <= reasons
        assert s.query("SELECT count(*) FROM triples_labelled WHERE head_qid = 'Q5'") == [(0,)]


# --- the dump path: hand-made stage outputs (pure function) ------------------------------------------------


def _write(folder: Path, name: str, rows: list[tuple], schema: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(folder / f"{name}.parquet")


ITEMS = {"Q2": ("France", "country in Europe", None), "Q5": ("human", "species", None),
         "Q10": ("Paris", "capital of France", "Paris"), "Q11": ("Ada", "a mathematician", None),
         "Q12": ("Bob", "a painter", None)}


def _stages(root: Path, items: dict, claims: list[tuple], lead: str) -> tuple[Path, Path]:
    wd, wp = root / "wikidata", root / "wikipedia"
    _write(wd, "items", [(q, *v) for q, v in items.items()],
           {"qid": S, "label": S, "description": S, "enwiki_title": S})
    _write(wd, "properties", [("P31", "instance of", None, "wikibase-item"), ("P17", "country", None,
                                                                              "wikibase-item")],
           {"pid": S, "label": S, "description": S, "datatype": S})
    _write(wd, "aliases", [("Q10", "City of Light")], {"qid": S, "alias": S})
    _write(wd, "claims", claims, {"head_qid": S, "pid": S, "tail_qid": S})
    _write(wd, "rejects", [], {k: S for k in ("stage", "source", "position", "reason", "raw", "action")})
    _write(wp, "documents", [(100, "Paris", "Q10")], {"page_id": pl.Int64, "title": S, "qid": S})
    _write(wp, "passages", [(100, 0, lead), (100, 1, "Ada lived in France.")],
           {"page_id": pl.Int64, "idx": pl.Int32, "text": S})
    _write(wp, "mentions", [(100, 1, "Q11", 0, 3, "anchor"), (100, 1, "Q2", 13, 19, "anchor")],
           {"page_id": pl.Int64, "idx": pl.Int32, "qid": S, "char_start": pl.Int32, "char_end": pl.Int32,
            "source": S})
    _write(wp, "rejects", [], {k: S for k in ("stage", "source", "position", "reason", "raw", "action")})
    return wd, wp


def _assembled(path: Path, wd: Path, wp: Path) -> Path:
    con = store.create(path)
    assemble(con, wd, AssembleOptions(top_categories=5, text_dirs=[("wikipedia", wp)]))
    con.close()
    return path


def test_stage_update_equals_scratch_build(tmp_path: Path):
    claims = [("Q10", "P17", "Q2"), ("Q11", "P31", "Q5"), ("Q12", "P31", "Q5"), ("Q11", "P17", "Q2")]
    old = _assembled(tmp_path / "kg.duckdb", *_stages(tmp_path / "v1", ITEMS, claims, "Paris is in France."))
    before = ids(old)
    items = {k: v for k, v in ITEMS.items() if k != "Q12"} | {"Q3": ("Carl", "a chemist", None)}
    claims2 = [c for c in claims if c != ("Q11", "P17", "Q2") and c[0] != "Q12"] + [("Q3", "P31", "Q5")]
    wd, wp = _stages(tmp_path / "v2", items, claims2, "Paris, the City of Light, is the capital of France.")
    scratch = _assembled(tmp_path / "scratch.duckdb", wd, wp)
    with store.writer_lock(old):
        stats = update_from_stages(old, wd, AssembleOptions(top_categories=5, text_dirs=[("wikipedia", wp)]),
                                   tmp_path / "work")
    assert by_qid(old) == by_qid(scratch)
    after = ids(old)
    assert {q: after[q] for q in before} == before and after["Q3"] == len(before)
    assert ("Q10", "description") in changes(old, 1) and ("Q3", "new") in changes(old, 1)
    assert ("Q12", "removed") in changes(old, 1) and ("Q11", "triples") in changes(old, 1)
    assert ("Q11", "description") not in changes(old, 1) and stats["memory_stale"] == 3   # Q10, Q3, Q12
    # the removed entity comes back in a later update: its old id again
    wd, wp = _stages(tmp_path / "v3", ITEMS, claims, "Paris is in France.")
    with store.writer_lock(old):
        update_from_stages(old, wd, AssembleOptions(top_categories=5, text_dirs=[("wikipedia", wp)]),
                           tmp_path / "work")
    assert ids(old)["Q12"] == before["Q12"] and ("Q12", "restored") in changes(old, 2)
    assert by_qid(old) == by_qid(_assembled(tmp_path / "v1.duckdb", *_stages(tmp_path / "v1b", ITEMS, claims,
                                                                              "Paris is in France.")))
    with store.KGStore(old) as s:
        assert store.check_integrity(s.con) == [] and s.meta()["update_seq"] == "2"


# --- the memory refresh ---------------------------------------------------------------------------------------


def test_memory_refresh_changed_only(tiny_bert: Path, tiny_store: Path, tmp_path: Path, one_thread: None):
    from jaket.cli import main
    from jaket.memory import EntityMemory
    from jaket.model import JAKETConfig
    from jaket.pretrain import TrainConfig
    from jaket.train import train

    kg, run = tmp_path / "kg.duckdb", tmp_path / "run"
    shutil.copyfile(tiny_store, kg)
    train(kg, run, TrainConfig(steps=2, lr=3e-3, km_lr=3e-3, warmup=1, decay="constant", save_every=0),
          JAKETConfig(lm=str(tiny_bert)), progress=False, quiet=True)
    old = EntityMemory.load(run / "memory.safetensors")
    n = old.entity.size(0)
    e = _tsv(tmp_path / "changed.tsv", E_HEAD, ["Q1010\tRome\tRome is the capital of Italy.\tcity",
                                                  "Q2000\tGranada\tGranada is a city in Spain.\tcity"])
    runner = CliRunner()
    result = runner.invoke(main, ["kg", "update", "--kg", str(kg), "--entities-tsv", str(e)])
    assert result.exit_code == 0, result.output
    rome = ids(kg)["Q1010"]
    assert ids(kg)["Q2000"] == n
    refresh = ["memory", "refresh", "--checkpoint", str(run), "--kg", str(kg), "--threads", "1", "--no-progress"]
    result = runner.invoke(main, [*refresh, "--changed-only"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["encoded_entities"] == 2
    changed = EntityMemory.load(run / "memory.safetensors")
    result = runner.invoke(main, [*refresh, "--out", str(tmp_path / "full.safetensors")])
    assert result.exit_code == 0, result.output
    full = EntityMemory.load(tmp_path / "full.safetensors")
    assert changed.entity.shape == full.entity.shape == (n + 1, old.entity.size(1))
    # only the changed rows differ from the old memory, and they equal a full refresh on those rows
    differs = (changed.entity[:n] != old.entity).any(dim=1).nonzero().flatten().tolist()
    assert differs == [rome]
    assert torch.allclose(changed.entity[[rome, n]], full.entity[[rome, n]], atol=1e-5)
    unchanged = [i for i in range(n) if i != rome]
    assert not torch.allclose(full.entity[unchanged], old.entity[unchanged], atol=1e-5)   # LM1 did move
    assert torch.equal(changed.relation, old.relation) and changed.refreshes == old.refreshes
    # the refresh recorded the store's update_seq: a second changed-only refresh has nothing to do
    result = runner.invoke(main, [*refresh, "--changed-only"])
    assert json.loads(result.output)["encoded_entities"] == 0
    assert torch.equal(EntityMemory.load(run / "memory.safetensors").entity, changed.entity)


# --- the dump path end to end: jaket-build-kg --update (the Prefect flow `update-kg`) ----------------------------


def _claim(pid: str, qid: str) -> dict:
    return {"mainsnak": {"snaktype": "value", "property": pid, "datatype": "wikibase-item",
                         "datavalue": {"value": {"entity-type": "item", "numeric-id": int(qid[1:]), "id": qid},
                                       "type": "wikibase-entityid"}}, "type": "statement", "rank": "normal"}


def _item(qid: str, label: str, desc: str, claims: list[tuple[str, str]], title: str | None = None) -> dict:
    by_pid: dict[str, list] = {}
    for pid, tail in claims:
        by_pid.setdefault(pid, []).append(_claim(pid, tail))
    return {"type": "item", "id": qid, "labels": {"en": {"language": "en", "value": label}},
            "descriptions": {"en": {"language": "en", "value": desc}}, "aliases": {}, "claims": by_pid,
            "sitelinks": {"enwiki": {"site": "enwiki", "title": title}} if title else {}}


def _dump(path: Path, items: list[dict]) -> Path:
    props = [{"type": "property", "id": pid, "datatype": "wikibase-item", "labels": {"en": {"language": "en",
              "value": label}}, "descriptions": {}, "aliases": {}, "claims": {}}
             for pid, label in (("P31", "instance of"), ("P17", "country"))]
    path.write_text("[\n" + ",\n".join(json.dumps(e) for e in items + props) + "\n]\n")
    return path


def _xml(path: Path, paris_lead: str) -> Path:
    pages = [("Paris", f"'''Paris''' {paris_lead}\n\nIt has a river.", 1),
             ("Ada", "'''Ada''' was a writer who lived in [[Paris]], [[France]].", 2)]
    path.write_text('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11">' + "".join(
        f'<page><title>{t}</title><ns>0</ns><id>{i}</id><revision><id>1</id><text xml:space="preserve">{x}'
        "</text></revision></page>" for t, x, i in pages) + "</mediawiki>")
    return path


def _build(out: Path, dump: Path, xml: Path) -> Path:
    from pipelines.wikidata import parse_wikidata
    from pipelines.wikipedia import parse_wikipedia

    work = out.with_name(out.name + ".stages")
    parse_wikidata(dump, work / "wikidata")
    parse_wikipedia(xml, work / "wikidata", work / "wikipedia")
    return _assembled(out, work / "wikidata", work / "wikipedia")


def test_build_kg_update_flow(tmp_path: Path):
    from flows.cli import main

    v1 = [_item("Q2", "France", "country in Europe", [("P31", "Q6256")]),
          _item("Q6256", "country", "political entity", []), _item("Q5", "human", "species", []),
          _item("Q90", "Paris", "capital of France", [("P17", "Q2")], "Paris"),
          _item("Q7", "Ada", "writer", [("P31", "Q5"), ("P17", "Q2")], "Ada"),
          _item("Q8", "Bob", "painter", [("P31", "Q5")])]
    v2 = [e for e in v1 if e["id"] not in ("Q7", "Q8")] + [
        _item("Q7", "Ada", "writer", [("P31", "Q5")], "Ada"),                                  # a triple removed
        _item("Q3", "Carl", "chemist", [("P31", "Q5"), ("P17", "Q2")])]                         # new; Bob removed
    old = _build(tmp_path / "kg.duckdb", _dump(tmp_path / "v1.json", v1),
                 _xml(tmp_path / "v1.xml", "is the capital of [[France]]."))
    before = ids(old)
    dump2, xml2 = _dump(tmp_path / "v2.json", v2), _xml(tmp_path / "v2.xml", "is the largest city of [[France]].")
    scratch = _build(tmp_path / "scratch.duckdb", dump2, xml2)
    result = CliRunner().invoke(main, ["--wikidata", str(dump2), "--wikipedia", str(xml2), "--update", str(old)])
    assert result.exit_code == 0, result.output
    assert "store updated" in result.output
    assert by_qid(old) == by_qid(scratch)
    after = ids(old)
    assert {q: after[q] for q in before} == before and after["Q3"] == len(before)
    assert {("Q90", "description"), ("Q3", "new"), ("Q8", "removed"), ("Q7", "triples")} <= changes(old, 1)
    assert ("Q7", "description") not in changes(old, 1)
    with store.KGStore(old) as s:
        assert store.check_integrity(s.con) == []
        assert s.query("SELECT desc_source FROM entities WHERE qid = 'Q90'") == [("wikipedia",)]
        assert json.loads(s.meta()["last_update"])["memory_stale"] == 3                    # Q90, Q3, Q8
    assert not (tmp_path / "kg.duckdb.work" / "update").exists()                             # snapshot deleted


def test_update_errors_are_one_line(tmp_path: Path):
    from flows.cli import main as build_main
    from jaket.cli import main

    dump = _dump(tmp_path / "v.json", [_item("Q1", "A", "a", [])])
    missing = tmp_path / "missing.duckdb"
    result = CliRunner().invoke(build_main, ["--wikidata", str(dump), "--update", str(missing)])
    assert result.exit_code == 2 and f"error: store not found: {missing}" in result.output
    old = _import(tmp_path / "kg.duckdb", tmp_path, E_OLD, T_OLD)
    result = CliRunner().invoke(build_main, ["--wikidata", str(dump), "--update", str(old), "--out", "x.duckdb"])
    assert result.exit_code == 2 and "leave out --out" in result.output
    result = CliRunner().invoke(main, ["kg", "update", "--kg", str(missing), "--entities-tsv", str(dump)])
    assert result.exit_code == 2 and "store not found" in result.output
    result = CliRunner().invoke(main, ["kg", "update", "--kg", str(old), "--entities-tsv", str(tmp_path / "no.tsv")])
    assert result.exit_code == 2 and "input file not found" in result.output
    assert not (tmp_path / "kg.duckdb.work").exists()
