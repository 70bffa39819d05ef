"""Table of the PaRe miniature (run_scripts/demo/pare.sh): last-epoch test accuracy per method, mean ± std."""

import json
import re
import statistics
import sys
from pathlib import Path

METHODS = ("pare", "orca", "noalign")
LINE = re.compile(r"\btest(?: \| |:)(\{.*\})\s*$")


def last_test_accuracy(log: Path) -> float:
    rows = [json.loads(m.group(1)) for m in map(LINE.search, log.read_text().splitlines()) if m]
    if not rows:
        raise SystemExit(f"{log}: no test evaluation found")
    return float(rows[-1]["test_accuracy"])


def main() -> None:
    runs, out, targets = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    table = {t: {m: [last_test_accuracy(p) for p in sorted(runs.glob(f"{t}_{m}_*.log"))] for m in METHODS}
             for t in targets}
    lines = ["# PaRe miniature (`run_scripts/demo/pare.sh`)", "",
             "Test accuracy (%) of the last epoch, mean ± std over seeds; MiniLM body, polarity source tokens.", "",
             "| target | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for t, row in table.items():
        cells = [f"{statistics.mean(v):.1f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.1f} (n={len(v)})" for v in row.values()]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(table, indent=1) + "\n")
    print("\n".join(lines))
    first = table[targets[0]]
    mean = {m: statistics.mean(v) for m, v in first.items()}
    print(f"demo: pare {'GunPoint' if targets[0] == 'gunpoint' else targets[0]} acc "
          f"pare={mean['pare']:.1f} orca={mean['orca']:.1f} noalign={mean['noalign']:.1f}")


if __name__ == "__main__":
    main()
