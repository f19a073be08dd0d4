"""``python -m destination`` runs the CLI."""

from destination.cli import main_entry

main_entry()
