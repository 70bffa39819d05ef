"""Shared pytest fixtures: the reference data in tests/data and small OFA builders."""

import os
from pathlib import Path

import pytest

# Copies of the official references (OFA forward outputs, RefCOCO pipeline and evaluation, OFA's BPE
# files): the tests run from a clone alone, and a missing file is a failure, never a skip.
TEST_DATA = Path(__file__).resolve().parent / "data"
REFERENCE_FOLDERS = ("ofa_reference", "refcoco_reference", "ofa_bpe")


def pytest_configure(config):
    """One intra-op thread by default: the models are tiny, and on a busy 2-core machine OpenMP
    spin-waiting makes 2 threads 5-30x slower. Override with OFA_TEST_THREADS=N."""
    import torch

    torch.set_num_threads(int(os.environ.get("OFA_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """tests/data, holding the reference folders (fails when one is missing)."""
    missing = [name for name in REFERENCE_FOLDERS if not (TEST_DATA / name).is_dir()]
    if missing:
        pytest.fail(f"reference data missing from {TEST_DATA}: {missing} (they are part of the repository)")
    return TEST_DATA


@pytest.fixture(scope="session")
def reference_checkpoint(reference_dir, tmp_path_factory) -> Path:
    """custom_small_shared.pt rebuilt once per session from its spec by tests/reference_checkpoint.py."""
    from reference_checkpoint import build

    return build(tmp_path_factory.mktemp("ofa_reference"), reference_dir / "ofa_reference" / "checkpoint_spec.json")


def small_dictionary(n_symbols: int = 60):
    """A fairseq Dictionary with the 4 specials + `n_symbols` words (ids 4 …)."""
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(n_symbols):
        d.add_symbol(f"w{i}")
    return d


@pytest.fixture
def ofa_nano():
    """Factory: `ofa_nano(**overrides) -> (model, cfg, dictionary)`, seeded, script flags on."""
    import torch

    from ofa_ext.models.registered import OFAFairseqModel, to_ofa_config

    def build(seed: int = 0, dictionary=None, **overrides):
        torch.manual_seed(seed)
        cfg = to_ofa_config({"_name": "ofa_nano", **overrides}, script_flags=True)
        d = dictionary if dictionary is not None else small_dictionary()
        return OFAFairseqModel.build_from_config(cfg, d), cfg, d

    return build
