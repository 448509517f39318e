"""`jaket kg report`: a self-contained HTML health report of a store (counts, description coverage, degree
distribution, top relations and categories, mentions per passage and per entity, rejects, entity cards).

Every plot is written as a PNG beside the page and embedded in it (data URI), so the page can be mailed alone.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import click
import numpy as np

from kg_store import store

PLOT_STYLE = {"figsize": (6.4, 3.6), "dpi": 110}


def _fig() -> tuple:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=PLOT_STYLE["figsize"], dpi=PLOT_STYLE["dpi"])
    return plt, fig, ax


def _save(plt: object, fig: object, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _bar(path: Path, labels: list[str], values: list[float], title: str, xlabel: str) -> Path:
    plt, fig, ax = _fig()
    y = np.arange(len(labels))[::-1]
    ax.barh(y, values, color="#4C72B0")
    ax.set_yticks(y, [lab if len(lab) <= 38 else lab[:35] + "..." for lab in labels], fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    return _save(plt, fig, path)


def _loglog(path: Path, series: dict[str, np.ndarray], title: str, xlabel: str) -> Path:
    """Counts of each value (how many items have degree d) on log-log axes, one line per series."""
    plt, fig, ax = _fig()
    for name, values in series.items():
        values = values[values > 0]
        if len(values):
            uniq, counts = np.unique(values, return_counts=True)
            ax.loglog(uniq, counts, marker=".", linestyle="none", label=name)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("number of entities")
    ax.grid(True, which="both", alpha=0.3)
    if any(len(v[v > 0]) for v in series.values()):
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _hist(path: Path, values: np.ndarray, title: str, xlabel: str) -> Path:
    plt, fig, ax = _fig()
    if len(values):
        ax.hist(values, bins=min(50, max(int(values.max()), 1)), color="#55A868", log=True)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count (log)")
    return _save(plt, fig, path)


def _table(columns: list[str], rows: list[tuple]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_report(kg_path: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """Write OUT_DIR/report.html and its PNGs; returns the page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with store.KGStore(kg_path) as s:
        q = s.query
        counts = s.counts()
        n = max(counts["entities"], 1)
        sources = q("SELECT coalesce(desc_source, 'none'), count(*), count(desc_mention_start) FROM entities "
                    "GROUP BY ALL ORDER BY 2 DESC")
        degree = s.csr(add_inverse=False).degree()
        in_degree = np.bincount(s.triples()[:, 2], minlength=counts["entities"]) if counts["triples"] else np.zeros(0)
        top_rel = q("SELECT coalesce(r.label, r.pid), count(*) FROM triples JOIN relations r USING (relation_id) "
                    "GROUP BY ALL ORDER BY 2 DESC LIMIT 20")
        top_cat = q("SELECT coalesce(c.label, c.qid, 'other'), count(*) FROM entities e JOIN categories c "
                    "USING (category_id) GROUP BY ALL ORDER BY 2 DESC LIMIT 20")
        per_passage = s._column("SELECT count(m.entity_id) FROM passages p LEFT JOIN mentions m USING (passage_id) "
                                "GROUP BY p.passage_id")
        per_entity = s._column("SELECT count(*) FROM mentions GROUP BY entity_id")
        by_source = q("SELECT source, count(*) FROM mentions GROUP BY ALL ORDER BY 2 DESC")
        rejects = q("SELECT stage, reason, action, count(*) FROM rejects GROUP BY ALL ORDER BY 4 DESC")
        s.con.execute(f"SELECT setseed({(seed % 1000) / 1000})").fetchall()
        cards = s.con.execute("SELECT qid, label, desc_source, left(description, 120) AS description, desc_mention, "
                              "category, degree, mention_count FROM entity_card ORDER BY random() LIMIT 20")
        card_cols = [d[0] for d in cards.description]
        card_rows = cards.fetchall()
        meta = s.meta()

    plots = {
        "coverage": _bar(out / "desc_coverage.png", [f"{src} ({100 * c / n:.1f}%)" for src, c, _ in sources],
                         [c for _, c, _ in sources], "Entity descriptions by source", "entities"),
        "degree": _loglog(out / "degree.png", {"out-degree": degree, "in-degree": in_degree},
                          "Degree distribution (log-log)", "degree"),
        "relations": _bar(out / "top_relations.png", [r for r, _ in top_rel], [c for _, c in top_rel],
                          "Top relations", "triples"),
        "categories": _bar(out / "top_categories.png", [c for c, _ in top_cat], [k for _, k in top_cat],
                           "Top categories", "entities"),
        "per_passage": _hist(out / "mentions_per_passage.png", per_passage, "Mentions per passage", "mentions"),
        "per_entity": _hist(out / "mentions_per_entity.png", per_entity, "Mentions per mentioned entity",
                            "mentions"),
        "rejects": _bar(out / "rejects.png", [f"{st}: {r} ({a})" for st, r, a, _ in rejects[:20]],
                        [c for *_, c in rejects[:20]], "Rejects by reason", "rows"),
    }
    images = "".join(
        f'<figure><img class="plot" alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}"><figcaption>{path.name}</figcaption></figure>'
        for name, path in plots.items())
    summary = _table(["table", "rows"], sorted(counts.items()))
    coverage = _table(["desc_source", "entities", "with mention span"], sources)
    mention_src = _table(["mention source", "mentions"], by_source)
    reject_table = _table(["stage", "reason", "action", "rows"], rejects)
    built = html.escape(meta.get("finished", "?"))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>KG report: {html.escape(Path(kg_path).name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table{{border-collapse:collapse;margin:1em 0;
font-size:12px}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}} figure{{display:inline-block;
margin:6px}} .plot{{width:620px;border:1px solid #ddd}} figcaption{{font-size:11px;color:#666}}</style>
<script>window.addEventListener("load", () => {{ const ok = [...document.querySelectorAll("img.plot")]
.filter(i => i.complete && i.naturalWidth > 0).length; document.title = "plots-rendered:" + ok;
document.getElementById("rendered").textContent = ok; }});</script></head><body>
<h1>Knowledge-graph store report</h1>
<p>Store <code>{html.escape(str(kg_path))}</code>, built {built}. Plots rendered: <span id="rendered">?</span>
of {len(plots)}.</p>
<h2>Counts</h2>{summary}
<h2>Descriptions</h2>{coverage}
<h2>Mentions</h2>{mention_src}
<h2>Plots</h2>{images}
<h2>Rejects and dangling triples</h2>{reject_table}
<h2>20 random entity cards</h2>{_table(card_cols, card_rows)}
</body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


@click.command(name="report")
@click.option("--kg", "kg_path", default="kg_store/wiki.duckdb", show_default=True, help="the store")
@click.option("--out", "out_dir", required=True, help="folder for report.html and its PNGs")
@click.option("--seed", default=0, show_default=True, help="which 20 random entity cards")
def report(kg_path: str, out_dir: str, seed: int) -> None:
    """Write a self-contained HTML health report of the store."""
    try:
        path = build_report(kg_path, out_dir, seed)
    except store.StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"report: {path}")
