"""Which source rows (and which Gumbel noise) PaRe pairs with each target batch.

PaRe mixes every target batch with a source batch of *exactly* the same size (the released code
skips the mix when the sizes differ, e.g. on a last partial batch). The source stream here is one
seeded permutation of the source rows per pass, cut into blocks of ``batch_size`` rows (a pass
drops its last partial block; the next pass reshuffles, so every row is used). The g-th target
batch of an epoch takes the first ``b`` rows of block g, where g counts batches over all ranks
the way fairseq deals them out (rank r gets batches r, r + W, r + 2W, ...): g = local count · W + r.

So ranks never share source rows within a pass (rank-sharded), the stream never ends, every epoch
reshuffles (the permutation is seeded by (seed, epoch, pass)), and a run on W processes pairs each
target batch with the same source rows, and the same noise, as a run on one process with
``--update-freq W``, which makes the 2-process = 1-process check exact.
"""

from typing import Optional

import numpy as np
import torch


def check_source_rows(n_rows: int, batch_size: int, path: str) -> None:
    """Setup-time check: one block of source rows per target batch must exist."""
    if batch_size < 1:
        raise ValueError(f"PaRe needs --batch-size >= 1 (the source batch matches it), got {batch_size}")
    if n_rows < batch_size:
        raise ValueError(f"{path}: {n_rows} source rows, fewer than one batch (--batch-size {batch_size})")


class SourceBatches:
    """Endless, rank-sharded draw of source row indices for successive target batches."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        check_source_rows(n_rows, batch_size, "source set")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.n_rows, self.batch_size, self.seed = n_rows, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.blocks_per_pass = n_rows // batch_size
        self.epoch, self.count = 1, 0
        self._perm: Optional[tuple[tuple[int, int], np.ndarray]] = None  # ((epoch, pass), permutation) last used

    def set_epoch(self, epoch: int) -> None:
        """Restart the count at the beginning of ``epoch`` (fairseq's 1-based epoch)."""
        self.epoch, self.count = epoch, 0

    def next_batch(self, b: int) -> tuple[torch.Tensor, int]:
        """(indices [b] of the source rows for this rank's next target batch of size b, global batch g)."""
        g = self.count * self.world_size + self.rank
        self.count += 1
        return self.rows_for(g, b), g

    def rows_for(self, g: int, b: int) -> torch.Tensor:
        """The first b rows of block g of this epoch's stream."""
        if not 1 <= b <= self.batch_size:
            raise ValueError(f"a target batch of {b} samples; PaRe's source blocks hold --batch-size {self.batch_size}")
        pass_idx, block = divmod(g, self.blocks_per_pass)
        key = (self.epoch, pass_idx)
        if self._perm is None or self._perm[0] != key:
            self._perm = (key, np.random.default_rng([self.seed, *key]).permutation(self.n_rows))
        start = block * self.batch_size
        return torch.from_numpy(self._perm[1][start:start + b].copy())

    def noise_generator(self, g: int, device: torch.device) -> torch.Generator:
        """The generator of the Gumbel noise for global batch g (same on any number of ranks)."""
        state = np.random.SeedSequence([self.seed, self.epoch, g, 1]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))
