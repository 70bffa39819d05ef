"""A stand-in for fairseq's Dictionary when only its size matters (meta builds, loading weights).

The model reads `len(dictionary)` and `dictionary.pad()` only; real tokenisation needs the task's
dictionary. Special ids follow fairseq: bos 0, pad 1, eos 2, unk 3.
"""

from .archs import OFA_DICT_SIZE


class SizedDictionary:
    """`len()` = size; no symbols. `indices` is empty, so `<mask>` counts as absent."""

    def __init__(self, size: int = OFA_DICT_SIZE, has_mask: bool = True) -> None:
        if size < 4:
            raise ValueError(f"a dictionary needs at least the 4 fairseq specials; got size {size}")
        self.size = size
        self.indices = {"<mask>": 50264} if has_mask else {}

    def __len__(self) -> int:
        return self.size

    def bos(self) -> int:
        return 0

    def pad(self) -> int:
        return 1

    def eos(self) -> int:
        return 2

    def unk(self) -> int:
        return 3
