"""The wikidata stage's rules in plain Python (orjson): for the few lines DuckDB's reader could not take, and
for chunks whose rows could not be matched to lines. Same output as the SQL in `wikidata_sql`."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

ENTITY_TYPES = ("item", "property")


@dataclass
class Entity:
    kind: str
    id: str
    label: str | None
    description: str | None
    extra: str | None  # enwiki title (items) or datatype (properties)
    aliases: list[str] = field(default_factory=list)
    triples: list[tuple[str, str, str]] = field(default_factory=list)
    n_deprecated: int = 0
    n_nonvalue: int = 0


def classify(raw: bytes) -> tuple[dict | None, str | None]:
    """(entity object, None) or (None, reject reason) for one dump line."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, "malformed_json"
    if not isinstance(obj, dict):
        return None, "not_an_entity"
    if obj.get("type") not in ENTITY_TYPES:
        return None, "unknown_type"
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        return None, "missing_id"
    return obj, None


def _get(obj: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _item_valued(snak: dict) -> bool:
    datatype = snak.get("datatype")
    if datatype is not None:
        return datatype == "wikibase-item"
    return _get(snak, "datavalue", "value", "entity-type") == "item"


def extract(obj: dict) -> Entity:
    """English terms, enwiki title/datatype and item-valued main-snak claims of one entity."""
    kind, qid = obj["type"], obj["id"]
    aliases = _get(obj, "aliases", "en")
    names = (
        [a["value"] for a in aliases if isinstance(a, dict) and isinstance(a.get("value"), str)]
        if isinstance(aliases, list)
        else []
    )
    extra = _get(obj, "sitelinks", "enwiki", "title") if kind == "item" else obj.get("datatype")
    entity = Entity(
        kind,
        qid,
        _text(_get(obj, "labels", "en", "value")),
        _text(_get(obj, "descriptions", "en", "value")),
        _text(extra),
        names,
    )
    claims = obj.get("claims")
    if kind != "item" or not isinstance(claims, dict):
        return entity
    for statements in claims.values():
        for statement in statements if isinstance(statements, list) else ():
            snak = _get(statement, "mainsnak")
            if not isinstance(snak, dict) or not _item_valued(snak):
                continue
            if statement.get("rank") == "deprecated":
                entity.n_deprecated += 1
            elif snak.get("snaktype") != "value":
                entity.n_nonvalue += 1
            else:
                value = _get(snak, "datavalue", "value")
                tail = _get(value, "id")
                if tail is None and isinstance(_get(value, "numeric-id"), int):
                    tail = f"Q{value['numeric-id']}"  # type: ignore[index]
                if tail is not None:
                    entity.triples.append((qid, _text(snak.get("property")), str(tail)))  # type: ignore[arg-type]
    return entity
