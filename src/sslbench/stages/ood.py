"""The ood area of `evaluate@<method>`, alone: OOD detection scores and metrics from the cached embeddings, written
under `reports/ood/` (`sslbench.areas.ood`).

python -m sslbench.stages.ood method=simclr dataset=shapes ood.knn_k=50
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from sslbench.areas import ood as area
from sslbench.data.splits import classes_on_disk
from sslbench.stages._entry import stage_main


def run(cfg: DictConfig) -> dict[str, Any]:
    classes_on_disk(cfg)  # a copy with a subset of the classes is evaluated over the classes it has
    return area.run(area.settings(cfg))


main = stage_main(run, "ood")

if __name__ == "__main__":
    main()
