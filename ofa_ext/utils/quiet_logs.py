"""Keep the logs readable: drop lines that carry no information for an OFA run.

* fairseq's trainer lists shared parameters by grouping `module._parameters` values, and every
  bias-free layer has `bias = None`, so all of them are reported as one "shared parameter" (about
  15 lines per run). Real sharing (the tied embedding) is still logged.
* matplotlib logs its font search, PIL every PNG chunk it reads, at DEBUG when a caller turns the
  root logger to DEBUG (importing fairseq does: its wav2vec2_classification module).
"""

import logging


class _NoneBiasFilter(logging.Filter):
    """Drops `detected shared parameter: a.bias <- b.bias` (bias = None in both layers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not msg.startswith("detected shared parameter: "):
            return True
        names = [n.strip() for n in msg[len("detected shared parameter: "):].split("<-")]
        return not (len(names) == 2 and all(n.endswith("bias") for n in names))


_FILTER = _NoneBiasFilter()


def install() -> None:
    """Idempotent: the filter is added once, matplotlib and PIL are raised to WARNING unless set explicitly."""
    trainer_log = logging.getLogger("fairseq.trainer")
    if not any(type(f).__name__ == _NoneBiasFilter.__name__ for f in trainer_log.filters):  # also across re-imports
        trainer_log.addFilter(_FILTER)
    for name in ("matplotlib", "PIL"):
        chatty = logging.getLogger(name)
        if chatty.level == logging.NOTSET:
            chatty.setLevel(logging.WARNING)
