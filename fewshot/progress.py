"""Progress on long work: a tqdm bar on a terminal, a few plain lines in a log.

When standard error is not a terminal (CI logs, ``> run.log 2>&1``), a bar would write a
carriage return per refresh; instead :class:`LineProgress` prints one plain line each time
another tenth of the work is done.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class LineProgress:
    """The subset of tqdm's interface the harness uses, printing whole lines to stderr."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, steps: int = 10) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self._every = max(1, total // steps)
        self._next = (initial // self._every + 1) * self._every
        self._postfix = ""
        self._started = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next or self.n == self.total:
            self._next = (self.n // self._every + 1) * self._every
            elapsed = time.perf_counter() - self._started
            print(f"{self.desc}: {self.n}/{self.total} {self.unit} ({elapsed:.0f} s){self._postfix}",
                  file=sys.stderr, flush=True)

    def set_postfix(self, **values) -> None:
        self._postfix = " " + " ".join(f"{k}={v}" for k, v in values.items() if v is not None)

    def close(self) -> None:
        pass

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent(LineProgress):
    def update(self, n: int = 1) -> None:
        self.n += n


def progress_bar(total: int, desc: str, unit: str = "it", *, initial: int = 0, enabled: bool = True,
                 leave: bool = True):
    """A progress reporter for ``total`` steps named ``desc``: tqdm on a terminal, lines otherwise,
    nothing when ``enabled`` is False. Use ``update``, ``set_postfix``, ``close`` (or ``with``)."""
    if not enabled:
        return _Silent(total, desc, unit, initial)
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave)
    return LineProgress(total, desc, unit, initial)
