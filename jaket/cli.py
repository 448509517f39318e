"""The `jaket` command group: `jaket kg stats|sql|check|import-tsv|update`, `jaket batch`, `jaket memory refresh`."""

from __future__ import annotations

import click

from flows.import_tsv import build_corpus_kg_command, import_tsv
from flows.update_tsv import update_command
from jaket.batch_inspect import batch_command
from jaket.refresh import memory_group
from kg_store.cli import kg


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """JAKET toolkit: knowledge-graph stores and joint KG + language-model pretraining."""


kg.add_command(import_tsv)
kg.add_command(build_corpus_kg_command)
kg.add_command(update_command)
main.add_command(kg)
main.add_command(batch_command)
main.add_command(memory_group)

if __name__ == "__main__":
    main()
