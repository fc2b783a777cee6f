import torch

from sslbench.methods import dist


def test_single_process_is_a_no_op() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert not dist.is_distributed()
    assert dist.world_size() == 1 and dist.rank() == 0
    assert dist.gather(x) is x
    assert torch.equal(dist.all_reduce_mean(x), x) and torch.equal(dist.all_reduce_sum(x), x)
    assert dist.local_slice(3) == slice(0, 3)
# the multi-process behaviour (gradients equal to one process on the whole batch) is tested for every method in
# tests/methods/test_distributed.py
