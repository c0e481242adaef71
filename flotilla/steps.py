"""Named, timed steps and waits: each long procedure prints what it does and how long it took.

Live displays (spinners, elapsed time, counts) go to stderr and only to a terminal: a log file,
a pipe or a test sees the plain lines and nothing that redraws itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

import click
from rich.console import Console
from rich.text import Text

console = Console(stderr=True, highlight=False)

# `imagebuild build --verbose` turns this on: steps that can tell how far they got say so.
show_details = False


def progress_wanted(is_terminal: bool, term: str | None) -> bool:
    """Whether to draw live progress on a stream: only on a terminal that can redraw a line
    (TERM=dumb, as in Emacs shells and some CI runners, cannot)."""
    return is_terminal and term != "dumb"


def stream_wants_progress(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return progress_wanted(bool(isatty and isatty()), os.environ.get("TERM"))


class Detail:
    """A line rich redraws on every refresh, so a step's detail stays current while the step
    blocks in a subprocess: no thread of our own polls it."""

    def __init__(self, name: str, detail: Callable[[], str]) -> None:
        self.name = name
        self.detail = detail

    def __rich__(self) -> Text:
        try:
            note = self.detail()
        except OSError:  # the file it reads is not there yet, or is being replaced
            note = ""
        return Text(f"{self.name} ({note})" if note else self.name)


@contextmanager
def step(name: str, detail: Callable[[], str] | None = None) -> Iterator[None]:
    """Print `name` with a spinner while the block runs, then its duration (or failure).
    With `show_details`, the spinner also shows `detail()`, e.g. how many packages are in."""
    start = time.monotonic()
    status = Detail(name, detail) if detail and show_details else name
    with console.status(status):
        try:
            yield
        except BaseException:
            console.print(
                f"[red]✗[/red] {name} [dim]failed after {time.monotonic() - start:.1f}s[/dim]"
            )
            raise
    console.print(f"[green]✓[/green] {name} [dim]{time.monotonic() - start:.1f}s[/dim]")


class Waiting:
    """What a block inside `waiting` uses: change the spinner's text, print a line above it."""

    def __init__(self, description: str, show: bool) -> None:
        self.description = description
        self.started = time.monotonic()
        # The status redraws this object on every refresh, so the seconds keep counting.
        self._status = console.status(self) if show else None

    def __rich__(self) -> Text:
        return Text(f"{self.description} [{time.monotonic() - self.started:.0f}s]")

    def update(self, description: str) -> None:
        self.description = description

    def echo(self, line: str) -> None:
        """A line on stdout; the spinner steps aside for it, so the two never interleave."""
        if self._status:
            self._status.stop()
        click.echo(line)
        if self._status:
            self._status.start()


@contextmanager
def waiting(description: str) -> Iterator[Waiting]:
    """A spinner with the seconds waited so far, on stderr when it is a terminal; nothing
    otherwise. The spinner is gone when the block ends."""
    handle = Waiting(description, stream_wants_progress(console.file))
    if handle._status is None:
        yield handle
        return
    with handle._status:
        yield handle
