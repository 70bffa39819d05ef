"""Ours vs the official OFA code, side by side: fwd+bwd (ofa_tiny, ofa_base) and beam search (ofa_tiny).

    OFA_ROOT=/path/to/OFA python benchmarks/bench_vs_official.py            # ~10 min on one core
    OFA_ROOT=... python benchmarks/bench_vs_official.py --rounds 3 --cases tiny_step,tiny_beam

OFA_ROOT is a checkout of github.com/OFA-Sys/OFA (measured at commit a36b91c); its `models/` package
is imported on top of the installed fairseq (the copy bundled in OFA does not import on Python ≥ 3.11).
Without OFA_ROOT the script says so and exits 0: it is never part of CI.

Each side runs in its own process, one thread, on the same weights (our model's state dict, which has
the official key names; relative-position tables and head scales drawn non-zero so they count) and
the same inputs (batch 2, 384×384 images, 32 source / 8 target tokens). Before timing, both run the
eval-mode forward (and for beam search, the generation) and the parent checks that they agree.
Timing uses CPU time per step (time.process_time, robust on a loaded machine); in each round each side
runs --steps-per-round steps and reports its fastest (on a shared machine the slower ones measure
the other jobs); rounds interleaved (ours, official, then official, ours, ...), median of the
per-round ratios ours / official.
Memory: peak RSS during the steps minus RSS after building (ru_maxrss), per process.
Beam search: beam 5, exactly 4 generated tokens then eos (min_len = max_len_b = 4), no n-gram
blocking, no vocabulary constraint on either side (the official generator's constraint normalises
differently), each side with its own generator (fairseq's for us, OFA's models/sequence_generator.py).
`--resnet-layout channels_last` times our side with the channels-last trunk (the official one is
contiguous). The last line printed is one JSON object.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BATCH, IMAGE, SRC_LEN, TGT_LEN = 2, 384, 32, 8
TRAIN_RATES = dict(dropout=0.1, attention_dropout=0.0, activation_dropout=0.0,
                   encoder_drop_path_rate=0.1, decoder_drop_path_rate=0.1, resnet_drop_path_rate=0.0)
CASES = {"tiny_step": ("ofa_tiny", "step"), "base_step": ("ofa_base", "step"), "tiny_beam": ("ofa_tiny", "beam")}
# the flags of every released run script (our arch defaults), as the official argparse names
SCRIPT_FLAGS = ("encoder_normalize_before", "decoder_normalize_before", "share_decoder_input_output_embed",
                "share_all_embeddings", "layernorm_embedding", "patch_layernorm_embedding",
                "code_layernorm_embedding", "add_type_embedding", "scale_attn", "scale_fc", "scale_heads",
                "disable_entangle")
GEN = dict(beam_size=5, max_len_a=0, max_len_b=4, min_len=4, no_repeat_ngram_size=0)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the two model builders (each runs in its own child process) --------------------------------------
def _dictionary():
    """fairseq's Dictionary at OFA's size (specials 0-3 then placeholders); the official child must
    not import ofa_ext (its registrations would meet OFA's)."""
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(59457 - len(d)):
        d.add_symbol(f"s{i}")
    return d


def build_ours(arch: str):
    import ofa_ext  # noqa: F401
    from ofa_ext.models.registered import OFAFairseqModel, to_ofa_config

    layout = os.environ.get("BENCH_RESNET_LAYOUT", "contiguous")  # --resnet-layout of the parent
    cfg = to_ofa_config({"_name": arch, **TRAIN_RATES, "resnet_layout": layout}, script_flags=True)
    d = _dictionary()
    return OFAFairseqModel.build_from_config(cfg, d), d


def build_official(arch: str, ofa_root: str):
    import types

    sys.path.insert(0, ofa_root)
    from models.ofa import OFAModel  # noqa: E402  (OFA's package, registers its archs)
    from models.ofa import ofa as official

    # as fairseq's parse_args_and_arch: unset model options are absent, the arch function fills them
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    OFAModel.add_args(parser)
    args = parser.parse_args([])
    for flag in SCRIPT_FLAGS:
        setattr(args, flag, True)
    for k, v in TRAIN_RATES.items():
        setattr(args, k, v)
    args.patch_image_size = args.orig_patch_image_size = IMAGE  # task options the encoder reads
    getattr(official, f"{arch}_architecture")(args)
    d = _dictionary()
    task = types.SimpleNamespace(source_dictionary=d, target_dictionary=d)
    return OFAModel.build_model(args, task), d


def make_weights_and_inputs(arch: str, out_dir: str) -> None:
    """Our freshly built model's weights with the zero-initialised pieces made non-zero, and inputs."""
    import torch

    torch.manual_seed(0)
    model, _ = build_ours(arch)
    g = torch.Generator().manual_seed(1)
    sd = model.state_dict()
    for k, v in sd.items():
        if "rel_pos_table" in k:
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif k.endswith("c_attn"):
            v.copy_(1 + 0.1 * torch.randn(v.shape, generator=g))
    torch.save(sd, os.path.join(out_dir, f"{arch}.pt"))
    x = dict(
        src_tokens=torch.randint(4, 50000, (BATCH, SRC_LEN), generator=g),
        src_lengths=torch.full((BATCH,), SRC_LEN),
        prev_output_tokens=torch.randint(4, 50000, (BATCH, TGT_LEN), generator=g),
        patch_images=torch.randn(BATCH, 3, IMAGE, IMAGE, generator=g),
        patch_masks=torch.ones(BATCH, dtype=torch.bool),
    )
    x["src_tokens"][1, -5:] = 1  # some source padding
    x["prev_output_tokens"][:, 0] = 0
    torch.save(x, os.path.join(out_dir, "inputs.pt"))


# -- child: serve timed steps on stdin -----------------------------------------------------------------
def child(side: str, arch: str, kind: str, work: str, ofa_root: str) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, d = build_ours(arch) if side == "ours" else build_official(arch, ofa_root)
    missing, unexpected = torch.nn.Module.load_state_dict(
        model, torch.load(os.path.join(work, f"{arch}.pt"), weights_only=True), strict=False)
    if missing or unexpected:
        raise SystemExit(f"{side}: state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    x = torch.load(os.path.join(work, "inputs.pt"), weights_only=True)
    rss_model = _rss_mb()

    model.eval()
    check = {}
    with torch.no_grad():
        if kind == "step":
            check["logits"] = model(**x)[0].numpy()
            step = _train_step(model, x)
        else:
            generator = _generator(side, model, d, ofa_root)
            sample = {"net_input": {k: x[k] for k in ("src_tokens", "src_lengths", "patch_images", "patch_masks")}}
            hyps = _generate(side, generator, model, sample)
            check["tokens"] = np.stack([h[0]["tokens"].numpy() for h in hyps])
            check["scores"] = np.array([float(h[0]["score"]) for h in hyps])
            step = lambda: _generate(side, generator, model, sample)  # noqa: E731
    np.savez(os.path.join(work, f"check_{side}.npz"), **check)
    step()  # warm-up
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.startswith("step"):
            break
        cpu, wall = [], []
        for _ in range(int(line.split()[1])):  # "step K": the fastest of K steps (the least disturbed one)
            c, w = time.process_time(), time.perf_counter()
            step()
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
        print(json.dumps({"cpu": min(cpu), "wall": min(wall)}), flush=True)
    print(json.dumps({"rss_model_mb": rss_model, "rss_peak_delta_mb": _rss_mb() - rss_model}), flush=True)


def _train_step(model, x):
    def step():
        model.train()
        logits = model(**x)[0]
        logits.float().log_softmax(-1).mean().neg().backward()
        model.zero_grad(set_to_none=True)
    return step


def _generator(side, model, d, ofa_root):
    if side == "ours":
        from ofa_ext.evaluation.generation import build_generator

        return build_generator([model], d, {"beam": GEN["beam_size"], "min_len": GEN["min_len"],
                                            "max_len_a": GEN["max_len_a"], "max_len_b": GEN["max_len_b"],
                                            "no_repeat_ngram_size": GEN["no_repeat_ngram_size"]})
    from models.sequence_generator import SequenceGenerator

    return SequenceGenerator([model], d, **GEN)


def _generate(side, generator, model, sample):
    import torch

    with torch.no_grad():
        if side == "ours":
            from ofa_ext.evaluation.generation import generate_from_bos

            return generate_from_bos(generator, [model], sample)
        return generator.generate([model], sample)  # OFA's generator starts from bos itself


# -- parent -------------------------------------------------------------------------------------------
class Side:
    def __init__(self, side, arch, kind, work, ofa_root, env):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", side, arch, kind, work]
        self.name = side
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=dict(env, OFA_ROOT=ofa_root))

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} child exited (status {self.proc.wait()})")
        return json.loads(line)

    def step(self, repeats: int) -> dict:
        self.proc.stdin.write(f"step {repeats}\n")
        self.proc.stdin.flush()
        return self.read()

    def finish(self) -> dict:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        out = self.read()
        self.proc.wait()
        return out


def run_case(name: str, rounds: int, repeats: int, work: str, ofa_root: str, env: dict) -> dict:
    import numpy as np

    arch, kind = CASES[name]
    if not os.path.exists(os.path.join(work, f"{arch}.pt")):
        subprocess.run([sys.executable, os.path.abspath(__file__), "--prepare", arch, work], check=True, env=env)
    sides = {}
    for s in ("ours", "official"):  # one at a time: builds and warm-ups do not overlap
        sides[s] = Side(s, arch, kind, work, ofa_root, env)
        assert sides[s].read().get("ready")
    a, b = (np.load(os.path.join(work, f"check_{s}.npz")) for s in ("ours", "official"))
    agree = {k: float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) for k in a.files}
    per_round = []
    for r in range(rounds):
        order = ("ours", "official") if r % 2 == 0 else ("official", "ours")
        t = {s: sides[s].step(repeats) for s in order}
        per_round.append({"ours_cpu_s": round(t["ours"]["cpu"], 3), "official_cpu_s": round(t["official"]["cpu"], 3),
                          "ratio": round(t["ours"]["cpu"] / t["official"]["cpu"], 3)})
        print(f"{name} round {r}: {per_round[-1]}", file=sys.stderr, flush=True)
    mem = {s: sides[s].finish() for s in sides}
    out = {"case": name, "arch": arch, "kind": kind, "rounds": per_round, "max_abs_diff_eval": agree,
           "ratio_median": round(statistics.median(p["ratio"] for p in per_round), 3),
           "ours_cpu_s_median": round(statistics.median(p["ours_cpu_s"] for p in per_round), 3),
           "official_cpu_s_median": round(statistics.median(p["official_cpu_s"] for p in per_round), 3)}
    for s in sides:
        out[f"{s}_rss_model_mb"] = round(mem[s]["rss_model_mb"], 1)
        out[f"{s}_rss_peak_delta_mb"] = round(mem[s]["rss_peak_delta_mb"], 1)
    if kind == "step" and mem["official"]["rss_peak_delta_mb"] > 0:
        out["peak_delta_ratio"] = round(mem["ours"]["rss_peak_delta_mb"] / mem["official"]["rss_peak_delta_mb"], 3)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ofa-root", default=os.environ.get("OFA_ROOT"), help="checkout of OFA-Sys/OFA (or $OFA_ROOT)")
    p.add_argument("--cases", default="tiny_step,base_step,tiny_beam", help=f"comma list of {sorted(CASES)}")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds per case (ofa_base: ~10 s a step)")
    p.add_argument("--steps-per-round", type=int, default=3,
                   help="steps per side and round; the round's time is the fastest (robust to other jobs' bursts)")
    from ofa_ext.models.ofa.resnet import TRUNK_LAYOUTS

    p.add_argument("--resnet-layout", default="contiguous", choices=TRUNK_LAYOUTS,
                   help="our trunk's --resnet-layout (the official code is contiguous)")
    p.add_argument("--child", nargs=4, metavar=("SIDE", "ARCH", "KIND", "WORK"), help=argparse.SUPPRESS)
    p.add_argument("--prepare", nargs=2, metavar=("ARCH", "WORK"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.prepare:
        make_weights_and_inputs(*args.prepare)
        return
    if args.child:
        child(*args.child, ofa_root=args.ofa_root)
        return
    if not args.ofa_root or not os.path.isdir(os.path.join(args.ofa_root, "models", "ofa")):
        msg = "skipped: set OFA_ROOT (or --ofa-root) to a checkout of github.com/OFA-Sys/OFA"
        print(msg, file=sys.stderr)
        print(json.dumps({"benchmark": "bench_vs_official", "skipped": msg}))
        return
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        p.error(f"--cases: unknown {sorted(unknown)}; expected some of {sorted(CASES)}")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", BENCH_RESNET_LAYOUT=args.resnet_layout,
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    results = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.cases.split(","):
            results.append(run_case(name, args.rounds, args.steps_per_round, work, os.path.abspath(args.ofa_root), env))
    print(json.dumps({"benchmark": "bench_vs_official", "batch": BATCH, "image": IMAGE, "src_len": SRC_LEN,
                      "tgt_len": TGT_LEN, "threads": 1, "timer": "process_time, fastest of --steps-per-round",
                      "steps_per_round": args.steps_per_round, "resnet_layout": args.resnet_layout,
                      "results": results}))


if __name__ == "__main__":
    main()
