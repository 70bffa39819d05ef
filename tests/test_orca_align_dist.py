"""ORCA's alignment loss on 2 CPU processes (gloo) = on 1 process with the whole class batches.

Each rank embeds its shard of every class batch (uneven shards on purpose), the shards are
gathered differentiably, the loss is evaluated on the full clouds, parameter gradients are
averaged over ranks as DDP does, and one SGD step is taken. Loss and updated embedder must
equal the 1-process run.
"""

import os
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ofa_ext.metrics.alignment import (AlignmentObjective, class_order, gather_cloud,
                                       shared_generator, weighted_alignment)
from ofa_ext.metrics.kmeans import class_weights

SEED, UPDATE = 3, 7


def _data():
    g = torch.Generator().manual_seed(0)
    ys = torch.arange(40) % 4
    xs = torch.randn(40, 5, generator=g) + 2 * torch.nn.functional.one_hot(ys, 5).float()
    target = torch.randn(15, 3, generator=g)
    tlabels = torch.tensor([0] * 7 + [1] * 8)  # class 0: 7 rows (4 + 3 on 2 ranks)
    return xs, ys, target, tlabels


def _embedder():
    torch.manual_seed(11)
    return torch.nn.Linear(3, 5)


def _step(objective_name, rank=0, world=1):
    """One ORCA update: Σ_c w_c D(source, embed(class c)), backward, grads averaged, SGD step."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    xs, ys, target, tlabels = _data()
    obj = AlignmentObjective(objective_name, xs, ys, seed=SEED)
    emb = _embedder()
    clouds = {}
    for c in (0, 1):
        rows = target[tlabels == c]
        shard = torch.tensor_split(rows, world)[rank]
        clouds[c] = gather_cloud(emb(shard))
    loss, per_class = weighted_alignment(obj, clouds, class_weights(tlabels), SEED, UPDATE)
    loss.backward()
    for p in emb.parameters():
        if world > 1:
            dist.all_reduce(p.grad)
            p.grad /= world
    with torch.no_grad():
        for p in emb.parameters():
            p -= 0.5 * p.grad
    return float(loss.detach()), per_class, [p.detach().clone() for p in emb.parameters()]


OBJECTIVES = ("otdd-exact", "otdd-gaussian", "mmd", "l2")


def _worker(rank, world, init_file, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {name: _step(name, rank, world) for name in OBJECTIVES}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def _two_process_results(tmp_path):
    out = tmp_path / "results.pt"
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(out)),
                       nprocs=2, join=True, start_method="spawn")
    return torch.load(out)


@pytest.fixture(scope="module")
def two_process(tmp_path_factory):
    return _two_process_results(tmp_path_factory.mktemp("orca_dist"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", OBJECTIVES)
def test_two_processes_equal_one_process(two_process, name):
    loss1, per1, params1 = _step(name)
    loss2, per2, params2 = two_process[name]
    assert loss2 == pytest.approx(loss1, rel=1e-5)
    assert per2.keys() == per1.keys()
    for c in per1:
        assert per2[c] == pytest.approx(per1[c], rel=1e-5)
    for a, b in zip(params1, params2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    moved = [p for p in params1]
    assert any((m - p0).abs().max() > 0 for m, p0 in zip(moved, _embedder().parameters()))


def test_rank_shared_randomness_is_a_function_of_its_keys():
    assert class_order([0, 1, 2, 3], 5, 2) == class_order([0, 1, 2, 3], 5, 2)
    orders = {tuple(class_order(list(range(6)), 5, u)) for u in range(10)}
    assert len(orders) > 1  # a fresh order per update
    a = torch.randint(0, 100, (8,), generator=shared_generator(1, 2, 3))
    b = torch.randint(0, 100, (8,), generator=shared_generator(1, 2, 3))
    c = torch.randint(0, 100, (8,), generator=shared_generator(1, 2, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gather_is_the_identity_on_one_process():
    x = torch.randn(3, 2)
    assert gather_cloud(x) is x
    assert not dist.is_initialized()
    assert os.environ.get("RANK") in (None, "0")
