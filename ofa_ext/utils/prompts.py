"""Reading a prompt ``(tokens, width)`` from a file, whoever wrote it.

Prompt files are safetensors: a piece file of an input-prompt run (its ``…input_prompt.prompt``
tensor, written by ``ofa-pieces export``), or a plain file with key ``prompt`` or a single 2-D
tensor (e.g. a released 100 × 768 soft prompt saved that way).
"""

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor


def load_prompt(path: str, key: str = "prompt") -> Tensor:
    """The ``(tokens, width)`` tensor of a prompt file (key ``key`` or its only 2-D tensor)."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    pieces = [k for k in tensors if k.endswith("input_prompt.prompt")]  # an ofa_ext piece file
    if key in tensors:
        t = tensors[key]
    elif len(pieces) == 1:
        t = tensors[pieces[0]]
    else:
        two_d = [k for k, v in tensors.items() if v.dim() == 2]
        if len(two_d) != 1:
            raise ValueError(f"{path}: expected a '{key}' tensor or exactly one 2-D tensor, found {sorted(tensors)}")
        t = tensors[two_d[0]]
    if t.dim() != 2:
        raise ValueError(f"{path}: '{key}' must be (tokens, width), got shape {tuple(t.shape)}")
    return t.float()
