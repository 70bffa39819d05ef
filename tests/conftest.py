"""Shared pytest fixtures: the read-only `shared/` folder and small OFA builders."""

import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


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
