"""Linear probe on cached embeddings vs a linear evaluation that re-encodes the images every epoch, and vs
scikit-learn's LogisticRegression on the same embeddings; same data, same run.

    python benchmarks/probe_speed.py --dataset digits --epochs 30

The embedded `digits` (scikit-learn's handwritten digits at 32 px, 1078 / 359 / 360 train / val / test; random
conv features already separate them well, so accuracies can be compared) or generated `shapes` images, one
random-init encoder (`--backbone`) or a trained one (`--model-dir models/<method>`), the study's linear probe
(docs/protocols.md: SGD lr 0.3, momentum 0.9, cosine, batch 512, weight decays 1e-4 / 1e-5 / 1e-6 selected on val):
- cached: embed train/val/test once (`embed_split` -> Parquet), read them back (`io.read_embeddings`) and train
  `sslbench.eval.linear.train_linear_probe` for `--epochs` epochs;
- re-encode: the same probe, same initialisation, batch order and updates (the same stacked SGD step), but each
  mini-batch's features come from running the frozen encoder on its images, every epoch; one extra encoding pass
  gives the standardisation statistics, and val/test are encoded once for the evaluation. The three weight decays
  share each encoded batch, the most favourable setting for the baseline;
- scikit-learn: `LogisticRegression` (lbfgs) on the standardised cached features, one fit per weight decay
  (C = 1 / (wd * N), the same L2 penalty), selected on val.
Prints each side's seconds and test top-1, and the speed ratios (target >= 20x vs re-encoding, accuracies within
0.5 points). The cached side is timed with and without its one-time embedding cost.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", choices=["digits", "shapes"])
    parser.add_argument("--n-train", type=int, default=2000, help="shapes only")
    parser.add_argument("--n-val", type=int, default=500, help="shapes only")
    parser.add_argument("--n-test", type=int, default=1000, help="shapes only")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--backbone", default="convnet")
    parser.add_argument("--model-dir", default="", help="a trained models/<method> folder instead of random init")
    parser.add_argument("--sklearn-max-iter", type=int, default=200)
    parser.add_argument("--encode-batch", type=int, default=256, help="batch of the one-time embedding pass")
    args = parser.parse_args()

    from sslbench.data.embedded import ShapesConfig, build_digits
    from sslbench.data.shapes import SHAPES, generate
    from sslbench.data.splits import open_split
    from sslbench.embedding import Target, embed_split
    from sslbench.eval.linear import (
        _cross_entropy_grads,
        _sgd_momentum_,
        accuracy,
        train_linear_probe,
    )
    from sslbench.eval.semisup import to_float_images
    from sslbench.io import EmbeddingWriter, read_embeddings, write_split
    from sslbench.models.encoder import Encoder, EncoderSpec, load_encoder

    if args.model_dir:
        encoder, _ = load_encoder(args.model_dir)
    else:
        torch.manual_seed(0)
        encoder = Encoder(EncoderSpec(backbone=args.backbone)).eval()
    wds, lr, batch, seed = [1e-4, 1e-5, 1e-6], 0.3, 512, 0

    with tempfile.TemporaryDirectory(prefix="probe-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.dataset == "digits":
            build_digits(tmp, 0, 32, ShapesConfig())
        else:
            classes = list(SHAPES)[:10]
            sizes = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
            for split, (images, labels) in generate(0, sizes, classes, 32).items():
                write_split(tmp / "datasets" / "shapes" / split, images, labels, {"classes": classes})
        sources = {s: open_split(tmp, args.dataset, s) for s in ("train", "val", "test")}
        sizes = {s: len(src) for s, src in sources.items()}

        # ---- cached: embed once, read, probe
        start = time.perf_counter()
        for split, source in sources.items():
            with EmbeddingWriter(tmp / f"{split}.parquet", method="bench", dataset=args.dataset, split=split,
                                 dim=encoder.embedding_dim) as writer:
                embed_split(encoder, Target(args.dataset, split, source, np.arange(len(source))), writer,
                            batch_size=args.encode_batch)
        t_embed = time.perf_counter() - start
        start = time.perf_counter()
        tables = {s: read_embeddings(tmp / f"{s}.parquet") for s in sizes}
        t_read = time.perf_counter() - start
        start = time.perf_counter()
        probe = train_linear_probe(tables["train"].embedding, tables["train"].label, tables["val"].embedding,
                                   tables["val"].label, num_classes=10, weight_decays=wds, epochs=args.epochs,
                                   lr=lr, batch_size=batch, seed=seed)
        cached_acc = accuracy(probe.predict(tables["test"].embedding), tables["test"].label)
        t_probe = time.perf_counter() - start

        # ---- re-encode every epoch (the same updates as train_linear_probe, features recomputed per batch)
        def encode(source: object, rows: np.ndarray) -> torch.Tensor:
            x = to_float_images(source.images(rows))
            with torch.inference_mode():
                return encoder(x).embedding.clone()

        start = time.perf_counter()
        train_src, y = sources["train"], torch.from_numpy(sources["train"].labels)
        n, k, c = len(train_src), len(wds), 10
        feats = torch.cat([encode(train_src, np.arange(i, min(i + args.encode_batch, n)))
                           for i in range(0, n, args.encode_batch)])  # statistics pass
        mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
        del feats
        gen = torch.Generator().manual_seed(seed)
        init = torch.empty(c, encoder.embedding_dim).normal_(0, 0.01, generator=gen)
        weight = init.reshape(1, -1).repeat(k, 1).reshape(k * c, -1)
        bias = torch.zeros(k * c)
        decay = torch.tensor(wds).repeat_interleave(c)
        mw, mb = torch.zeros_like(weight), torch.zeros_like(bias)
        steps, step = args.epochs * math.ceil(n / batch), 0
        for _ in range(args.epochs):
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, batch):
                idx = order[i : i + batch]
                rows = np.sort(idx.numpy())  # sequential reads; the batch is a set
                xb = (encode(train_src, rows) - mean) / std
                gw, gb = _cross_entropy_grads(xb, y[rows], weight, bias, k)
                lr_now = 0.5 * lr * (1.0 + math.cos(math.pi * step / steps))
                _sgd_momentum_(weight, gw.add_(weight * decay[:, None]), mw, lr_now)
                _sgd_momentum_(bias, gb.add_(bias * decay), mb, lr_now)
                step += 1
        val_x = (encode(sources["val"], np.arange(sizes["val"])) - mean) / std
        test_x = (encode(sources["test"], np.arange(sizes["test"])) - mean) / std
        w3, b3 = weight.reshape(k, c, -1), bias.reshape(k, c)
        val_acc = [accuracy((val_x @ w3[j].T + b3[j]).argmax(1).numpy(), sources["val"].labels) for j in range(k)]
        best = max(range(k), key=lambda j: (val_acc[j], -j))
        reencode_acc = accuracy((test_x @ w3[best].T + b3[best]).argmax(1).numpy(), sources["test"].labels)
        t_reencode = time.perf_counter() - start

    # ---- scikit-learn on the same cached embeddings
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    m, s = tables["train"].embedding.mean(0), tables["train"].embedding.std(0) + 1e-6
    xs = {name: (t.embedding - m) / s for name, t in tables.items()}
    with warnings.catch_warnings():  # lbfgs may stop at max_iter on the weakest penalty: reported below
        warnings.simplefilter("ignore")
        fits = [LogisticRegression(C=1.0 / (wd * n), max_iter=args.sklearn_max_iter).fit(xs["train"],
                                                                                          tables["train"].label)
                for wd in wds]
    sk_val = [f.score(xs["val"], tables["val"].label) for f in fits]
    sk_best = max(range(k), key=lambda j: (sk_val[j], -j))
    sk_acc = fits[sk_best].score(xs["test"], tables["test"].label)
    t_sklearn = time.perf_counter() - start

    cached_total = t_embed + t_read + t_probe
    model = args.model_dir or f"{args.backbone} random init"
    print(f"{args.dataset} 32 px, train/val/test {sizes['train']}/{sizes['val']}/{sizes['test']}, {model}, "
          f"{args.epochs} epochs, 3 weight decays, {torch.get_num_threads()} torch threads")
    print(f"cached probe:   {t_probe:7.2f} s  test top-1 {100 * cached_acc:5.1f}%  (wd {probe.weight_decay:.0e}; "
          f"one-time embed {t_embed:.2f} s + read {t_read:.2f} s)")
    print(f"re-encode:      {t_reencode:7.2f} s  test top-1 {100 * reencode_acc:5.1f}%  (wd {wds[best]:.0e})")
    iters = ", ".join(str(int(f.n_iter_[0])) for f in fits)
    print(f"sklearn LogReg: {t_sklearn:7.2f} s  test top-1 {100 * sk_acc:5.1f}%  (wd {wds[sk_best]:.0e}, lbfgs "
          f"iterations {iters} of max {args.sklearn_max_iter})")
    gap = 100 * abs(cached_acc - reencode_acc)
    print(f"speed-up vs re-encode: {t_reencode / t_probe:.1f}x probe only, {t_reencode / cached_total:.1f}x "
          f"including the one-time embedding (target >= 20x); accuracy gap {gap:.2f} points (<= 0.5: "
          f"{'ok' if gap <= 0.5 else 'NOT MET'})")
    print(f"speed-up vs sklearn: {t_sklearn / t_probe:.1f}x; accuracy difference {100 * (cached_acc - sk_acc):+.1f} "
          "points")


if __name__ == "__main__":
    main()
