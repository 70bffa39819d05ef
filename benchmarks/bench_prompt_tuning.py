"""Prompt tuning vs full fine-tuning on the same body and the same input, step for step.

    python benchmarks/bench_prompt_tuning.py [--reps 10] [--batch 16] [--length 32] [--prompt 8]

Body: the pretrained MiniLM (``minilm``), a mean-pooled linear head, cross-entropy, Adam. Rows,
timed interleaved (CPU time, medians, one thread):
* ``prompt``: an input prompt of ``--prompt`` tokens and the head train (task ``prompt_tuning``);
* ``full``: the same model, prompt included, with every parameter trained;
* ``forward``: the forward pass alone, no gradient — what no training step can go below.
Prompt tuning still needs the backward through every layer down to the input (only the weight
gradients are skipped), so its floor is about forward + input backward ≈ 2/3 of a full step.
Goal of the issue: prompt ≤ 0.5× full. The last line is a JSON object.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F

from bench_bodies import Classifier, interleaved
from ofa_ext import api


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (args.batch, args.length), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    labels = torch.randint(0, 2, (args.batch,), generator=g)

    def build(train_body: bool):
        torch.manual_seed(0)
        model = Classifier(api.load_body("minilm"))
        api.apply_petl(model, keep_trainable=("head",), input_prompt_length=args.prompt, input_prompt_init="xavier")
        if train_body:
            for p in model.parameters():
                p.requires_grad_(True)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        return model, params, torch.optim.Adam(params, lr=1e-5)

    def step_fn(model, opt):
        def step():
            t0, c0 = time.perf_counter(), time.process_time()
            loss = F.cross_entropy(model(ids), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return time.perf_counter() - t0, time.process_time() - c0
        return step

    prompt_model, prompt_params, prompt_opt = build(False)
    full_model, full_params, full_opt = build(True)

    def forward():
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            prompt_model(ids)
        return time.perf_counter() - t0, time.process_time() - c0

    t = interleaved({"prompt": step_fn(prompt_model, prompt_opt), "full": step_fn(full_model, full_opt),
                     "forward": forward}, args.reps)
    ratio = {k: t[k]["cpu_s"] / t["full"]["cpu_s"] for k in t}
    record = {"batch": args.batch, "length": args.length, "prompt_tokens": args.prompt, "threads": args.threads,
              "trainable": {"prompt": sum(p.numel() for p in prompt_params), "full": sum(p.numel() for p in full_params)},
              "cpu_s": {k: round(v["cpu_s"], 4) for k, v in t.items()},
              "prompt_over_full": round(ratio["prompt"], 3), "forward_over_full": round(ratio["forward"], 3),
              "goal_prompt_over_full": 0.5}
    print(f"prompt step {t['prompt']['cpu_s'] * 1e3:.1f} ms ({ratio['prompt']:.2f}x full), full {t['full']['cpu_s'] * 1e3:.1f} ms, "
          f"forward alone {t['forward']['cpu_s'] * 1e3:.1f} ms ({ratio['forward']:.2f}x full)")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
