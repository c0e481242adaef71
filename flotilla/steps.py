"""Named, timed steps: each long procedure prints what it does and how long it took."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

console = Console(stderr=True, highlight=False)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Print `name` with a spinner while the block runs, then its duration (or failure)."""
    start = time.monotonic()
    with console.status(name):
        try:
            yield
        except BaseException:
            console.print(
                f"[red]✗[/red] {name} [dim]failed after {time.monotonic() - start:.1f}s[/dim]"
            )
            raise
    console.print(f"[green]✓[/green] {name} [dim]{time.monotonic() - start:.1f}s[/dim]")
