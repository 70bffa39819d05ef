"""``ofa-train``: `fairseq-train` whose checkpoints survive a kill or a full disk.

    ofa-train DATA --task refcoco --arch ofa_base ...      # every fairseq-train option; --user-dir not needed

fairseq writes the first file of a save atomically and copies it to the others (`checkpoint_best.pt`,
`checkpoint_last.pt`, ...) with a plain copy, so a kill or a full disk during a copy leaves a
truncated file. fairseq has no hook around those copies, and a plugin that rewired them on import
would change fairseq for every process that loads the user dir; so this thin entry point runs
fairseq's own training loop with two substitutions in its process only: copies go through a
temporary file and one rename (:func:`~ofa_ext.utils.checkpoint_files.atomic_copy`), and a failed
first write removes its `.tmp`. Every checkpoint is then complete or absent. `fairseq-train
--user-dir ofa_ext` keeps fairseq's copies; there, the start-up check of the task (stale `*.tmp`
removed, a truncated checkpoint recovered or removed, with a warning) repairs what a kill left.
"""

import os
import sys
from typing import List, Optional

from ..utils.checkpoint_files import atomic_copy
from ..utils.errors import cli_entry


def use_atomic_checkpoint_writes() -> None:
    """Point fairseq's checkpoint module (in this process) at atomic copies; idempotent."""
    from fairseq import checkpoint_utils
    from fairseq.file_io import PathManager

    if getattr(checkpoint_utils.PathManager, "atomic_copies", False):
        return

    class AtomicCopyPathManager(PathManager):
        atomic_copies = True

        @staticmethod
        def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
            if os.path.exists(dst_path) and not overwrite:
                return False
            atomic_copy(src_path, dst_path)
            return True

    plain_save = checkpoint_utils.torch_persistent_save

    def save_or_clean(obj, filename, async_write: bool = False):
        try:
            return plain_save(obj, filename, async_write)
        except BaseException:
            if os.path.exists(filename + ".tmp"):
                os.unlink(filename + ".tmp")
            raise

    checkpoint_utils.PathManager = AtomicCopyPathManager
    checkpoint_utils.torch_persistent_save = save_or_clean


@cli_entry("ofa-train")
def main(argv: Optional[List[str]] = None) -> int:
    import fairseq_cli.train

    import ofa_ext  # noqa: F401  (registrations; --user-dir is optional)

    use_atomic_checkpoint_writes()
    sys.argv = ["ofa-train"] + list(sys.argv[1:] if argv is None else argv)
    fairseq_cli.train.cli_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
