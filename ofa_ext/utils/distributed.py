"""Ending a process's part in a torch.distributed run."""


def leave_process_group() -> None:
    """Wait for every rank, then close the process group (a no-op outside a distributed run).

    fairseq ends a run with a barrier; a rank that exits without one while a peer still holds the
    gloo connections can abort that peer (SIGABRT, "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
