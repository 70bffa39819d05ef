"""Beam search for OFA on fairseq's SequenceGenerator.

OFA decodes from bos (id 0) rather than eos and, for grounding, emits exactly four location tokens.
fairseq's generator already supports a bos token and min/max lengths; what it lacks is a vocabulary
constraint, added here as a beam search that masks every id outside an allowed range (plus eos,
which closes the hypothesis once the minimum length is reached). With no constraint this is plain beam search,
which is what OFA's released evaluation runs.
"""

from typing import Any, Optional

import torch
from fairseq import search
from fairseq.ngram_repeat_block import NGramRepeatBlock
from fairseq.sequence_generator import SequenceGenerator

#: OFA's grounding decoding: beam 5, exactly four tokens then eos.
GROUNDING_GENERATION = {"beam": 5, "min_len": 4, "max_len_a": 0, "max_len_b": 4, "no_repeat_ngram_size": 0}


class RangeConstrainedBeamSearch(search.BeamSearch):
    """Beam search restricted to ids in [start, end) and eos."""

    def __init__(self, tgt_dict, start: int, end: int):
        super().__init__(tgt_dict)
        allowed = torch.zeros(len(tgt_dict), dtype=torch.bool)
        allowed[tgt_dict.eos()] = True
        allowed[start:end] = True
        self.register_buffer("blocked", ~allowed, persistent=False)

    def step(self, step, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None, candidate_multiple=2):
        blocked = self.blocked.to(lprobs.device)
        lprobs = lprobs.masked_fill(blocked.view(1, 1, -1), float("-inf"))
        return super().step(step, lprobs, scores, prev_output_tokens, original_batch_idxs, candidate_multiple)


class PrefixNGramRepeatBlock(NGramRepeatBlock):
    """fairseq's n-gram blocker, fixed for CPU.

    fairseq's Python fallback compares against the last n-1 entries of the whole pre-allocated token
    buffer (padding), so it never blocks anything; only the first `step + 1` entries (bos and the
    tokens generated so far) are real. The CUDA kernel indexes by `step` and is unaffected.
    """

    def _no_repeat_ngram(self, tokens, lprobs, bsz: int, beam_size: int, step: int):
        return super()._no_repeat_ngram(tokens[:, : step + 1], lprobs, bsz, beam_size, step)


def build_generator(
    models: list,
    tgt_dict,
    gen_args: Optional[dict[str, Any]] = None,
    constraint: Optional[tuple[int, int]] = None,
) -> SequenceGenerator:
    """A SequenceGenerator with OFA's grounding defaults, overridable by `gen_args`."""
    args = dict(GROUNDING_GENERATION, **(gen_args or {}))
    unknown = set(args) - {"beam", "min_len", "max_len_a", "max_len_b", "no_repeat_ngram_size", "lenpen"}
    if unknown:
        raise ValueError(f"--eval-args: unknown keys {sorted(unknown)}; allowed: beam, min_len, max_len_a, "
                         "max_len_b, no_repeat_ngram_size, lenpen")
    strategy = None if constraint is None else RangeConstrainedBeamSearch(tgt_dict, *constraint)
    generator = SequenceGenerator(
        models,
        tgt_dict,
        beam_size=int(args["beam"]),
        max_len_a=float(args["max_len_a"]),
        max_len_b=int(args["max_len_b"]),
        min_len=int(args["min_len"]),
        len_penalty=float(args.get("lenpen", 1.0)),
        no_repeat_ngram_size=int(args["no_repeat_ngram_size"]),
        search_strategy=strategy,
    )
    if generator.repeat_ngram_blocker is not None:
        generator.repeat_ngram_blocker = PrefixNGramRepeatBlock(int(args["no_repeat_ngram_size"]))
    return generator


def generate_from_bos(generator: SequenceGenerator, models: list, sample: dict, bos: int = 0) -> list:
    """Run beam search starting from OFA's bos; returns fairseq hypotheses per sample, best first."""
    return generator.generate(models, sample, bos_token=bos)
