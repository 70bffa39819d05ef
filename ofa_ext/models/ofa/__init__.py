"""OFA encoder-decoder, parameter names equal to the official OFA checkpoints.

Module map: resnet (visual trunk), positions (bucket tables), embeddings (position-bias maths),
attention, layers (+ drop_path), encoder, decoder, model, archs (size table), config (options),
mismatch (state-dict report), checkpoint (official-file loading).
"""

from .archs import ARCH_SIZES, OFA_DICT_SIZE, PUBLISHED_ARCHS
from .config import OFABackboneConfig
from .mismatch import CheckpointMismatchError
from .model import OFAModel

__all__ = ["ARCH_SIZES", "OFA_DICT_SIZE", "PUBLISHED_ARCHS", "OFABackboneConfig", "CheckpointMismatchError", "OFAModel"]
