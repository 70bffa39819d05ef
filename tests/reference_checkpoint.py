"""Rebuild the official-layout checkpoint of tests/data/ofa_reference from its spec (our own code).

The reference outputs were produced by the official OFA code with a checkpoint whose every value is
a function of its key and shape (tests/data/ofa_reference/README.md, "How the values are made").
This module makes that checkpoint from `checkpoint_spec.json` and checks the state-dict digest
recorded there, so a wrong rebuild fails instead of comparing against the wrong weights.

    python tests/reference_checkpoint.py OUT_DIR      # writes OUT_DIR/custom_small_shared.pt
"""

import hashlib
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

SPEC = Path(__file__).resolve().parent / "data" / "ofa_reference" / "checkpoint_spec.json"
FILE_NAME = "custom_small_shared.pt"


def _values(key: str, shape: list) -> np.ndarray:
    """float32 values of one tensor: a RandomState seeded by crc32("shared/" + key)."""
    leaf, n = key.rsplit(".", 1)[-1], int(np.prod(shape, dtype=np.int64))
    if leaf == "version":
        return np.full(shape, 3.0, dtype=np.float32)
    rng = np.random.RandomState(zlib.crc32(f"shared/{key}".encode()))
    if leaf == "running_var":
        v = 0.5 + rng.random_sample(n)
    elif leaf in ("running_mean", "bias"):
        v = 0.1 * rng.standard_normal(n)
    elif leaf == "c_attn" or (leaf == "weight" and len(shape) == 1):
        v = 1.0 + 0.1 * rng.standard_normal(n)
    elif leaf == "weight" and len(shape) in (2, 4):
        fan_in = int(np.prod(shape[1:]))
        v = rng.standard_normal(n) * float(fan_in) ** -0.5
    else:
        raise KeyError(f"{SPEC}: no value rule for float tensor {key} {shape}")
    return v.astype(np.float32).reshape(shape)


def _index_buffer(key: str, shape: list, spec: dict) -> np.ndarray:
    """The int64 position-bucket buffers OFA builds (described in the spec's int64_buffers)."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.zeros(shape, dtype=np.int64)
    if leaf == "token_rp_bucket":  # Toeplitz in (i - j)
        by_offset = np.asarray(spec["token_rp_bucket_by_offset"], dtype=np.int64)
        i = np.arange(shape[0])
        return by_offset[i[:, None] - i[None, :] + shape[0] - 1]
    b = spec["image_bucket_size"]
    if leaf == "image_rp_bucket":
        p = np.arange(b * b)
        rows, cols = p // b, p % b
        out = np.zeros((b * b + 1, b * b + 1), dtype=np.int64)
        out[1:, 1:] = (rows[:, None] - rows[None, :] + b - 1) * (2 * b - 1) + (cols[:, None] - cols[None, :] + b - 1)
        n_rel = (2 * b - 1) ** 2 + 3
        out[0, :], out[:, 0], out[0, 0] = n_rel - 3, n_rel - 2, n_rel - 1
        return out
    if leaf == "image_position_idx":
        w = spec["code_window"]
        grid = [c + b * r + 1 for r in range(w) for c in range(w)]
        return np.asarray([0] + grid + [spec["code_position_fill"]] * (shape[0] - 1 - w * w), dtype=np.int64)
    raise KeyError(f"{SPEC}: no rule for int64 buffer {key}")


def _digest(key: str, arr: np.ndarray) -> str:
    h = hashlib.sha256(f"{key}\0{arr.dtype.str}\0{list(arr.shape)}\0".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def build(out_dir: Path, spec_path: Path = SPEC) -> Path:
    """Write OUT_DIR/custom_small_shared.pt; raises ValueError naming the tensors whose digest differs."""
    spec = json.loads(Path(spec_path).read_text())
    first_of = {k: group[0] for group in spec["tied"] for k in group}
    arrays, state, digests = {}, {}, {}
    for key, shape, dtype in spec["tensors"]:
        src = first_of.get(key, key)
        if src not in arrays:
            arrays[src] = _values(src, shape) if dtype == "float32" else _index_buffer(src, shape, spec["int64_buffers"])
            if list(arrays[src].shape) != list(shape) or arrays[src].dtype.name != dtype:
                raise ValueError(f"{spec_path}: {src} built as {arrays[src].dtype}{list(arrays[src].shape)}, "
                                 f"spec says {dtype}{shape}")
            state[src] = torch.from_numpy(arrays[src])
        state[key] = state[src]  # tied keys share one storage, as in OFA's files
        digests[key] = _digest(key, arrays[src])
    total = hashlib.sha256("".join(f"{k} {d}\n" for k, d in digests.items()).encode()).hexdigest()
    if total != spec["state_dict_sha256"]:
        bad = [k for k, d in digests.items() if spec["tensor_sha256_16"].get(k) != d[:16]]
        raise ValueError(f"{spec_path}: rebuilt state dict differs from the recorded one in {len(bad)} tensors, "
                         f"e.g. {bad[:5]} (numpy {np.__version__})")
    ckpt = {name: state if name == "model" else spec["checkpoint_entries"][name] for name in spec["checkpoint_key_order"]}
    out = Path(out_dir) / FILE_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
