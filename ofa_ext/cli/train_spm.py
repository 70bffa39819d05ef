"""Train a small sentencepiece vocabulary on the texts of grounding TSV files.

    ofa-train-spm data/train.tsv --out data/ --vocab-size 256

Useful when there is no GPT-2 vocabulary at hand (the CPU demo, new languages): pass the written
model to a task with `--bpe sentencepiece --spm-model data/spm.model`. Texts are read from the
column given by --text-col (2 in OFA's grounding layout), cleaned as OFA does and wrapped in the task
prompt, so that the prompt's own words and quotes get pieces too.
"""

import argparse
import sys
from typing import Optional

from ..data.grounding_dataset import GROUNDING_PROMPT
from ..data.text import pre_caption, train_sentencepiece
from ..data.tsv import TSVReader
from ..utils.errors import cli_entry


@cli_entry("ofa-train-spm")
def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="ofa-train-spm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tsv", nargs="+", help="TSV files to read texts from")
    p.add_argument("--out", required=True, help="folder for spm.model")
    p.add_argument("--text-col", type=int, default=2, help="column holding the text (OFA grounding: 2)")
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--prompt", default=GROUNDING_PROMPT, help="format string wrapping each text ('{}' = text)")
    args = p.parse_args(argv)
    texts = []
    for path in args.tsv:
        reader = TSVReader(path)
        texts.extend(args.prompt.format(pre_caption(reader.column(i, args.text_col))) for i in range(len(reader)))
    if not texts:
        raise ValueError(f"{', '.join(args.tsv)}: no rows (empty or blank files); expected tab-separated rows with a text in column {args.text_col}")
    model = train_sentencepiece(texts, args.out, vocab_size=args.vocab_size)
    print(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
