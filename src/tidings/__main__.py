"""``python -m tidings``: the ``tidings`` command."""

from .cli.main import main

main()
