"""Score a saved encoder with the logistic probe of benchmarks/calibrate.py on the val split (never test).

    python -m sslbench.stages.pretrain method=supervised pretrain.lr_scale=0.25 \
        paths.models=/tmp/x/models paths.reports=/tmp/x/reports
    python benchmarks/encoder_probe.py /tmp/x/models supervised

A scikit-learn `LogisticRegression(C=0.1)` on standardised embeddings (`encoder(x).embedding`: mu for Bayes-H, h
otherwise) of the prepared train split, scored on the val split. Used in the README ("Results") to compare
pretraining settings without running the whole study; needs `dvc repro prepare` first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from sslbench.data.splits import open_split
from sslbench.models.encoder import load_encoder


def embed(encoder: torch.nn.Module, data: str, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    source = open_split(data, dataset, split)
    x = torch.from_numpy(np.array(source.images(slice(None)))).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return torch.cat([encoder(x[i : i + 500]).embedding for i in range(0, len(x), 500)]).numpy(), source.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", help="the folder holding <method>/encoder.pt")
    parser.add_argument("method")
    parser.add_argument("--data", default="data")
    parser.add_argument("--dataset", default="shapes")
    args = parser.parse_args()
    encoder, _ = load_encoder(Path(args.models) / args.method, args.method)
    a, ya = embed(encoder, args.data, args.dataset, "train")
    b, yb = embed(encoder, args.data, args.dataset, "val")
    scaler = StandardScaler().fit(a)
    clf = LogisticRegression(max_iter=300, C=0.1).fit(scaler.transform(a), ya)
    print(f"{args.method}: val logistic-probe top-1 {clf.score(scaler.transform(b), yb):.3f}")


if __name__ == "__main__":
    main()
