"""Which source rows (and which Gumbel noise) PaRe pairs with each target batch.

PaRe mixes every target batch with a source batch of *exactly* the same size (the released code
skips the mix when the sizes differ, e.g. on a last partial batch). The source stream here is one
seeded permutation of the source rows per pass, cut into global blocks of ``batch_size × W`` rows
(W processes; a pass drops its last partial block and the next pass reshuffles, so every row gets
used). The j-th target batch of an epoch on rank r takes ``b`` rows of global block j starting at
``r × batch_size``: rank r's slot of the block, as ``crossmodal_finetune`` deals samples out (W
processes with batch B/W see, update for update, the samples of 1 process with batch B).

So ranks never share source rows within a pass (rank-sharded), the stream never ends, every epoch
reshuffles (the permutation is seeded by (seed, epoch, pass)), and W processes with batch B/W pair
every target sample with the same source row, and the same Gumbel noise (drawn per global block
and sliced the same way), as one process with batch B: the 2-process = 1-process check is exact.
"""

from typing import Optional, Sequence

import numpy as np
import torch

from .pare_topk import gumbel_noise


def check_source_rows(n_rows: int, batch_size: int, path: str, world_size: int = 1) -> None:
    """Setup-time check: one global block of source rows (a batch on every process) must exist."""
    if batch_size < 1:
        raise ValueError(f"PaRe needs --batch-size >= 1 (the source batch matches it), got {batch_size}")
    if n_rows < batch_size * world_size:
        procs = f" x {world_size} processes" if world_size > 1 else ""
        raise ValueError(f"{path}: {n_rows} source rows, fewer than one batch (--batch-size {batch_size}{procs})")


class SourceBatches:
    """Endless, rank-sharded draw of source row indices for successive target batches."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 path: str = "source set"):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        check_source_rows(n_rows, batch_size, path, world_size)
        self.n_rows, self.batch_size, self.seed = n_rows, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.block_size = batch_size * world_size
        self.blocks_per_pass = n_rows // self.block_size
        self.epoch, self.count = 1, 0
        self._perm: Optional[tuple[tuple[int, int], np.ndarray]] = None  # ((epoch, pass), permutation) last used

    def set_epoch(self, epoch: int) -> None:
        """Restart the count at the beginning of ``epoch`` (fairseq's 1-based epoch)."""
        self.epoch, self.count = epoch, 0

    def next_batch(self, b: int) -> tuple[torch.Tensor, int]:
        """(source row indices [b] for this rank's next target batch of b samples, its global block)."""
        block = self.count
        self.count += 1
        return self.rows_for(block, b), block

    def rows_for(self, block: int, b: int) -> torch.Tensor:
        """This rank's b rows of global block ``block`` of this epoch's stream."""
        if not 1 <= b <= self.batch_size:
            raise ValueError(f"a target batch of {b} samples; PaRe's source blocks hold --batch-size {self.batch_size}")
        pass_idx, j = divmod(block, self.blocks_per_pass)
        key = (self.epoch, pass_idx)
        if self._perm is None or self._perm[0] != key:
            self._perm = (key, np.random.default_rng([self.seed, *key]).permutation(self.n_rows))
        start = j * self.block_size + self.rank * self.batch_size
        return torch.from_numpy(self._perm[1][start:start + b].copy())

    def noise(self, block: int, b: int, widths: Sequence[int], device: torch.device) -> list[torch.Tensor]:
        """Gumbel(0, 1) noise [b, w] for each width in ``widths``: this rank's rows of the global block's draw."""
        state = np.random.SeedSequence([self.seed, self.epoch, block, 1]).generate_state(1, dtype=np.uint64)[0]
        gen = torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))
        start = self.rank * self.batch_size
        return [gumbel_noise(torch.empty(self.block_size, w, device=device), gen)[start:start + b] for w in widths]
