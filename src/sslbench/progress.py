"""Progress that does not flood a log: a tqdm bar on a terminal, a few lines otherwise.

`progress(...)` is how the package shows the progress of a long loop. When `sys.stderr` is a terminal it is a tqdm
bar, redrawn in place. Otherwise (`dvc repro > study.log`, CI, a SLURM job's output file), where every redraw of a
bar would add to the file, it is a `LineProgress`: one log line (logger `sslbench.progress`, level INFO, which the
stages print) each time another tenth of the total is done, one every `INTERVAL_S` seconds in between when a tenth
takes longer or the total is unknown, and a last one at the end, e.g.

    embed simclr: 40 % (12,000/30,000 img) in 12 s, 980 img/s [shapes/test]

Both kinds offer the part of tqdm's interface the package uses: iteration, `update(n)`, `set_postfix_str(text)`,
`close()` and `with`. The pretrain stage's Lightning run follows the same rule: Lightning's bar on a terminal, else
`sslbench.training.callbacks.ProgressLines`, built on `LineProgress`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

log = logging.getLogger("sslbench.progress")

TENTHS = 10  # lines per loop of known length, besides the last one
INTERVAL_S = 60.0  # at most this long between two lines while the work goes on


def is_terminal(stream: Any = None) -> bool:
    """Whether `stream` (default `sys.stderr`, where tqdm draws) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty (a custom stream), or a closed one
        return False


def amount(n: float, unit: str) -> str:
    """`n` of `unit`, readable: bytes (`B`) as kB/MB/GB, counts with thousands separators (and one decimal below
    10 when not whole, for rates)."""
    if unit == "B":
        for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if n >= scale:
                return f"{n / scale:.1f} {name}"
        return f"{n:.0f} B"
    return f"{n:.1f} {unit}" if n < 10 and n != int(n) else f"{n:,.0f} {unit}"


def _count(n: float, unit: str) -> str:
    return amount(n, unit) if unit == "B" else amount(n, unit).rsplit(" ", 1)[0]


class LineProgress:
    """A progress report for logs: a line per tenth of `total`, at most `interval_s` apart, and one at the end.

    `initial`: work already done before (a resumed run), counted in the percentage but not in the rate. `clock`
    is injectable for tests; the lines are also kept in `lines`.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, interval_s: float = INTERVAL_S,
                 logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.interval_s, self.log, self.clock = interval_s, logger or log, clock
        self.n, self.initial = initial, initial
        self.postfix = ""
        self.lines: list[str] = []
        self._start = self._last = clock()
        self._tenth = self._tenths(initial)
        self._closed = False

    def _tenths(self, n: float) -> int:
        return min(TENTHS, math.floor(TENTHS * n / self.total)) if self.total else 0

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress(total=...) counts updates; give it an iterable to iterate")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self.clock()
        tenth = self._tenths(self.n)
        if tenth > self._tenth:
            self._tenth = tenth
            if self.total is not None and self.n < self.total:  # the end's line comes from close()
                self._emit(now)
        elif now - self._last >= self.interval_s:
            self._emit(now)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n > self.initial or self.total == 0:
                self._emit(self.clock(), done=True)

    def _emit(self, now: float, done: bool = False) -> None:
        self._last = now
        elapsed = now - self._start
        if self.total:
            percent = math.floor(100 * self.n / self.total)  # floored: 99 of 500 is not yet 20 %
            where = f"{percent} % ({_count(self.n, self.unit)}/{amount(self.total, self.unit)})"
        else:
            where = amount(self.n, self.unit)
        text = f"{self.desc}: {'done, ' if done else ''}{where} in {elapsed:.0f} s"
        if elapsed > 0 and self.n > self.initial:
            text += f", {amount((self.n - self.initial) / elapsed, self.unit)}/s"
        if self.postfix:
            text += f" [{self.postfix}]"
        self.lines.append(text)
        self.log.info("%s", text)


def progress(iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "",
             unit: str = "it", disable: bool = False, stream: IO[str] | None = None, **bar: Any) -> Any:
    """A tqdm bar on `stream` (default `sys.stderr`) when it is a terminal, else a `LineProgress`; neither with
    `disable=True`. `bar`: further tqdm arguments (`leave`, `unit_scale`...), for the bar only. Iterate over the
    result when `iterable` is given, else call `update(n)`; close it, or use it in a `with`."""
    if disable or is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream or sys.stderr, **bar)
    return LineProgress(iterable, total=total, desc=desc, unit=unit)
