"""Serve the `build-kg` flow as a deployment of a local Prefect server (`build-kg/<name>`).

    python -m flows.serve --name local
    prefect deployment run build-kg/local --param wikidata=... --param out=kg_store/wiki.duckdb --watch

The README has the whole recipe (server on 127.0.0.1, PREFECT_HOME inside the project, analytics off).
"""

from __future__ import annotations

import click

from flows.cli import configure_prefect_env


@click.command()
@click.option("--name", default="local", show_default=True, help="deployment name: build-kg/<name>")
@click.option("--limit", default=1, show_default=True, help="flow runs executed at the same time")
def main(name: str, limit: int) -> None:
    """Register build-kg/<name> with the Prefect server at PREFECT_API_URL and execute its runs."""
    configure_prefect_env()
    from flows.build_kg import build_kg

    build_kg.serve(name=name, limit=limit, print_starting_message=True)


if __name__ == "__main__":
    main()
