"""Terminal output shared by the library and the CLI: one rich console, progress bars on stderr,
and a filter that keeps the native libraries' chatter off the user's terminal."""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# Redirected to a log, a message stays one line (rich would fold it at 80 columns); in a terminal it wraps to fit.
console = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())


def print_table(table: Table) -> None:
    """Print a result table on stdout: fitted to the terminal without cutting a cell (`fit_table`), or,
    redirected to a file or pipe, at its natural width.

    Rich assumes 80 columns without a terminal, which folds long paths and titles mid-word
    and breaks `grep` on a log.
    """
    terminal = Console()
    if terminal.is_terminal:
        Console(width=fit_table(table, terminal.width)).print(table)
        return
    title = cell_len(str(table.title)) if table.title else 0
    Console(width=max(title, Console(width=10_000).measure(table).maximum)).print(table)


def fit_table(table, width: int) -> int:
    """Fit `table` into `width` columns without cutting a cell; returns the width to draw it at.

    Rich, made to squeeze a table below its natural width, may shrink one column too far and then
    crop the right-hand columns, so the squeezing is done here: each column with a `min_width`
    starts at it (headers wrapped between words) and gets back what room there is, left to right.
    Where even that does not fit, the width returned is the table's minimum, wider than `width`.
    """
    def measure() -> int:
        return Console(width=100_000, file=io.StringIO()).measure(table).maximum

    if measure() <= width:
        return width
    squeezable = [column for column in table.columns if column.min_width is not None]  # the others keep their natural width
    naturals = [max(column.min_width, cell_len(str(column.header))) for column in squeezable]
    for column in squeezable:
        column.max_width = column.min_width
    room = width - measure()
    for column, natural in zip(squeezable, naturals):
        grow = max(0, min(natural - column.max_width, room))
        column.max_width += grow
        room -= grow
    return max(width, measure())


def render_table(table: Table, width: int) -> str:
    """The table as plain text, as a terminal `width` columns wide shows it (`fit_table`): what the width tests read."""
    out = Console(width=fit_table(table, width), file=io.StringIO(), color_system=None, highlight=False)
    out.print(table)
    return out.file.getvalue()


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


#: Lines the libraries write straight to file descriptor 2, bypassing every Python-level setting:
#: TensorFlow/XLA's pre-absl log lines (TF_CPP_MIN_LOG_LEVEL does not reach them, tensorflow#100442),
#: its CPU-feature notice, and the TFLite converter's own prints.
NATIVE_NOISE = re.compile(
    r"^(?:[IWEF]\d{4} [\d:. ]+\d+ [\w.]+:\d+\]|WARNING: All log messages before absl::InitializeLog|"
    r"To enable the following instructions|This TensorFlow binary is optimized|fully_quantize: |"
    r"Estimated count of arithmetic ops|Summary on the non-converted ops|INFO:nncf:|WARNING:nncf:)"
)


def quiet_native_output(log: Path) -> None:
    """From now on, in this process and its children: native noise and Python warnings go to `log`, not the terminal.

    File descriptor 2 becomes a pipe read by a thread: each complete line that matches
    NATIVE_NOISE is appended to `log`; everything else (the product's own messages, progress
    bars, and errors) reaches the terminal unchanged. Partial lines pass at once, so progress
    bars still animate. Python warnings are written to the same log.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    sink = open(log, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - lives as long as the process
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if NATIVE_NOISE.match(line.decode("utf-8", "replace")):
                    sink.write(line.decode("utf-8", "replace") + "\n")
                else:
                    os.write(terminal, line + b"\n")
            if pending and not NATIVE_NOISE.match(pending.decode("utf-8", "replace")[:40]):
                os.write(terminal, pending)  # a progress bar redrawing itself, or a prompt: show it now
                pending = b""
        if pending:
            os.write(terminal, pending)
        sink.flush()

    reader = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    reader.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes the pipe's last write end: the reader drains and stops
        reader.join(timeout=5)

    atexit.register(restore)

    def to_log(message, category, filename, lineno, file=None, line=None) -> None:
        sink.write(warnings.formatwarning(message, category, filename, lineno, line))
        sink.flush()

    warnings.showwarning = to_log
