"""ofa_ext keeps scikit-learn and scipy.stats out of fairseq's start-up, and nothing breaks for it."""

import subprocess
import sys
import types

import pytest

from e2e_helpers import REPO

from ofa_ext.utils.deferred_imports import deferred


def test_a_fresh_ofa_process_does_not_import_sklearn_yet_fairseqs_metrics_work():
    code = """
import sys
import ofa_ext, fairseq_cli.train
assert "sklearn" not in sys.modules and "scipy.stats" not in sys.modules, sorted(m for m in sys.modules if "sklearn" in m)
from fairseq.criterions import sentence_prediction as sp
from fairseq.tasks import audio_classification as ac
from sklearn.metrics import f1_score
assert sp.f1_score([0, 1, 1], [0, 1, 0]) == f1_score([0, 1, 1], [0, 1, 0])
assert abs(sp.pearsonr([1, 2, 3], [1, 2, 4])[0] - 0.9819805060619655) < 1e-12
assert ac.sklearn_metrics.f1_score([0, 1], [0, 1]) == 1.0
import scipy.stats, sklearn.metrics
assert isinstance(sklearn.metrics, type(sys)) and hasattr(scipy.stats, "spearmanr")  # the real modules
print("ok")
"""
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_stand_ins_leave_and_never_replace_a_loaded_module():
    real = sys.modules.get("json")
    with deferred(["json", "no_such_package_xyz", "no_such_package_xyz.sub"]):
        assert sys.modules["json"] is real  # already imported: left alone
        from no_such_package_xyz import sub  # noqa: F401  (a stand-in package hands out its stand-in submodule)
        from no_such_package_xyz.sub import anything
        assert isinstance(sub, types.ModuleType) and anything.__name__ == "anything"
        with pytest.raises(AttributeError):
            sub.__file__  # noqa: B018  (torch and others probe dunders: a stand-in has none)
    assert "no_such_package_xyz" not in sys.modules and "no_such_package_xyz.sub" not in sys.modules
    with pytest.raises(ModuleNotFoundError):  # called after the block: the real import, which fails here
        anything()
