"""PaRe's source stream: exact batch sizes, rank sharding, reshuffles, W ranks x B/W = 1 rank x B."""

import pytest
import torch

from ofa_ext.models.crossmodal.pare_source import SourceBatches, check_source_rows


def test_exact_sizes_endless_and_every_row_used():
    src = SourceBatches(n_rows=10, batch_size=4, seed=1)
    src.set_epoch(1)
    sizes = [4, 4, 3, 4, 1, 4, 4, 2]
    drawn = [src.next_batch(b)[0] for b in sizes]
    assert [len(d) for d in drawn] == sizes
    for p in range(4):  # a pass = 2 disjoint blocks of 4 (the permutation's last 2 rows wait for a later pass)
        a, b = drawn[2 * p].tolist(), drawn[2 * p + 1].tolist()
        assert len(set(a) | set(b)) == len(a) + len(b)
    more = torch.cat([src.next_batch(4)[0] for _ in range(40)])
    assert set(more.tolist()) == set(range(10))  # reshuffled passes reach every row


def test_two_ranks_with_half_batches_equal_one_process():
    one = SourceBatches(42, 8, seed=3)
    ranks = [SourceBatches(42, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in (one, *ranks):
        s.set_epoch(2)
    dev = torch.device("cpu")
    for step in range(12):  # more than one pass (5 blocks of 8 per pass)
        rows, block = one.next_batch(8)
        noise_t, noise_s = one.noise(block, 8, (5, 3), dev)
        halves = [s.next_batch(4) for s in ranks]
        assert torch.equal(torch.cat([h[0] for h in halves]), rows)
        assert len(set(halves[0][0].tolist()) & set(halves[1][0].tolist())) == 0  # sharded
        noises = [s.noise(h[1], 4, (5, 3), dev) for s, h in zip(ranks, halves)]
        assert torch.equal(torch.cat([n[0] for n in noises]), noise_t)
        assert torch.equal(torch.cat([n[1] for n in noises]), noise_s)


def test_epochs_reshuffle():
    s = SourceBatches(30, 6, seed=0)
    s.set_epoch(1)
    first = s.next_batch(6)[0]
    s.set_epoch(2)
    assert not torch.equal(first, s.next_batch(6)[0])
    s.set_epoch(1)
    assert torch.equal(first, s.next_batch(6)[0])  # re-running an epoch gives the same rows
    n1 = s.noise(0, 6, (4,), torch.device("cpu"))[0]
    assert not torch.equal(n1, s.noise(1, 6, (4,), torch.device("cpu"))[0])


def test_bad_source_sets():
    with pytest.raises(ValueError, match=r"^src\.safetensors: 7 source rows, fewer than one batch \(--batch-size 8\)$"):
        check_source_rows(7, 8, "src.safetensors")
    with pytest.raises(ValueError, match=r"15 source rows, fewer than one batch \(--batch-size 8 x 2 processes\)"):
        SourceBatches(15, 8, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="--batch-size 4"):
        SourceBatches(10, 4, seed=0).rows_for(0, 5)
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        SourceBatches(10, 4, seed=0, rank=2, world_size=2)
