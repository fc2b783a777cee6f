"""The probe area of `evaluate@<method>`, alone: linear, kNN, semi-supervised and transfer probes on the cached
embeddings, written to `reports/probe/<method>.json` (`sslbench.areas.probe`).

python -m sslbench.stages.probe method=simclr dataset=shapes probe.linear.epochs=100
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from sslbench.areas import probe as area
from sslbench.stages._entry import stage_main


def run(cfg: DictConfig) -> dict[str, Any]:
    return area.run(area.settings(cfg))


main = stage_main(run, "probe")

if __name__ == "__main__":
    main()
