"""`jaket kg ...` verbs that only read a store: stats, sql, check."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import click
import orjson

from kg_store import store

DEFAULT_KG = "kg_store/wiki.duckdb"


def fail(message: str) -> None:
    click.echo(f"jaket kg: error: {message}", err=True)
    sys.exit(2)


@click.group(name="kg")
def kg() -> None:
    """Inspect, query and import knowledge-graph stores."""


@kg.command()
@click.option("--kg", "kg_path", default=DEFAULT_KG, show_default=True, help="the store")
def stats(kg_path: str) -> None:
    """Print the store's row counts (and build summary) as JSON."""
    try:
        with store.KGStore(kg_path) as s:
            counts = s.counts()
            meta = s.meta()
    except store.StoreError as exc:
        fail(str(exc))
        return
    counts["rejects_by_reason"] = orjson.loads(meta["rejects_by_reason"]) if "rejects_by_reason" in meta else {}
    for key in ("dangling_triples", "mentions_unknown_entity", "desc_source_wikipedia", "desc_source_wikidata",
                "desc_source_label", "desc_with_mention_span", "finished"):
        if key in meta:
            counts[key] = int(meta[key]) if meta[key].lstrip("-").isdigit() else meta[key]
    click.echo(orjson.dumps(counts, option=orjson.OPT_INDENT_2).decode())


def format_rows(columns: list[str], rows: list[tuple], fmt: str) -> str:
    """Render query results as an aligned table, CSV or JSON (list of objects)."""
    if fmt == "json":
        return orjson.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str,
                            option=orjson.OPT_INDENT_2).decode()
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cells = [[("NULL" if v is None else str(v)).replace("\n", " ") for v in r] for r in rows]
    cells = [[c if len(c) <= 80 else c[:77] + "..." for c in r] for r in cells]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), line]
    out += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


@kg.command()
@click.argument("query", required=False)
@click.option("--kg", "kg_path", default=DEFAULT_KG, show_default=True, help="the store (opened read-only)")
@click.option("--file", "sql_file", type=click.Path(exists=True, dir_okay=False), help="read the query from a file")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="set a query variable, read in SQL with getvariable('NAME') (repeatable)")
def sql(query: str | None, kg_path: str, sql_file: str | None, fmt: str, params: tuple[str, ...]) -> None:
    """Run a SQL query over the store through a READ-ONLY connection.

    Ready queries live in kg_store/queries/*.sql: `jaket kg sql --file kg_store/queries/entity_mentions.sql
    --param qid=Q183`.
    """
    if sql_file:
        query = Path(sql_file).read_text()
    if not query:
        fail("give a query or --file")
    variables = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            fail(f"--param wants NAME=VALUE, got {item!r}")
        variables[name] = value
    try:
        con = store.connect(kg_path, read_only=True)
    except store.StoreError as exc:
        fail(str(exc))
        return
    try:
        for name, value in variables.items():
            con.execute(f"SET VARIABLE {name} = ?", [value])
        cur = con.execute(query)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall() if columns else []
    except Exception as exc:  # noqa: BLE001 - any SQL error is the user's to read, in one line
        fail(str(exc).splitlines()[0])
        return
    finally:
        con.close()
    click.echo(format_rows(columns, rows, fmt))


@kg.command()
@click.option("--kg", "kg_path", default=DEFAULT_KG, show_default=True, help="the store")
def check(kg_path: str) -> None:
    """Check dense ids and referential integrity; non-zero exit on problems."""
    try:
        con = store.connect(kg_path, read_only=True)
    except store.StoreError as exc:
        fail(str(exc))
        return
    problems = store.check_integrity(con)
    con.close()
    for p in problems:
        click.echo(f"problem: {p}")
    if problems:
        sys.exit(1)
    click.echo("ok")


def _register() -> None:
    from kg_store.report import report

    kg.add_command(report)


_register()
