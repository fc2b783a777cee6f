"""The study's linear probe against scikit-learn's logistic regression on the same cached embeddings, side by side.

    OMP_NUM_THREADS=1 python benchmarks/probe_vs_logistic.py random_init simclr cissl byol barlow_twins

For each method, reads `data/embeddings/<method>/<dataset>/{train,val,test}.parquet` (run the study first) and fits
- the study's probe (`sslbench.eval.linear.train_linear_probe`: SGD, 100 epochs, weight decay chosen on val), and
- `LogisticRegression` (lbfgs) on the same features standardised with the train mean and std, at C = 0.01, 0.1, 1,
then prints the train / val / test top-1 of each. Tells whether a gap between methods comes from the features or
from the probe: two probes that agree point at the features.
"""

from __future__ import annotations

import argparse

from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from sslbench.eval.linear import accuracy, train_linear_probe
from sslbench.io import embeddings_path, read_embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("methods", nargs="+")
    parser.add_argument("--data", default="data")
    parser.add_argument("--dataset", default="shapes")
    args = parser.parse_args()
    print(f"{'method':<22}{'probe':<16}{'train':>7}{'val':>7}{'test':>7}")
    for method in args.methods:
        train, val, test = (read_embeddings(embeddings_path(args.data, method, args.dataset, split))
                            for split in ("train", "val", "test"))
        num_classes = int(train.label.max()) + 1
        probe = train_linear_probe(train.embedding, train.label, val.embedding, val.label, num_classes=num_classes)
        rows = [("linear probe (SGD)", *(accuracy(probe.predict(t.embedding), t.label) for t in (train, val, test)))]
        scaler = StandardScaler().fit(train.embedding)
        standardised = [(scaler.transform(t.embedding), t.label) for t in (train, val, test)]
        for c in (0.01, 0.1, 1.0):
            clf = LogisticRegression(C=c, max_iter=2000).fit(*standardised[0])
            rows.append((f"logistic C={c:g}", *(float(clf.score(x, y)) for x, y in standardised)))
        for name, tr, va, te in rows:
            print(f"{method:<22}{name:<16}{tr:>7.3f}{va:>7.3f}{te:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
