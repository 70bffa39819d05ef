"""Forward+backward time and peak memory of the OFA backbone (batch 2, 384×384 image, 32 tokens).

    python benchmarks/bench_backbone.py                 # CPU: ofa_nano, ofa_base (fp32); ~1-2 min
    python benchmarks/bench_backbone.py --archs ofa_nano --iters 5
    python benchmarks/bench_backbone.py --compare-attention ofa_tiny --iters 4   # fused / explicit

Each CPU config runs in its own subprocess so that peak RSS (resource.getrusage ru_maxrss) is per
config: `rss_model_mb` after building, `rss_peak_delta_mb` = peak during fwd+bwd minus that. On CUDA
(if available) ofa_base and ofa_large also run in bf16 with torch.cuda.max_memory_allocated.
The last line printed is one JSON object.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

BATCH, IMAGE, SRC_LEN, TGT_LEN = 2, 384, 32, 8


def _build(arch: str, device: str, dtype):
    import torch

    import ofa_ext  # noqa: F401
    from ofa_ext.models.ofa.placeholder_dict import SizedDictionary
    from ofa_ext.models.registered import OFAFairseqModel, to_ofa_config

    torch.manual_seed(0)
    cfg = to_ofa_config({"_name": arch}, script_flags=True)
    model = OFAFairseqModel.build_from_config(cfg, SizedDictionary()).to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    x = dict(
        src_tokens=torch.randint(4, 50000, (BATCH, SRC_LEN), generator=g).to(device),
        src_lengths=torch.full((BATCH,), SRC_LEN).to(device),
        prev_output_tokens=torch.randint(4, 50000, (BATCH, TGT_LEN), generator=g).to(device),
        patch_images=torch.randn(BATCH, 3, IMAGE, IMAGE, generator=g).to(device=device, dtype=dtype),
        patch_masks=torch.ones(BATCH, dtype=torch.bool).to(device),
    )
    return model.train(), x


def _step(model, x):
    logits, _ = model(**x)
    logits.float().log_softmax(-1).mean().neg().backward()
    model.zero_grad(set_to_none=True)


def run_one(arch: str, device: str, dtype_name: str, iters: int) -> dict:
    import torch

    dtype = getattr(torch, dtype_name)
    model, x = _build(arch, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _step(model, x)  # warm-up
    sync()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        _step(model, x)
        sync()
        times.append(time.perf_counter() - t)
    out = {"arch": arch, "device": device, "dtype": dtype_name, "params": params, "iters": iters,
           "fwd_bwd_s_median": round(sorted(times)[len(times) // 2], 4), "fwd_bwd_s_min": round(min(times), 4)}
    if device == "cuda":
        out["peak_alloc_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        out["rss_model_mb"] = round(rss_model, 1)
        out["rss_peak_delta_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_model, 1)
        out["threads"] = torch.get_num_threads()
    return out


def compare_attention(arch: str, rounds: int) -> dict:
    """fwd+bwd with the fused attention over the explicit one, in one process, rounds interleaved
    (explicit, fused, then fused, explicit, ...), CPU time per step."""
    import statistics

    import torch

    from ofa_ext.models.ofa.attention import set_attention_implementation

    model, x = _build(arch, "cpu", torch.float32)
    _step(model, x)  # warm-up
    cpu = {"explicit": [], "fused": []}
    for r in range(rounds):
        for impl in ("explicit", "fused") if r % 2 == 0 else ("fused", "explicit"):
            set_attention_implementation(model, impl)
            t = time.process_time()
            _step(model, x)
            cpu[impl].append(time.process_time() - t)
    ratios = [f / e for f, e in zip(cpu["fused"], cpu["explicit"])]
    return {"arch": arch, "rounds": rounds, "fused_over_explicit": [round(q, 3) for q in ratios],
            "median": round(statistics.median(ratios), 3),
            "explicit_cpu_s": [round(t, 3) for t in cpu["explicit"]], "fused_cpu_s": [round(t, 3) for t in cpu["fused"]]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", default="ofa_nano,ofa_base", help="CPU configs (comma list)")
    p.add_argument("--iters", type=int, default=1, help="timed iterations per CPU config after one warm-up (ofa_nano: at least 5)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads in the CPU children")
    p.add_argument("--compare-attention", metavar="ARCH", help="only time fused vs explicit attention on ARCH (CPU)")
    p.add_argument("--child", nargs=3, metavar=("ARCH", "DEVICE", "DTYPE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compare_attention:
        import torch

        torch.set_num_threads(args.threads or 1)
        print(json.dumps({"benchmark": "bench_backbone.compare_attention", "threads": torch.get_num_threads(),
                          **compare_attention(args.compare_attention, max(args.iters, 2))}))
        return
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(run_one(*args.child, iters=args.iters)))
        return
    results = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                        os.environ.get("PYTHONPATH", "")]))
    for arch in args.archs.split(","):
        iters = max(args.iters, 5) if arch == "ofa_nano" else args.iters
        cmd = [sys.executable, os.path.abspath(__file__), "--child", arch, "cpu", "float32", "--iters", str(iters)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            results.append({"arch": arch, "device": "cpu", "error": proc.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(results[-1], file=sys.stderr)
    try:
        import torch

        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = False
            for arch in ("ofa_base", "ofa_large"):
                results.append(run_one(arch, "cuda", "bfloat16", iters=max(args.iters, 5)))
                torch.cuda.empty_cache()
    except Exception as e:  # report, do not lose the CPU numbers
        results.append({"device": "cuda", "error": str(e)})
    print(json.dumps({"benchmark": "bench_backbone", "batch": BATCH, "image": IMAGE, "src_len": SRC_LEN,
                      "tgt_len": TGT_LEN, "results": results}))


if __name__ == "__main__":
    main()
