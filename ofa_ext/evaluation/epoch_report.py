"""Best-epoch and validation-selected scores from a fairseq training log.

The prompt-transfer paper reports the best *test* accuracy over all epochs (test-set model
selection). Run training with ``--valid-subset valid,test`` and both numbers come out of one log:
the best test score over validations, and the test score at the validation where the valid score
was best (ties: the earliest, as a "keep if strictly better" rule does). fairseq's ``simple`` and
``json`` log formats are read; each validation is identified by its ``num_updates``.

    ofa-epoch-report checkpoints/pt_digits/train.log [--valid valid --test test --metric accuracy]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Dict, List, Optional

from ..utils.errors import cli_entry

_SIMPLE = re.compile(r"epoch (\d+) \| valid on '([^']+)' subset \| (.*)$")


def _parse_line(line: str) -> Optional[tuple[str, Dict[str, float]]]:
    """(subset, stats) of one validation line, or None."""
    m = _SIMPLE.search(line)
    if m:
        stats: Dict[str, float] = {"epoch": float(m.group(1))}
        for part in m.group(3).split(" | "):
            key, _, value = part.strip().rpartition(" ")
            try:
                stats[key] = float(value)
            except ValueError:
                continue
        return m.group(2), stats
    start = line.find("{")
    if start < 0 or "_num_updates" not in line:
        return None
    try:
        record = json.loads(line[start:])
    except json.JSONDecodeError:
        return None
    subsets = {k[: -len("_num_updates")] for k in record if k.endswith("_num_updates") and k != "train_num_updates"}
    if len(subsets) != 1:
        return None
    subset = subsets.pop()
    stats = {k[len(subset) + 1:]: float(v) for k, v in record.items() if k.startswith(subset + "_")}
    stats["epoch"] = float(record.get("epoch", 0))
    return subset, stats


def validations(lines: List[str]) -> Dict[str, Dict[int, Dict[str, float]]]:
    """{subset: {num_updates: stats}} of every validation in the log (a repeated one: the last)."""
    found: Dict[str, Dict[int, Dict[str, float]]] = {}
    for line in lines:
        parsed = _parse_line(line)
        if parsed and "num_updates" in parsed[1]:
            subset, stats = parsed
            found.setdefault(subset, {})[int(stats["num_updates"])] = stats
    return found


def report(lines: List[str], valid: str = "valid", test: str = "test", metric: str = "accuracy",
           maximize: bool = True) -> Dict[str, object]:
    """Best-epoch test score, and the test score at the best validation (earliest on ties)."""
    found = validations(lines)
    for subset in (valid, test):
        if subset not in found:
            raise ValueError(f"the log has no validation on subset {subset!r} (found {sorted(found) or 'none'}); "
                             f"train with --valid-subset {valid},{test}")
    both = sorted(set(found[valid]) & set(found[test]))
    if not both or any(metric not in found[s][u] for s in (valid, test) for u in both):
        raise ValueError(f"no validation reports {metric!r} on both {valid!r} and {test!r}")
    better = (lambda a, b: a > b) if maximize else (lambda a, b: a < b)
    selected = both[0]
    for u in both[1:]:
        if better(found[valid][u][metric], found[valid][selected][metric]):
            selected = u
    test_scores = [found[test][u][metric] for u in both]
    best_test = max(test_scores) if maximize else min(test_scores)
    return {
        "metric": metric, "validations": len(both),
        "best_epoch_test": best_test,
        "val_selected_test": found[test][selected][metric],
        "val_selected_valid": found[valid][selected][metric],
        "val_selected_update": selected,
        "val_selected_epoch": int(found[valid][selected]["epoch"]),
    }


@cli_entry("ofa-epoch-report")
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="ofa-epoch-report", description=__doc__.split("\n")[0])
    p.add_argument("log", help="fairseq training log (simple or json format)")
    p.add_argument("--valid", default="valid", help="subset that selects the epoch")
    p.add_argument("--test", default="test", help="subset whose score is reported")
    p.add_argument("--metric", default="accuracy", help="logged metric to read")
    p.add_argument("--minimize", action="store_true", help="lower is better (e.g. --metric loss)")
    args = p.parse_args(argv)
    with open(args.log, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    try:
        result = report(lines, args.valid, args.test, args.metric, maximize=not args.minimize)
    except ValueError as e:
        raise ValueError(f"{args.log}: {e}") from None
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
