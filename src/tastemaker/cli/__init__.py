"""The ``tastemaker`` command line. Commands are thin: they parse, call the library, and print."""

from __future__ import annotations

from tastemaker.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
