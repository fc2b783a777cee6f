"""The progress helper: a bar on a terminal, a line per tenth (and per interval) in a log."""

from __future__ import annotations

import io
import logging

import pytest

from sslbench.progress import LineProgress, amount, is_terminal, progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_line_per_tenth_and_one_at_the_end() -> None:
    clock = Clock()
    bar = LineProgress(total=1000, desc="embed simclr", unit="img", clock=clock)
    for _ in range(250):
        clock.now += 0.125
        bar.update(4)
    bar.set_postfix_str("shapes/test")
    bar.close()
    bar.close()  # idempotent
    assert len(bar.lines) == 10  # 10 %, ..., 90 %, then `done`
    assert bar.lines[0] == "embed simclr: 10 % (100/1,000 img) in 3 s, 32 img/s"
    assert bar.lines[-1] == "embed simclr: done, 100 % (1,000/1,000 img) in 31 s, 32 img/s [shapes/test]"


def test_slow_tenths_and_unknown_totals_log_every_interval() -> None:
    clock = Clock()
    bar = LineProgress(total=None, desc="download", unit="B", interval_s=60, clock=clock)
    for _ in range(10):
        clock.now += 30
        bar.update(5_000_000)
    bar.close()
    assert [line.split(" in ")[0] for line in bar.lines] == [
        "download: 10.0 MB", "download: 20.0 MB", "download: 30.0 MB", "download: 40.0 MB", "download: 50.0 MB",
        "download: done, 50.0 MB"]
    assert bar.lines[0].endswith("in 60 s, 166.7 kB/s")


def test_resumed_runs_count_from_where_they_were() -> None:
    clock = Clock()
    bar = LineProgress(total=100, desc="pretrain@simclr", unit="step", initial=55, clock=clock)
    clock.now = 10
    bar.update(5)  # 60 %: the first tenth crossed in this process
    assert bar.lines == ["pretrain@simclr: 60 % (60/100 step) in 10 s, 0.5 step/s"]


def test_iterating_logs_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sslbench.progress"):
        assert list(progress(range(3), desc="figures", unit="fig", stream=io.StringIO())) == [0, 1, 2]
    messages = [r.getMessage() for r in caplog.records if r.name == "sslbench.progress"]
    assert len(messages) == 3 and messages[-1].startswith("figures: done, 100 % (3/3 fig)")


def test_a_bar_only_on_a_terminal() -> None:
    from tqdm import tqdm

    terminal, log = Terminal(), io.StringIO()
    assert is_terminal(terminal) and not is_terminal(log) and not is_terminal(object())  # type: ignore[arg-type]
    bar = progress(total=3, desc="x", stream=terminal)
    assert isinstance(bar, tqdm)
    bar.update(3)
    bar.close()
    assert "x: 100%" in terminal.getvalue()
    assert isinstance(progress(total=3, stream=log), LineProgress) and log.getvalue() == ""
    quiet = progress(total=3, disable=True, stream=log)
    quiet.update(3)
    quiet.close()
    assert log.getvalue() == ""


def test_amounts() -> None:
    assert amount(1234567, "img") == "1,234,567 img" and amount(2.5e9, "B") == "2.5 GB" and amount(10, "B") == "10 B"


def test_every_long_loop_goes_through_this_helper() -> None:
    """A bare tqdm elsewhere would redraw into `dvc repro > study.log` line after line."""
    from pathlib import Path

    import sslbench

    package = Path(sslbench.__file__).parent
    bare = [str(p.relative_to(package)) for p in package.rglob("*.py")
            if p.name != "progress.py" and ("from tqdm" in p.read_text() or "import tqdm" in p.read_text())]
    assert bare == []
