"""Terminal output shared by the library and the CLI: one rich console, progress bars on stderr."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True, highlight=False)


def print_table(table: Table) -> None:
    """Print a result table on stdout; redirected to a file or pipe it keeps its natural width.

    Rich assumes 80 columns without a terminal, which folds long paths and titles mid-word
    and breaks `grep` on a log.
    """
    if sys.stdout.isatty():
        Console().print(table)
        return
    title = cell_len(str(table.title)) if table.title else 0
    Console(width=max(title, Console(width=10_000).measure(table).maximum)).print(table)


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar; yields `advance(n)`. Rich draws nothing animated when stderr is not a terminal."""
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
