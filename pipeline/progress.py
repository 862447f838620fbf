"""Progress of a long step on the console: a live bar on a terminal, whole lines in logs and pipes.

A tqdm bar redraws itself with ``\\r`` and never ends its line; redirected to a file (``dpt ... 2>&1 | tee``,
a ``ray job`` log) the next result line printed on stdout is glued onto it
(``evaluating: 100%|...| 24/24 [...]KITTI  δ>1.25 (%) ...``). So: on a terminal (stderr is a TTY) the
usual tqdm bar; otherwise :class:`LineProgress`, which writes a complete line every ``EVERY_S`` seconds
and one at the end. Results printed while a bar is open go through :func:`printing_beside`.

>>> with progress(total=len(shards), desc="verify", unit="shard") as bar:
...     for shard in shards:
...         check(shard)
...         bar.update()
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

EVERY_S = 30.0  # seconds between two progress lines in a log: a few per long step, not a flood


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, disable: bool = False, file: TextIO | None = None):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`LineProgress`.

    Both offer what the stages use: iteration over ``iterable``, ``update(n)``, ``n``, ``total``,
    ``set_postfix(**values)``, ``set_postfix_str(text)``, ``close()`` and ``with``."""
    file = file or sys.stderr
    if iterable is not None and total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not disable and _is_terminal(file):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file, smoothing=0.1)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=file)


@contextlib.contextmanager
def printing_beside(bar) -> Iterator[None]:
    """Print result lines while ``bar`` is open: the bar is wiped first and drawn again after, so a result
    never lands on the bar's line (a no-op for :class:`LineProgress`, whose lines are already whole)."""
    live = not isinstance(bar, LineProgress)
    if live:
        bar.clear()
    try:
        yield
    finally:
        sys.stdout.flush()
        if live:
            bar.refresh()


class LineProgress:
    """Progress as whole lines on ``file``: at most one every ``every`` seconds, and a last one on close.

    A line reads ``ingest diml: 40% 1680/4210 sample in 2m05s, 13.4 sample/s, MB=1530.2``."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False, file: TextIO | None = None,
                 every: float = EVERY_S):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.disable, self.file, self.every = initial, disable, file or sys.stderr, every
        self._initial, self._postfix, self._closed = initial, "", False
        self._start = self._last = time.monotonic()

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.every:
            self._write()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values: Any) -> None:
        values = {**(ordered_dict or {}), **values}
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self._postfix = text

    def write(self, text: str, file: TextIO | None = None) -> None:
        print(text, file=file or sys.stdout, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write()

    def line(self) -> str:
        """The current state as one line (no newline)."""
        seconds = time.monotonic() - self._start
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        percent = f"{100 * self.n / self.total:.0f}% " if self.total else ""
        rate = (self.n - self._initial) / seconds if seconds > 0 else 0.0
        postfix = f", {self._postfix}" if self._postfix else ""
        return f"{self.desc}: {percent}{done} {self.unit} in {_duration(seconds)}, {rate:.3g} {self.unit}/s{postfix}"

    def _write(self) -> None:
        self._last = time.monotonic()
        if self.disable:
            return
        sys.stdout.flush()  # what was printed before this line stays before it in a combined log
        # Written to the stream, not print()ed: Ray Train's workers patch print to log each line and, when Ray has
        # wrapped the stream, print it as well: every line came twice.
        self.file.write(self.line() + "\n")
        self.file.flush()


def _is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{seconds:.1f} s" if seconds < 60 else f"{minutes}m{rest:02d}s"
