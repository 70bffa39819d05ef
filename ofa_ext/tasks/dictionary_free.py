"""What fairseq asks of every task but a task on arrays or cached features does not have."""


class DictionaryFreeTask:
    """Mixin (before ``FairseqTask`` in the bases): no token dictionaries and no length limit."""

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None

    def max_positions(self):
        return None
