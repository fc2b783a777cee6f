"""The evaluation areas of `evaluate@<method>`, each on the method's cached embeddings: `probe` (accuracy),
`robustness` (corruption errors and mCE) and `ood` (OOD detection).

Each area is `settings(cfg) -> <Area>Settings` (the area's config section read and checked, before any work) and
`run(settings, probe=None) -> metrics`, which reads its inputs, computes, and writes its outputs. The three areas fit
the same linear probe on the main train split (`common.train_probe`); the `evaluate` stage trains it once
(`common.main_probes`) and passes it to each, while each area run alone trains it itself.
"""
