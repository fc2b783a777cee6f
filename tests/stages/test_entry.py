from sslbench.stages._entry import dvc_dict_to_overrides


def test_dvc_dict_unpacking_becomes_hydra_overrides() -> None:
    # dvc.yaml puts ${item} last, so a bare `--flag` (a true boolean) is followed only by other pairs
    argv = ["method=bayes", "pretrain.epochs=2", "--module.beta", "0.01", "--module.flag", "--encoder.prior", "mog"]
    assert dvc_dict_to_overrides(argv, "method") == [
        "method=bayes",
        "pretrain.epochs=2",
        "method.module.beta=0.01",
        "method.module.flag=true",
        "++method.encoder.prior=mog",
    ]


def test_dvc_list_values_become_hydra_lists() -> None:
    # DVC renders `encoder: {projector_dims: [1024, 128]}` as `--encoder.projector_dims 1024 128`
    argv = ["method=bt", "--encoder.projector_dims", "1024", "128", "--module.mc_samples", "2"]
    assert dvc_dict_to_overrides(argv, "method") == [
        "method=bt", "++method.encoder.projector_dims=[1024,128]", "method.module.mc_samples=2"]


def test_plain_overrides_untouched() -> None:
    assert dvc_dict_to_overrides(["a=1", "--hydra-help"], "method") == ["a=1", "--hydra-help"]
