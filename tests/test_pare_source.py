"""PaRe's source stream: exact batch sizes, rank sharding, reshuffles, W ranks = 1 rank x update-freq W."""

import pytest
import torch

from ofa_ext.data.pare_source import SourceBatches, check_source_rows


def test_exact_sizes_endless_and_every_row_used():
    src = SourceBatches(n_rows=10, batch_size=4, seed=1)
    src.set_epoch(1)
    sizes = [4, 4, 3, 4, 1, 4, 4, 2]
    drawn = [src.next_batch(b)[0] for b in sizes]
    assert [len(d) for d in drawn] == sizes
    # a pass = 2 disjoint blocks of 4 (the permutation's last 2 rows wait for a later pass)
    for p in range(4):
        a, b = drawn[2 * p].tolist(), drawn[2 * p + 1].tolist()
        assert len(set(a) | set(b)) == len(a) + len(b)
    more = torch.cat([src.next_batch(4)[0] for _ in range(40)])
    assert set(more.tolist()) == set(range(10))  # reshuffled passes reach every row


def test_ranks_disjoint_within_a_pass_and_equal_to_one_process():
    one = SourceBatches(40, 5, seed=3)
    ranks = [SourceBatches(40, 5, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in (one, *ranks):
        s.set_epoch(2)
    single = [one.next_batch(5) for _ in range(8)]  # 1 process, update-freq 2: global batches 0..7
    for step in range(4):
        for r, s in enumerate(ranks):
            rows, g = s.next_batch(5)
            assert g == 2 * step + r
            assert torch.equal(rows, single[g][0])
    block_rows = [set(single[g][0].tolist()) for g in range(8)]  # one pass = 8 blocks of 5
    assert len(set().union(*block_rows)) == 40


def test_epochs_reshuffle_and_noise_is_keyed_by_global_batch():
    s = SourceBatches(30, 6, seed=0)
    s.set_epoch(1)
    first = s.next_batch(6)[0]
    s.set_epoch(2)
    assert not torch.equal(first, s.next_batch(6)[0])
    s.set_epoch(1)
    assert torch.equal(first, s.next_batch(6)[0])  # re-running an epoch gives the same rows
    a = torch.rand(3, generator=s.noise_generator(4, torch.device("cpu")))
    other = SourceBatches(30, 6, seed=0, rank=1, world_size=3)
    other.set_epoch(1)
    assert torch.equal(a, torch.rand(3, generator=other.noise_generator(4, torch.device("cpu"))))
    assert not torch.equal(a, torch.rand(3, generator=s.noise_generator(5, torch.device("cpu"))))


def test_bad_source_sets():
    with pytest.raises(ValueError, match=r"^src\.safetensors: 7 source rows, fewer than one batch \(--batch-size 8\)$"):
        check_source_rows(7, 8, "src.safetensors")
    with pytest.raises(ValueError, match="--batch-size 4"):
        SourceBatches(10, 4, seed=0).rows_for(0, 5)
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        SourceBatches(10, 4, seed=0, rank=2, world_size=2)
