"""The robustness area of `evaluate@<method>`, alone: corruption errors, the mCE family and the Grad-CAM panel of
one method from its embeddings, written under `reports/robustness/` (`sslbench.areas.robustness`).

python -m sslbench.stages.robustness method=simclr dataset=shapes study.seed=0
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from sslbench.areas import robustness as area
from sslbench.data.splits import classes_on_disk
from sslbench.stages._entry import stage_main


def run(cfg: DictConfig) -> dict[str, Any]:
    classes_on_disk(cfg)  # a copy with a subset of the classes is evaluated over the classes it has
    return area.run(area.settings(cfg))


main = stage_main(run, "robustness")

if __name__ == "__main__":
    main()
