"""Rendering values for the terminal: sizes, times, tables and machine-readable formats."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from enum import Enum
from typing import Any

import typer
import yaml


class Format(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def local_time(value: dt.datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def emit_data(data: Any, fmt: Format) -> None:
    if fmt is Format.json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


def emit_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal; plain aligned columns, never truncated, when piped."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for column in columns:
            table.add_column(column, no_wrap=True)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows)]
    for row in [columns, *rows]:
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
