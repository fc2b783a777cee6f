"""These tests run many small forward passes: one intra-op thread avoids OpenMP's spin-waiting between threads,
which made them over ten times slower on a loaded 2-core machine (a ResNet-18 at 64 px: 1.2 s with 2 threads, 0.05 s
with 1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
