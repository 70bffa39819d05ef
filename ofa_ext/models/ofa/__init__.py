"""OFA encoder-decoder, parameter names equal to the official OFA checkpoints.

Module map: resnet (visual trunk), positions (bucket tables), position_bias (bias maths),
attention, layers (+ drop_path), encoder, decoder, model, archs (size table), config (options),
mismatch (state-dict report), checkpoint (official-file loading).
"""

# checkpoint: importing it allow-lists argparse.Namespace for torch.load (weights_only), so that
# fairseq's own reader accepts official files (--restore-file / --finetune-from-model).
from . import checkpoint  # noqa: F401
from .archs import ARCH_SIZES, OFA_DICT_SIZE, PUBLISHED_ARCHS
from .config import OFABackboneConfig
from .mismatch import CheckpointMismatchError
from .model import OFAModel

__all__ = ["ARCH_SIZES", "OFA_DICT_SIZE", "PUBLISHED_ARCHS", "OFABackboneConfig", "CheckpointMismatchError", "OFAModel"]
