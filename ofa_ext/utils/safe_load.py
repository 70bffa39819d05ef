"""Let `torch.load(weights_only=True)` read fairseq and OFA checkpoints.

torch >= 2.6 refuses pickled objects other than tensors and containers by default. OFA's releases
pickle `argparse.Namespace`; fairseq pickles its OmegaConf config, and re-pickles a loaded state
when it broadcasts a checkpoint to the other ranks of a distributed run. Allow-listing exactly these
config classes keeps the safe loader on (no arbitrary code from a checkpoint file).
"""

import argparse
import collections
import typing

import torch
from fairseq.distributed.utils import _TensorPlaceholder
from omegaconf import DictConfig, ListConfig, base, nodes

CONFIG_CLASSES = [
    argparse.Namespace,
    DictConfig, ListConfig, base.ContainerMetadata, base.Metadata,
    nodes.AnyNode, nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode,
    typing.Any, dict, list, int, float, bool, str, collections.defaultdict,
    _TensorPlaceholder,  # fairseq's stand-in for tensors inside a broadcast checkpoint
]


def allow_config_classes() -> None:
    torch.serialization.add_safe_globals(CONFIG_CLASSES)


allow_config_classes()
