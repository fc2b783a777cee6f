"""The machinery of a self-supervised training run (the `pretrain` stage's library).

- `config`: the method's LightningModule built from the composed config (encoder spec, optimizer, views);
- `data`: the batch sampler and reader that make an epoch's data order a function of (seed, epoch) and let a run
  resume mid-epoch;
- `callbacks`: the per-step history (with the held batch's collapse indicators), the atomic `last.ckpt`
  checkpointer, and the progress lines shown when there is no terminal;
- `live`: the run's training log through DVCLive's Lightning logger, limited to the files dvc.yaml declares;
- `checkpoint`: the checks of a checkpoint before it is resumed;
- `fit`: the Lightning `Trainer` run itself (devices, processes, CPU SyncBatchNorm, resumption);
- `metrics`: the collapse indicators and the summary metrics of a run.
"""
