"""Published archs: state-dict keys, shapes and parameter counts equal the official ones.

The official lists in tests/data/ofa_keys/ come from an independent, spec-derived generator
(make_keys.py); its naming is checked against the reference checkpoint's 425 keys and its counts
against specs/ofa.md §2.1.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ofa_ext.models.ofa.archs import OFA_DICT_SIZE, PUBLISHED_ARCHS
from ofa_ext.models.ofa.placeholder_dict import SizedDictionary
from ofa_ext.models.registered import OFAFairseqModel, to_ofa_config

DATA = Path(__file__).resolve().parent / "data" / "ofa_keys"
# specs/ofa.md §2.1: (params with script flags, params with bare arch defaults, keys with script flags)
SPEC = {
    "ofa_tiny": (33_488_336, 33_465_760, 543),
    "ofa_medium": (92_892_000, 92_846_848, 849),
    "ofa_base": (182_238_536, 182_136_944, 967),
    "ofa_large": (472_977_152, 472_706_240, 1627),
    "ofa_huge": (929_486_848, 928_994_560, 1903),
}


def _generator():
    spec = importlib.util.spec_from_file_location("make_keys", DATA / "make_keys.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _meta_model(cfg, dict_size=OFA_DICT_SIZE):
    with torch.device("meta"):
        return OFAFairseqModel.build_from_config(cfg, SizedDictionary(dict_size))


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", PUBLISHED_ARCHS)
def test_arch_matches_official_keys(arch):
    official = json.loads((DATA / f"{arch}.json").read_text())
    model = _meta_model(to_ofa_config({"_name": arch}, script_flags=True))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(official["keys"])  # same keys, same order
    assert ours == official["keys"]
    assert _params(model) == official["params"] == SPEC[arch][0]
    assert len(ours) == SPEC[arch][2]


@pytest.mark.parametrize("arch", PUBLISHED_ARCHS)
def test_bare_arch_defaults_param_count(arch):
    model = _meta_model(to_ofa_config({"_name": arch}, script_flags=False))
    assert _params(model) == SPEC[arch][1]


def test_generator_matches_spec_counts():
    gen = _generator()
    for arch, size in gen.SIZES.items():
        keys = gen.official_keys(*size)
        assert (gen.unique_params(keys), len(keys)) == (SPEC[arch][0], SPEC[arch][2])


def test_generator_matches_reference_checkpoint_spec(reference_dir):
    spec = json.loads((reference_dir / "ofa_reference" / "checkpoint_spec.json").read_text())
    ref = [(k, s) for k, s, _ in spec["tensors"]]
    assert _generator().official_keys(128, 512, 2, 2, 4, (3, 4, 6)) == ref


def test_custom_small_from_stored_config_matches_reference_keys(reference_dir):
    """Built from the reference checkpoint's stored config (a dict), our keys equal its 425 keys in order."""
    from ofa_ext.api import config_from_checkpoint

    spec = json.loads((reference_dir / "ofa_reference" / "checkpoint_spec.json").read_text())
    state = {"cfg": spec["checkpoint_entries"]["cfg"], "model": {}}
    model = _meta_model(config_from_checkpoint(state))
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(k, s) for k, s, _ in spec["tensors"]]
    assert _params(model) == spec["config"]["unique_parameters"]
