"""Transferability estimate at the paper's size: 13 source prompts × 19 targets, VPT prompts 100 × 768.

    python benchmarks/bench_transferability.py [--sources 13] [--targets 19] [--tokens 1000] [--reference-targets 2]

Per target: average cosine, the MMD modality gap against ``--tokens`` target input tokens, the
universal-projector task gap (100 full-batch Adam steps × 3 seeds) and the combined score, as
``ofa-transferability`` runs them (random tensors: the cost does not depend on the values). The
goal is ≤ 10 s in total on CPU. Side by side, the task gap on the per-token path (the projector
applied to all 100 tokens of every prompt, as released) on ``--reference-targets`` targets gives the
speed-up of taking token means first. One thread unless OMP_NUM_THREADS says otherwise.
Last line: JSON.
"""

import argparse
import json
import platform
import time

import torch

from ofa_ext.metrics.transferability import estimate_sources, task_gap_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, default=13)
    ap.add_argument("--targets", type=int, default=19)
    ap.add_argument("--tokens", type=int, default=1000, help="target input tokens entering the MMD")
    ap.add_argument("--length", type=int, default=100)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--reference-targets", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    g = torch.Generator().manual_seed(0)
    sources = {f"s{i}": torch.randn(args.length, args.width, generator=g) for i in range(args.sources)}
    targets = [(torch.randn(args.length, args.width, generator=g), torch.randn(args.tokens, args.width, generator=g))
               for _ in range(args.targets)]

    t0 = time.perf_counter()
    for prompt, tokens in targets:
        estimate_sources(sources, prompt, target_tokens=tokens)
    total = time.perf_counter() - t0

    stacked = torch.stack(list(sources.values()))
    timings = {}
    for label, token_level in (("folded", False), ("per_token", True)):
        t0 = time.perf_counter()
        for prompt, _ in targets[:args.reference_targets]:
            task_gap_scores(stacked, prompt, token_level=token_level)
        timings[label] = (time.perf_counter() - t0) / args.reference_targets
    record = {
        "sources": args.sources, "targets": args.targets, "prompt": [args.length, args.width], "mmd_tokens": args.tokens,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "total_s": round(total, 3), "goal_total_s": 10.0, "per_target_s": round(total / args.targets, 4),
        "task_gap_per_target_s": {k: round(v, 4) for k, v in timings.items()},
        "task_gap_per_token_over_folded": round(timings["per_token"] / timings["folded"], 2),
    }
    print(f"13x19 estimate: {total:.2f} s total ({total / args.targets:.3f} s per target); task gap per target "
          f"{timings['folded']:.3f} s folded vs {timings['per_token']:.3f} s per token "
          f"({record['task_gap_per_token_over_folded']}x)")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
