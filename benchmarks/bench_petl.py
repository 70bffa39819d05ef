"""PETL cost on CPU: train-step time and Adam state per method vs full fine-tuning; LoRA inference.

    python benchmarks/bench_petl.py [--arch ofa_tiny] [--reps 5] [--batch 8] [--image 128]

Same backbone for every row (``--arch``, default ``ofa_tiny``: 4+4 layers, C=256, ResNet-50 trunk,
OFA's 59,457-entry dictionary). A train step = forward + label loss + backward + Adam step.
Repetitions are interleaved across methods (one step of each, round robin) so that machine load
hits every row alike; medians of CPU seconds (``process_time``, the work; use ``--threads 1`` on a
shared machine) and of wall seconds are reported. Goals: step time ≤ 0.6× full for adapter/LoRA/prefix,
≤ 0.55× for BitFit; Adam state ≤ 0.05× full; merged-LoRA inference ≈ 1.00× base, unmerged ≤ 1.1×.
The last line is a JSON object.
"""

import argparse
import copy
import json
import logging
import statistics
import time
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from fairseq.data import Dictionary

from ofa_ext.models.ofa.archs import OFA_DICT_SIZE
from ofa_ext.models.ofa.model import OFAModel
from ofa_ext.models.petl import PETLConfig, apply_petl, merge_lora, trainable_summary
from ofa_ext.models.registered import to_ofa_config

GOALS = {"adapter": 0.6, "lora": 0.6, "prefix": 0.6, "bitfit": 0.55}


def build_backbone(arch: str, vocab: int) -> OFAModel:
    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}")
    torch.manual_seed(0)
    return OFAModel.build_from_config(to_ofa_config({"arch": arch}, script_flags=True), d)


def make_batch(vocab: int, batch: int, image: int, src_len: int = 16, tgt_len: int = 6) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, vocab, (batch, src_len), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    prev = torch.randint(4, vocab, (batch, tgt_len), generator=g)
    prev[:, 0] = 0
    return {
        "src_tokens": src, "src_lengths": torch.full((batch,), src_len), "prev_output_tokens": prev,
        "patch_images": torch.randn(batch, 3, image, image, generator=g),
        "patch_masks": torch.ones(batch, dtype=torch.bool),
        "target": torch.randint(4, vocab, (batch, tgt_len), generator=g),
    }


def forward(model: OFAModel, b: Dict[str, torch.Tensor]) -> torch.Tensor:
    return model(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"],
                 patch_images=b["patch_images"], patch_masks=b["patch_masks"])[0]


def make_step(model: OFAModel, b: Dict[str, torch.Tensor]) -> Callable[[], float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-5)

    def step() -> Tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        logits = forward(model, b)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), b["target"].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    step.optimizer = opt  # type: ignore[attr-defined]
    return step


def adam_state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))


def interleaved(fns: Dict[str, Callable[[], Tuple[float, float]]], reps: int) -> Dict[str, Dict[str, float]]:
    """Median (wall, cpu) seconds per call, one call of each function per round, after a warm-up round.

    CPU seconds (``process_time``) are what the method costs; wall seconds also carry the load of
    whatever else runs on the machine. Both are reported.
    """
    times: Dict[str, list] = {k: [] for k in fns}
    for r in range(reps + 1):
        for k, fn in fns.items():
            t = fn()
            if r:
                times[k].append(t)
    return {k: {"wall": statistics.median(w for w, _ in v), "cpu": statistics.median(c for _, c in v)}
            for k, v in times.items()}


def timed_eval(model: OFAModel, b: Dict[str, torch.Tensor]) -> Callable[[], Tuple[float, float]]:
    def run() -> Tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            forward(model, b)
        return time.perf_counter() - t0, time.process_time() - c0
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="ofa_tiny")
    ap.add_argument("--vocab", type=int, default=OFA_DICT_SIZE)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--adapter-dim", type=int, default=64)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--prompt-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    logging.getLogger("ofa_ext").setLevel(logging.ERROR)  # no injection tables or BN notes in the output
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = {
        "full": None,
        "adapter": PETLConfig(adapter=True, adapter_dim=args.adapter_dim),
        "lora": PETLConfig(lora=True, lora_r=args.lora_r),
        "prefix": PETLConfig(encoder_prompt=True, decoder_prompt=True, encoder_prompt_length=args.prompt_length,
                             decoder_prompt_length=args.prompt_length),
        "bitfit": PETLConfig(bitfit=True),
    }
    base = build_backbone(args.arch, args.vocab)
    b = make_batch(args.vocab, args.batch, args.image)
    models = {k: base if cfg is None else apply_petl(copy.deepcopy(base), cfg) for k, cfg in rows.items()}
    for m in models.values():
        m.train()
    steps = {k: make_step(m, b) for k, m in models.items()}
    step_s = interleaved(steps, args.reps)
    state = {k: adam_state_bytes(s.optimizer) for k, s in steps.items()}
    counts = {k: trainable_summary(m) for k, m in models.items()}

    # inference: base vs LoRA unmerged vs LoRA merged (random non-zero LoRA factors)
    del steps
    lora_model = models["lora"].eval()
    with torch.no_grad():
        for n, p in lora_model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.02)
    merged = merge_lora(copy.deepcopy(lora_model))
    # the base is frozen like the LoRA models: torch.matmul picks its kernel by requires_grad, so an
    # unfrozen reference would time a different path for the (non-contiguous) output projection
    frozen_base = copy.deepcopy(base).eval().requires_grad_(False)
    infer = interleaved({"base": timed_eval(frozen_base, b),
                         "lora_unmerged": timed_eval(lora_model, b),
                         "lora_merged": timed_eval(merged, b)}, args.reps)

    print(f"arch {args.arch}, vocab {args.vocab}, batch {args.batch}, {args.image}px, {args.reps} interleaved reps, "
          f"{torch.get_num_threads()} threads")
    print(f"{'method':<9} {'trainable':>11} {'%':>7} {'cpu s':>7} {'x full':>7} {'wall s':>7} {'x full':>7} "
          f"{'goal':>6} {'adam MB':>8} {'x full':>7}")
    result = {"config": vars(args), "train": {}, "inference": {}}
    full = step_s["full"]
    for k in rows:
        t, mem, goal = step_s[k], state[k] / state["full"], GOALS.get(k)
        rc, rw = t["cpu"] / full["cpu"], t["wall"] / full["wall"]
        print(f"{k:<9} {counts[k]['trainable']:>11,} {counts[k]['percent']:>7.3f} {t['cpu']:>7.3f} {rc:>7.3f} "
              f"{t['wall']:>7.3f} {rw:>7.3f} {'' if goal is None else f'<={goal}':>6} {state[k] / 2**20:>8.2f} {mem:>7.4f}")
        result["train"][k] = {"trainable": counts[k]["trainable"], "percent": round(counts[k]["percent"], 4),
                              "cpu_s": round(t["cpu"], 4), "cpu_ratio": round(rc, 3), "wall_s": round(t["wall"], 4),
                              "wall_ratio": round(rw, 3), "goal": goal, "adam_bytes": state[k], "adam_ratio": round(mem, 5)}
    for k in ("base", "lora_unmerged", "lora_merged"):
        t, ref = infer[k], infer["base"]
        print(f"inference {k:<14} cpu {t['cpu']:.4f} s (x base {t['cpu'] / ref['cpu']:.3f})  "
              f"wall {t['wall']:.4f} s (x base {t['wall'] / ref['wall']:.3f})")
        result["inference"][k] = {"cpu_s": round(t["cpu"], 4), "cpu_ratio": round(t["cpu"] / ref["cpu"], 3),
                                  "wall_s": round(t["wall"], 4), "wall_ratio": round(t["wall"] / ref["wall"], 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
