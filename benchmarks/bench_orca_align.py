"""ORCA alignment: cached source constants vs recomputing them per call (as released); OTDD cost.

1. One alignment update (Σ_c w_c·OTDD(source, embed(class c)) + backward) with the source
   constants of :func:`prepare_source` cached, against the same update recomputing them for every
   class as the released code does (W_ss and the outer source self-term). Same data; the losses
   must agree to 1e-5.
2. OTDD of a 5,000 × 384 source (10 classes) vs 1,000 target rows: time and peak memory
   (resident-set growth, each measurement in a fresh process) of the one-off cache build and of
   one differentiable call.
3. The alignment update on 2 gloo processes (each embedding half of every class) / 1 process.

Usage: python benchmarks/bench_orca_align.py [--quick]. JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

from ofa_ext.metrics.alignment import AlignmentObjective, gather_cloud, weighted_alignment
from ofa_ext.metrics.otdd import OTDDSettings, otdd, otdd_uncached, prepare_source

warnings.filterwarnings("ignore", category=FutureWarning)


def make_source(n: int, d: int, k: int, seed: int = 0):
    """Class clouds around random centres, scaled like mean-pooled embedding-layer outputs."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(n) % k
    centres = torch.randn(k, d, generator=g) * 0.3
    return centres[ys] + 0.3 * torch.randn(n, d, generator=g), ys


def make_target(n: int, c_in: int, classes: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c_in, generator=g), torch.arange(n) % classes


def _embedder(c_in: int, d: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(c_in, d)


def align_step(xs, ys, target, tlabels, objective=None, rank: int = 0, world: int = 1):
    """One update's loss and gradient: with the prepared `objective` (source constants cached,
    built once per run), or without (`None`: recomputed for every class, as released)."""
    emb = _embedder(target.shape[1], xs.shape[1])
    weights = {c: float((tlabels == c).float().mean()) for c in tlabels.unique().tolist()}
    clouds = {c: gather_cloud(emb(torch.tensor_split(target[tlabels == c], world)[rank]))
              for c in weights}
    if objective is not None:
        start = time.perf_counter()
        loss, _ = weighted_alignment(objective, clouds, weights, seed=0, update=0)
    else:
        start = time.perf_counter()
        loss = sum(w * otdd_uncached(xs, ys, clouds[c]) for c, w in weights.items())
    loss.backward()
    return float(loss.detach()), time.perf_counter() - start


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples the resident set every 2 ms in a thread; `.peak - .base` = growth during the block."""

    def __enter__(self):
        import threading

        self.base = self.peak = _rss_mib()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self.peak = max(self.peak, _rss_mib())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _peak_rss_worker(kind: str, n: int, d: int, k: int, m: int, queue) -> None:
    torch.set_num_threads(1)
    xs, ys = make_source(n, d, k)
    target = (0.3 * torch.randn(m, d)).requires_grad_(True)
    settings = OTDDSettings()
    src = prepare_source(xs, ys, settings) if kind == "call" else None
    with PeakRSS() as mem:
        start = time.perf_counter()
        if kind == "prepare":
            prepare_source(xs, ys, settings)
        else:
            otdd(src, target).backward()
        seconds = time.perf_counter() - start
    queue.put((seconds, mem.peak - mem.base))


def measure_in_child(kind: str, n: int, d: int, k: int, m: int):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_rss_worker, args=(kind, n, d, k, m, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _dist_worker(rank, world, init_file, n, d, k, m, c_in, queue):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    xs, ys = make_source(n, d, k)
    target, tlabels = make_target(m, c_in, 2)
    objective = AlignmentObjective("otdd-exact", xs, ys)
    align_step(xs, ys, target, tlabels, objective, rank=rank, world=world)  # warm-up
    times, loss = [], None
    for _ in range(3):
        dist.barrier()
        loss, seconds = align_step(xs, ys, target, tlabels, objective, rank=rank, world=world)
        times.append(seconds)
    if rank == 0:
        queue.put((loss, statistics.median(times)))
    dist.destroy_process_group()


def two_process_step(n, d, k, m, c_in):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=_dist_worker,
                             args=(r, 2, os.path.join(tmp, "init"), n, d, k, m, c_in, queue))
                 for r in range(2)]
        for p in procs:
            p.start()
        result = queue.get()
        for p in procs:
            p.join()
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        n, d, k, m_step, m_big, c_in = 600, 64, 4, 64, 100, 8
    else:
        n, d, k, m_step, m_big, c_in = 5000, 384, 10, 256, 1000, 24
    xs, ys = make_source(n, d, k)
    target, tlabels = make_target(m_step, c_in, 2)  # 2 classes × 128 rows = ORCA's maxsamples

    cached_times, loss_cached = [], None
    start = time.perf_counter()
    objective = AlignmentObjective("otdd-exact", xs, ys)
    t_build = time.perf_counter() - start
    for _ in range(3):
        loss_cached, t = align_step(xs, ys, target, tlabels, objective)
        cached_times.append(t)
    loss_released, t_released = align_step(xs, ys, target, tlabels, None)
    t_cached = statistics.median(cached_times)
    rel = abs(loss_cached - loss_released) / max(abs(loss_released), 1e-12)
    print(f"align step ({n}x{d} source, {k} classes; 2 target classes x {m_step // 2}): "
          f"cached {t_cached:.3f}s, recomputed as released {t_released:.3f}s, "
          f"ratio {t_released / t_cached:.1f}x (cache built once in {t_build:.2f}s), loss {loss_cached:.6f} vs {loss_released:.6f} "
          f"(rel {rel:.1e})")

    t_prep, mem_prep = measure_in_child("prepare", n, d, k, m_big)
    t_call, mem_call = measure_in_child("call", n, d, k, m_big)
    print(f"OTDD {n}x{d} source vs {m_big} target rows: cache build {t_prep:.2f}s "
          f"(+{mem_prep:.0f} MiB peak RSS), one call + backward {t_call:.2f}s (+{mem_call:.0f} MiB)")

    loss_2p, t_2p = two_process_step(n, d, k, m_step, c_in)
    print(f"2-process align step {t_2p:.3f}s / 1 process {t_cached:.3f}s = {t_2p / t_cached:.2f} "
          f"(loss {loss_2p:.6f}; 2 processes share a loaded 2-core machine)")
    result = {
        "bench": "orca_align", "quick": args.quick, "source_rows": n, "dim": d, "source_classes": k,
        "step_cached_s": t_cached, "cache_build_s": t_build, "step_released_s": t_released,
        "cached_speedup": t_released / t_cached, "loss_rel_diff": rel,
        "otdd_1000_prepare_s": t_prep, "otdd_1000_prepare_peak_mib": mem_prep,
        "otdd_1000_call_s": t_call, "otdd_1000_call_peak_mib": mem_call,
        "two_process_step_s": t_2p, "two_process_ratio": t_2p / t_cached,
        "two_process_loss_rel_diff": abs(loss_2p - loss_cached) / max(abs(loss_cached), 1e-12),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
