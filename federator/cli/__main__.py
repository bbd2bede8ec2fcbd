"""``python -m federator.cli``: the same as the ``federator`` command."""

from federator.cli.main import main

main()
