"""Expert interpolation cost: train step and inference against a single expert, side by side.

    python benchmarks/bench_interpolation.py [--experts 3] [--batch 16] [--steps 20] [--model auto|ofa_nano|toy]
        [--methods adapter,lora,prefix] [--mixing pi_tuning|parameters]

Ratios (median CPU time per step, one thread by default, the configurations timed alternately in one run):
* ``train_interp_over_single``: forward + backward + Adam step of the K-expert mix (logits and
  experts trainable, π-Tuning's setting) / the same step of one PETL expert (goal ≤ 1.2×);
* ``infer_interp_over_single``: eval forward of the un-collapsed mix / one expert;
* ``infer_collapsed_over_single``: eval forward after ``unload_interpolation`` (the collapsed pieces)
  / one expert (goal ≈ 1.00×).
One row per PETL method (π-Tuning's pieces: adapters dim 16, LoRA r 16 on q/k/v/out, enc+dec
prefixes of 16 tokens); with ``pi_tuning`` mixing a LoRA mix costs K·r columns and a prefix mix K
tables per layer in training, and the collapsed LoRA keeps rank K·r. Model: ofa_nano (toy
encoder-decoder if the backbone is absent). Last line: JSON.
"""

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ofa_ext.models.interpolation import MIXINGS, ExpertMix, apply_interpolation, unload_interpolation
from ofa_ext.models.petl import PETLConfig, apply_petl, save_pieces

PIECES = {
    "adapter": dict(adapter=True, adapter_dim=16, adapter_init="normal"),
    "lora": dict(lora=True, lora_r=16),
    "prefix": dict(encoder_prompt=True, decoder_prompt=True, encoder_prompt_length=16, decoder_prompt_length=16,
                   prompt_dropout=0.2),
}


def builder(kind: str, bsz: int, pieces: PETLConfig):
    """(name, make_model() -> fresh PETL model with the same backbone, batch, loss(model, batch))."""
    if kind in ("auto", "ofa_nano"):
        try:
            from fairseq.data import Dictionary

            from ofa_ext.models.ofa.model import OFAModel
            from ofa_ext.models.registered import to_ofa_config

            d = Dictionary()
            for i in range(60):
                d.add_symbol(f"w{i}")

            def make():
                torch.manual_seed(0)
                m = OFAModel.build_from_config(to_ofa_config({"arch": "ofa_nano"}, script_flags=True), d)
                return apply_petl(m, pieces)

            g = torch.Generator().manual_seed(1)
            src = torch.randint(4, len(d), (bsz, 12), generator=g)
            prev = torch.randint(4, len(d), (bsz, 5), generator=g)
            batch = dict(src_tokens=src, src_lengths=torch.full((bsz,), 12), prev_output_tokens=prev,
                         patch_images=torch.randn(bsz, 3, 64, 64, generator=g), patch_masks=torch.ones(bsz, dtype=torch.bool))
            target = torch.randint(4, len(d), (bsz, 5), generator=g)

            def loss(m, b):
                return torch.nn.functional.cross_entropy(m(**b)[0].flatten(0, 1), target.flatten(), reduction="sum")

            make()
            return "ofa_nano", make, batch, loss
        except ImportError:
            if kind == "ofa_nano":
                raise
    from ofa_ext.models.petl.toy import ToyOFA

    def make():
        torch.manual_seed(0)
        return apply_petl(ToyOFA(vocab=60, embed_dim=64, heads=4, ffn=256, layers=2), pieces)

    g = torch.Generator().manual_seed(1)
    batch = dict(src_tokens=torch.randint(2, 60, (bsz, 24), generator=g), prev_output_tokens=torch.randint(2, 60, (bsz, 5), generator=g))
    target = torch.randint(2, 60, (bsz, 5), generator=g)

    def loss(m, b):
        return torch.nn.functional.cross_entropy(m(**b).flatten(0, 1), target.flatten(), reduction="sum")

    return "toy_encdec", make, batch, loss


def clock() -> float:
    """CPU time of this process: robust to other jobs sharing the machine (wall time is not)."""
    return time.process_time()


def measure(make, batch, loss, experts: int, steps: int, mixing: str) -> dict:
    """Median CPU seconds per step of: one expert, the K-expert mix, the collapsed mix."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k in range(experts):
            m = make()
            with torch.no_grad():
                for p in m.parameters():
                    if p.requires_grad:
                        p.add_(0.05 * torch.randn_like(p))
            paths.append(str(Path(tmp) / f"expert{k}.safetensors"))
            save_pieces(m, paths[-1], task=f"task{k}")
        single = make()
        interp = apply_interpolation(make(), ExpertMix(experts=paths, mixing=mixing))
        collapsed = unload_interpolation(apply_interpolation(
            make(), ExpertMix(experts=paths, logits=[0.1 * k for k in range(experts)], mixing=mixing)))

    def train_step(model, opt):
        opt.zero_grad(set_to_none=True)
        loss(model, batch).backward()
        opt.step()

    def infer(model):
        with torch.no_grad():
            loss(model, batch)

    opts = {id(m): torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-4) for m in (single, interp)}
    for m in (single, interp):
        m.train()
    times = {"train_single": [], "train_interp": [], "infer_single": [], "infer_interp": [], "infer_collapsed": []}
    train_cases = [("train_single", lambda: train_step(single, opts[id(single)])),
                   ("train_interp", lambda: train_step(interp, opts[id(interp)]))]
    for step in range(steps + 2):  # 2 warm-up rounds; the order rotates so neither always goes first
        for key, fn in train_cases[step % 2:] + train_cases[:step % 2]:
            t = clock()
            fn()
            if step >= 2:
                times[key].append(clock() - t)
    for m in (single, interp, collapsed):
        m.eval()
    infer_cases = [("infer_single", single), ("infer_interp", interp), ("infer_collapsed", collapsed)]
    for step in range(steps + 2):
        for key, m in infer_cases[step % 3:] + infer_cases[:step % 3]:
            t = clock()
            infer(m)
            if step >= 2:
                times[key].append(clock() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        **{f"{k}_ms": round(1000 * v, 2) for k, v in med.items()},
        "train_interp_over_single": round(med["train_interp"] / med["train_single"], 3),
        "infer_interp_over_single": round(med["infer_interp"] / med["infer_single"], 3),
        "infer_collapsed_over_single": round(med["infer_collapsed"] / med["infer_single"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experts", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--model", choices=("auto", "ofa_nano", "toy"), default="auto")
    ap.add_argument("--methods", default="adapter,lora,prefix", help=f"comma list of {tuple(PIECES)}")
    ap.add_argument("--mixing", choices=MIXINGS, default="pi_tuning")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if method not in PIECES:
            raise SystemExit(f"--methods: unknown method {method!r}; expected {tuple(PIECES)}")
        name, make, batch, loss = builder(args.model, args.batch, PETLConfig(**PIECES[method]))
        rows[method] = measure(make, batch, loss, args.experts, args.steps, args.mixing)
        print(f"{method:8s} {json.dumps(rows[method])}")
    result = {
        "bench": "interpolation",
        "model": name,
        "mixing": args.mixing,
        "experts": args.experts,
        "batch": args.batch,
        "steps": args.steps,
        "threads": args.threads,
        "methods": rows,
        "goal": "train <= 1.2x, collapsed inference ~1.00x",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
