"""The demo refuses a work folder made with other settings (it resumes by reusing what it finds)."""

import subprocess

from e2e_helpers import REPO

SCRIPT = r"""
set -euo pipefail
cd "$REPO"
export OUT=$T/out WORK=$T/out/work QUICK=1
source run_scripts/demo/common.sh
check_work_settings
"""


def check(tmp_path, **env):
    return subprocess.run(["bash", "-c", SCRIPT], env={"PATH": "/usr/bin:/bin", "REPO": str(REPO), "T": str(tmp_path),
                                                      **env}, capture_output=True, text=True, timeout=60)


def test_same_settings_resume_other_settings_are_refused(tmp_path):
    assert check(tmp_path).returncode == 0
    assert "rows=96/32/32" in (tmp_path / "out" / "work" / "settings").read_text()
    assert check(tmp_path).returncode == 0  # the same settings: the run resumes
    refused = check(tmp_path, N_TRAIN="200")
    assert refused.returncode == 2 and "made with other settings" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "rows=200/32/32" in refused.stderr


def test_an_older_demos_folder_is_refused(tmp_path):
    (tmp_path / "out" / "work" / "ckpt" / "foundation").mkdir(parents=True)
    refused = check(tmp_path)
    assert refused.returncode == 2 and "without a settings stamp" in refused.stderr
