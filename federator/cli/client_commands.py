from typer import Typer


def register(app: Typer) -> None:
    """Client commands (filled in separately)."""
