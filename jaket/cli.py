"""The `jaket` command group: `jaket kg stats|sql|check|import-tsv` and `jaket batch`."""

from __future__ import annotations

import click

from flows.import_tsv import build_corpus_kg_command, import_tsv
from jaket.batch_inspect import batch_command
from kg_store.cli import kg


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """JAKET toolkit: knowledge-graph stores and joint KG + language-model pretraining."""


kg.add_command(import_tsv)
kg.add_command(build_corpus_kg_command)
main.add_command(kg)
main.add_command(batch_command)

if __name__ == "__main__":
    main()
