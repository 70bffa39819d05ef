"""Per-sample diagonal Fisher: vectorised (torch.func vmap(grad)) vs the per-sample loop.

    python benchmarks/bench_fisher.py [--batch 32] [--repeats 3] [--model auto|ofa_nano|toy]

Both paths compute the same numbers (checked: max relative difference per tensor) on the same
batch, timed alternately in one run (minimum over repeats), both as wall-clock time and as process
CPU time (the latter is robust to other jobs sharing the machine). ``batched_backward`` is one batched
forward/backward of the same batch: the floor any per-sample method can approach, so on a CPU the
speedup is bounded by loop / batched_backward (about 6-8x for ofa_nano with 32 px images, where the
frozen ResNet's batched compute dominates; per-call overhead, what vmap removes, dominates on GPUs). Model: ofa_nano (ResNet + encoder-decoder)
with adapters when its forward is vmap-safe, else the toy encoder-decoder of ``models/petl/toy.py``
with adapters (the reason is recorded). Last line: a JSON object.
"""

import argparse
import json
import platform
import sys
import time

import torch

from ofa_ext.metrics.fisher import fisher_diagonal
from ofa_ext.models.petl import PETLConfig, apply_petl, trainable_summary

PIECES = PETLConfig(adapter=True, adapter_dim=8, adapter_init="normal")


def token_ll(logits, target):
    """Per-sample sequence log-likelihood [B]."""
    return torch.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1)


def build_ofa_nano(bsz: int):
    from fairseq.data import Dictionary

    from ofa_ext.models.ofa.model import OFAModel
    from ofa_ext.models.registered import to_ofa_config

    d = Dictionary()
    for i in range(60):
        d.add_symbol(f"w{i}")
    torch.manual_seed(0)
    model = apply_petl(OFAModel.build_from_config(to_ofa_config({"arch": "ofa_nano"}, script_flags=True), d), PIECES)
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, len(d), (bsz, 8), generator=g)
    src[:, 0], src[:, -1] = d.bos(), d.eos()
    src[::3, -3:] = d.pad()  # some padding
    prev = torch.randint(4, len(d), (bsz, 5), generator=g)
    prev[:, 0] = d.bos()
    batch = {
        "net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1), "prev_output_tokens": prev,
                      "patch_images": torch.randn(bsz, 3, 32, 32, generator=g),
                      "patch_masks": torch.ones(bsz, dtype=torch.bool)},
        "target": torch.randint(4, len(d), (bsz, 5), generator=g),
        "nsentences": bsz,
    }

    def ll(m, s):
        return token_ll(m(**s["net_input"])[0], s["target"])

    return model, batch, ll


def build_toy(bsz: int):
    from ofa_ext.models.petl.toy import ToyOFA

    torch.manual_seed(0)
    model = apply_petl(ToyOFA(vocab=60, embed_dim=64, heads=4, ffn=256, layers=2), PIECES)
    g = torch.Generator().manual_seed(1)
    src = torch.randint(2, 60, (bsz, 24), generator=g)
    src[::3, -4:] = 1
    batch = {"src": src, "prev": torch.randint(2, 60, (bsz, 5), generator=g),
             "target": torch.randint(2, 60, (bsz, 5), generator=g)}

    def ll(m, s):
        return token_ll(m(s["src"], s["prev"]), s["target"])

    return model, batch, ll


def pick_model(kind: str, bsz: int):
    """(name, model, batch, ll, note)."""
    note = None
    if kind in ("auto", "ofa_nano"):
        try:
            model, batch, ll = build_ofa_nano(bsz)
            model.eval()
            small = {**batch, "net_input": {k: v[:2] for k, v in batch["net_input"].items()},
                     "target": batch["target"][:2], "nsentences": 2}
            fisher_diagonal(model, [small], ll, estimator="empirical", vectorized=True)
            return "ofa_nano+adapter", model, batch, ll, None
        except (ImportError, RuntimeError) as e:
            if kind == "ofa_nano":
                raise
            note = f"ofa_nano not usable with vmap, toy model used instead: {str(e).splitlines()[0][:200]}"
    model, batch, ll = build_toy(bsz)
    return "toy_encdec+adapter", model, batch, ll, note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", choices=("auto", "ofa_nano", "toy"), default="auto")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    name, model, batch, ll, note = pick_model(args.model, args.batch)
    model.eval()

    def run(vectorized: bool):
        w, c = time.perf_counter(), time.process_time()
        est = fisher_diagonal(model, [batch], ll, estimator="empirical", vectorized=vectorized)
        return (time.perf_counter() - w, time.process_time() - c), est

    def batched_floor():  # one batched forward/backward of the summed log-likelihood (π-Tuning's estimator)
        w, c = time.perf_counter(), time.process_time()
        fisher_diagonal(model, [batch], lambda m, s: ll(m, s).sum(), estimator="pi_tuning")
        return time.perf_counter() - w, time.process_time() - c

    run(True)  # warm-up (vmap tracing caches, allocator)
    run(False)
    batched_floor()
    t_vec, t_loop, t_floor = [], [], []
    for _ in range(args.repeats):
        tv, vec = run(True)
        tl, loop = run(False)
        t_vec.append(tv)
        t_loop.append(tl)
        t_floor.append(batched_floor())
    best = lambda ts, i: min(t[i] for t in ts)  # noqa: E731
    rel = max(((vec.fisher[k] - loop.fisher[k]).abs().max() / loop.fisher[k].abs().max().clamp_min(1e-30)).item()
              for k in loop.fisher)
    result = {
        "bench": "fisher_per_sample",
        "model": name,
        "pieces": "adapter dim 8 (attn+ffn, every layer)",
        "trainable_params": trainable_summary(model)["trainable"],
        "batch": args.batch,
        "threads": args.threads,
        "loop_wall_s": round(best(t_loop, 0), 4),
        "vectorized_wall_s": round(best(t_vec, 0), 4),
        "batched_backward_wall_s": round(best(t_floor, 0), 4),
        "speedup_wall": round(best(t_loop, 0) / best(t_vec, 0), 2),
        "loop_cpu_s": round(best(t_loop, 1), 4),
        "vectorized_cpu_s": round(best(t_vec, 1), 4),
        "batched_backward_cpu_s": round(best(t_floor, 1), 4),
        "speedup_cpu_time": round(best(t_loop, 1) / best(t_vec, 1), 2),
        "max_rel_diff": rel,
        "goal": ">= 10x, same numbers (<= 1e-5 relative)",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if note:
        result["note"] = note
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
