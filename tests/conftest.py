"""Shared pytest fixtures: the read-only `shared/` folder and small OFA builders."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def pytest_configure(config):
    """One intra-op thread by default: the models are tiny, and on a busy 2-core machine OpenMP
    spin-waiting makes 2 threads 5-30x slower. Override with OFA_TEST_THREADS=N."""
    import torch

    torch.set_num_threads(int(os.environ.get("OFA_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "ofa_reference").is_dir():
        pytest.skip(f"shared reference folder not found at {SHARED} (expected ../shared beside the repo)")
    return SHARED


@pytest.fixture(scope="session")
def reference_checkpoint(shared_dir, tmp_path_factory) -> Path:
    """custom_small_shared.pt rebuilt once per session by the reference recipe (~140 MB, ~3 s)."""
    out = tmp_path_factory.mktemp("ofa_reference")
    script = shared_dir / "ofa_reference" / "make_checkpoint.py"
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"make_checkpoint.py failed:\n{proc.stdout}\n{proc.stderr}")
    return out / "custom_small_shared.pt"


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
