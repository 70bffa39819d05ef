"""Position index tables of OFA: relative-position buckets and image position ids.

These are integer buffers stored in every official checkpoint (`token_rp_bucket`,
`image_rp_bucket`, `decoder.image_position_idx`), so they are rebuilt here exactly, including
OFA's float32 logarithm in the text buckets (a float64 log changes a few bucket edges).
"""

import math

import torch

NUM_SPECIAL_IMAGE_BUCKETS = 3  # query id 0, key id 0, and both


def token_bucket_by_offset(bucket_size: int, max_position: int) -> torch.Tensor:
    """Bucket index (already shifted to 0 … 2·bucket_size−2) for offsets −(max_position−1) … max_position−1.

    Offsets |i−j| ≤ bucket_size/2 keep their exact value; farther ones are log-spaced.
    """
    rel = torch.arange(-(max_position - 1), max_position, dtype=torch.long)  # i - j
    mid = bucket_size // 2
    near = (rel < mid) & (rel > -mid)
    a = torch.where(near, torch.full_like(rel, mid - 1), rel.abs())
    # float32 on purpose: OFA computes the log on a float32 tensor.
    log_pos = torch.ceil(torch.log(a.float() / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    bucket = torch.where(a <= mid, rel, log_pos.long() * torch.sign(rel))
    return bucket + bucket_size - 1


def make_token_bucket_position(bucket_size: int, max_position: int = 1024) -> torch.Tensor:
    """[max_position, max_position] int64 table T[i, j] = bucket of offset i − j (Toeplitz)."""
    by_offset = token_bucket_by_offset(bucket_size, max_position)
    i = torch.arange(max_position)
    return by_offset[i[:, None] - i[None, :] + max_position - 1]


def num_image_relative_buckets(bucket_size: int) -> int:
    """Rows of an image relative-position table: (2·b−1)² offsets + 3 special indices."""
    return (2 * bucket_size - 1) ** 2 + NUM_SPECIAL_IMAGE_BUCKETS


def make_image_bucket_position(bucket_size: int) -> torch.Tensor:
    """[b²+1, b²+1] int64 table indexed by image position ids (id = c + r·b + 1; id 0 is special)."""
    b = bucket_size
    cells = torch.arange(b * b)
    row, col = cells // b, cells % b
    n_rel = num_image_relative_buckets(b)
    table = torch.empty(b * b + 1, b * b + 1, dtype=torch.long)
    table[1:, 1:] = (row[:, None] - row[None, :] + b - 1) * (2 * b - 1) + (col[:, None] - col[None, :] + b - 1)
    table[0, :] = n_rel - 3
    table[:, 0] = n_rel - 2
    table[0, 0] = n_rel - 1
    return table


def image_position_ids(h: int, w: int, bucket_size: int, device=None) -> torch.Tensor:
    """Row-major ids of an h×w patch grid on the b-wide bucket grid: c + r·b + 1 → [h·w]."""
    if h > bucket_size or w > bucket_size:
        raise ValueError(
            f"image patch grid {h}x{w} exceeds image_bucket_size={bucket_size} "
            f"(images must be at most {16 * bucket_size} px per side)"
        )
    r = torch.arange(h, device=device)[:, None]
    c = torch.arange(w, device=device)[None, :]
    return (c + r * bucket_size + 1).reshape(-1)


CODE_POSITION_FILL = 1024  # OFA's literal fill value after the code grid


def make_code_image_position_idx(code_window: int, bucket_size: int, length: int) -> torch.Tensor:
    """OFA's `decoder.image_position_idx` [length]: [0] + ids of a code_window² grid + fill 1024.

    Only image-code generation reads it; OFA's loader overwrites it from the built model, so do we.
    """
    ids = image_position_ids(code_window, code_window, bucket_size)
    out = torch.full((length,), CODE_POSITION_FILL, dtype=torch.long)
    out[0] = 0
    out[1 : 1 + ids.numel()] = ids
    return out


# OFA builds the text bucket table at this size whatever the config.
TOKEN_BUCKET_MAX_POSITION = 1024


def register_bucket_buffers(module: torch.nn.Module, token_bucket_size: int, image_bucket_size: int) -> None:
    """The buffers every OFA encoder and decoder carries, in the official state-dict order:
    `version` (fairseq's 3.0), `token_rp_bucket` and `image_rp_bucket`."""
    module.register_buffer("version", torch.full((1,), 3.0))
    module.register_buffer("token_rp_bucket", make_token_bucket_position(token_bucket_size, TOKEN_BUCKET_MAX_POSITION))
    module.register_buffer("image_rp_bucket", make_image_bucket_position(image_bucket_size))
