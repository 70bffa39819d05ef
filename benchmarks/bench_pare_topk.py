"""PaRe's relaxed Gumbel top-k: the tape-free fast path vs the released loop, same noise, one run.

    python benchmarks/bench_pare_topk.py [--batch 8] [--tokens 3136] [--k 2000] [--repeats 3]
                                         [--loop-steps S]

Workload: gate scores [batch, tokens] in (0, 1) plus Gumbel noise, k steps at tau = 0.9, then a
backward of a random linear functional of the k-hot (what the straight-through mask passes on).
Both paths are timed alternately (minimum over repeats) as wall-clock and as process CPU time (the
latter robust to other jobs on a shared machine); agreement is checked on the same noise (khot bit
for bit, gradient max relative difference). Bytes saved for backward are counted with autograd's
saved-tensor hooks. ``k_softmax_floor_cpu_s`` times k bare softmaxes of the same rows, a lower
bound for any exact forward (the recurrence is sequential: step i needs step i - 1's softmax);
``max_speedup_bound_cpu`` = loop / (2 x floor) bounds what any exact forward + backward could reach
here. With ``--loop-steps S`` (S < k) the released loop runs only S steps and its time
is extrapolated linearly to k (each step costs the same), and the agreement check is skipped; the
JSON says so. Last line: a JSON object.
"""

import argparse
import json
import platform
import time

import torch

from ofa_ext.models.crossmodal.pare_topk import gumbel_noise, relaxed_khot, relaxed_khot_loop


def saved_bytes(fn) -> tuple[object, int]:
    """Run ``fn()`` counting the bytes autograd keeps for backward."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def step(impl, scores, k, tau, weight):
    """One forward + backward; returns (khot, grad, forward seconds, total seconds, cpu seconds, saved bytes)."""
    s = scores.clone().requires_grad_(True)
    c0, t0 = time.process_time(), time.perf_counter()
    khot, nbytes = saved_bytes(lambda: impl(s, k, tau))
    t1 = time.perf_counter()
    (khot * weight).sum().backward()
    t2, c2 = time.perf_counter(), time.process_time()
    return khot.detach(), s.grad, t1 - t0, t2 - t0, c2 - c0, nbytes


def softmax_floor(scores, k, tau) -> float:
    """CPU seconds of k bare softmaxes over the same rows: a floor for any exact forward.

    Each step's output is the softmax of a row no earlier step has seen, so no exact method can
    take fewer than k of them; the backward needs at least as many passes again.
    """
    c0 = time.process_time()
    for _ in range(k):
        torch.softmax(scores / tau, dim=-1)
    return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=3136)
    ap.add_argument("--k", type=int, default=2000)
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-steps", type=int, default=None, help="run the loop for this many steps and extrapolate")
    args = ap.parse_args()

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    gate = torch.rand(args.batch, args.tokens, generator=g)
    scores = gate + gumbel_noise(gate, g)
    weight = torch.randn(args.batch, args.tokens, generator=g)
    loop_k = args.loop_steps or args.k
    scale = args.k / loop_k

    best = {"loop": [float("inf")] * 3, "fast": [float("inf")] * 3}
    saved = {}
    for _ in range(args.repeats):
        for name, impl, k in (("loop", relaxed_khot_loop, loop_k), ("fast", relaxed_khot, args.k)):
            khot, grad, fwd, tot, cpu, nbytes = step(impl, scores, k, args.tau, weight)
            best[name] = [min(a, b) for a, b in zip(best[name], (fwd, tot, cpu))]
            saved[name] = nbytes
            if name == "loop":
                ref = (khot, grad)
            else:
                fast = (khot, grad)
    floor = min(softmax_floor(scores, args.k, args.tau) for _ in range(args.repeats))
    loop_fwd, loop_tot, loop_cpu = (x * scale for x in best["loop"])
    fast_fwd, fast_tot, fast_cpu = best["fast"]
    result = {
        "bench": "pare_topk",
        "batch": args.batch, "tokens": args.tokens, "k": args.k, "tau": args.tau,
        "loop_steps_run": loop_k, "loop_extrapolated": loop_k != args.k,
        "loop_fwd_bwd_s": round(loop_tot, 4), "fast_fwd_bwd_s": round(fast_tot, 4),
        "loop_cpu_s": round(loop_cpu, 4), "fast_cpu_s": round(fast_cpu, 4),
        "speedup_fwd_bwd_wall": round(loop_tot / fast_tot, 2),
        "speedup_fwd_bwd_cpu": round(loop_cpu / fast_cpu, 2),
        "speedup_fwd_wall": round(loop_fwd / fast_fwd, 2),
        "k_softmax_floor_cpu_s": round(floor, 4),
        "max_speedup_bound_cpu": round(loop_cpu / (2 * floor), 2),
        "saved_for_backward_mb": {"loop": round(saved["loop"] * scale / 2**20, 1), "fast": round(saved["fast"] / 2**20, 1)},
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
    }
    if loop_k == args.k:
        result["khot_bitwise_equal"] = bool(torch.equal(ref[0], fast[0]))
        result["grad_max_rel_diff"] = float(((ref[1] - fast[1]).abs().max() / ref[1].abs().max()).item())
    print(f"relaxed top-k B={args.batch} N={args.tokens} k={args.k}: loop {loop_tot:.3f}s, fast {fast_tot:.3f}s "
          f"(wall {result['speedup_fwd_bwd_wall']}x, cpu {result['speedup_fwd_bwd_cpu']}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
