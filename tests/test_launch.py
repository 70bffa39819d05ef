"""The torchrun launcher passes each worker the fairseq flags that match its environment."""

import pytest

from ofa_ext.cli.launch import worker_flags


def test_cpu_worker_flags():
    flags = worker_flags({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, use_gpu=False)
    assert "--distributed-rank=1" in flags and "--distributed-world-size=2" in flags
    assert {"--cpu", "--distributed-backend=gloo", "--ddp-backend=legacy_ddp", "--distributed-no-spawn",
            "--distributed-init-method=env://"} <= set(flags)


def test_gpu_worker_flags():
    flags = worker_flags({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"}, use_gpu=True)
    assert "--device-id=3" in flags and "--distributed-backend=nccl" in flags and "--cpu" not in flags


def test_missing_environment_is_explained():
    with pytest.raises(SystemExit, match="RANK"):
        worker_flags({}, use_gpu=False)
