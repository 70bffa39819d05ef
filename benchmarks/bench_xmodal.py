#!/usr/bin/env python
"""Cross-modal adaptation: fairseq's overhead on tiny steps, feature extraction speed and memory.

    python benchmarks/bench_xmodal.py [--updates 2000] [--classes 100] [--width 512] [--batch 32]

1. Training from cached features: ``fairseq-train --task crossmodal_adaptation`` (its own ``ups``
   meter over an epoch, start-up excluded) vs a plain PyTorch loop over the same tensors and the
   same two-stream batches (XModalHead, AdamW with fairseq's warm-up + cosine lr sequence, mean
   cross-entropy), alternating ``--rounds`` times in one run, best of each.
2. ``ofa-extract-features`` on a tiny CLIP (random weights, saved with save_pretrained) over a
   generated image folder: images/s with 0 and 2 DataLoader workers, peak RSS of each extraction
   process (``ru_maxrss``). Every extraction runs in a fresh process; images/s counts the split's
   extraction (decode, crop, forward, write), not the start-up and model loading.
Last line: JSON.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ofa_ext.data.features import few_shot_rows, read_table  # noqa: E402
from ofa_ext.data.features_dataset import two_stream_batches  # noqa: E402
from ofa_ext.models.crossmodal.adaptation import XModalHead, XModalHeadConfig  # noqa: E402
from tests.xmodal_helpers import write_features  # noqa: E402

# fairseq-train with denormals flushed to zero (the same switch as the plain loop's)
FTZ_TRAIN = ("import sys, torch; torch.set_flush_denormal(True); sys.argv[0] = 'fairseq-train'; "
             "from fairseq_cli.train import cli_main; cli_main()")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONPATH=str(REPO))


def fairseq_ups(data: Path, a) -> float:
    launcher = ["-m", "fairseq_cli.train"] if not a.flush_denormal else ["-c", FTZ_TRAIN]
    cmd = [sys.executable, *launcher, str(data), "--user-dir", str(REPO / "ofa_ext"), "--cpu",
           "--task", "crossmodal_adaptation", "--shots", str(a.shots), "--updates-per-epoch", str(a.updates),
           "--arch", "xmodal_head", "--criterion", "xmodal_ce", "--optimizer", "adam", "--lr", "1e-3",
           "--weight-decay", "1e-4", "--lr-scheduler", "cosine", "--warmup-updates", "50", "--warmup-init-lr", "1e-5",
           "--batch-size", str(a.batch), "--max-update", str(a.updates), "--disable-validation", "--no-save",
           "--log-format", "json", "--log-interval", str(a.updates), "--num-workers", "0"]
    log = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=3600)
    out = log.stdout + log.stderr
    m = re.findall(r'"train_ups": "([0-9.]+)"', out)
    if not m:
        raise RuntimeError(out[-3000:])
    return float(m[-1])


def fairseq_lr(num_updates: int, updates: int, lr: float = 1e-3, warmup: int = 50, init: float = 1e-5) -> float:
    """fairseq's ``cosine`` schedule after ``num_updates`` updates (warm-up from ``init``, min_lr 0)."""
    if num_updates < warmup:
        return init + num_updates * (lr - init) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (num_updates - warmup) / (updates - warmup)))


def plain_ups(data: Path, a) -> float:
    """The same rows, batches, head, AdamW (decoupled decay, as fairseq's adam) and lr sequence."""
    text = read_table(data / "classes.safetensors")
    train = read_table(data / "train.image.safetensors")
    rows = few_shot_rows(train, a.shots, 1, "train")
    feats, labels = torch.cat([text.features, train.features[rows]]), torch.cat([text.labels, train.labels[rows]])
    from ofa_ext.models.crossmodal.adaptation import zeroshot_weights

    torch.set_flush_denormal(bool(a.flush_denormal))
    model = XModalHead(XModalHeadConfig(), zeroshot_weights(text.features, text.labels, a.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=fairseq_lr(0, a.updates), weight_decay=1e-4)
    batches = two_stream_batches(len(text), len(rows), a.batch // 2, a.batch - a.batch // 2, 1, 1, a.updates)
    start = time.perf_counter()
    for k, b in enumerate(batches, start=1):
        b = torch.as_tensor(b)
        loss = F.cross_entropy(model(feats[b]), labels[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = fairseq_lr(k, a.updates)
    return a.updates / (time.perf_counter() - start)


def train_rows(data: Path, a) -> dict:
    """``--rounds`` alternating plain / fairseq runs (load drifts: both get the same chances); best of each."""
    plain, fair = [], []
    for _ in range(a.rounds):
        plain.append(plain_ups(data, a))
        fair.append(fairseq_ups(data, a))
    plain.append(plain_ups(data, a))
    return {"fairseq_ups": max(fair), "plain_ups": max(plain), "ratio": max(fair) / max(plain),
            "fairseq_runs": fair, "plain_runs": plain}


EXTRACT = """
import json, resource, sys, time
sys.argv = ["x"]
from ofa_ext.cli.extract_features import build_parser, run
args = build_parser().parse_args({argv!r})
t = time.perf_counter(); r = run(args); dt = time.perf_counter() - t
print(json.dumps({{"seconds_with_start": dt, "seconds": r["train"]["seconds"], "rows": r["train"]["rows"],
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def extraction(root: Path, workers: int, n_images: int) -> dict:
    argv = ["--body", f"hf:{root / 'clip'}", "--data", str(root / "images"), "--classnames",
            str(root / "images" / "classes.txt"), "--out", str(root / f"feats{workers}"), "--splits", "train",
            "--templates", "vanilla", "--workers", str(workers), "--batch-size", "32", "--train-views", "center"]
    proc = subprocess.run([sys.executable, "-c", EXTRACT.format(argv=argv)], capture_output=True, text=True, env=ENV,
                          timeout=3600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["images_per_s"] = n_images / res["seconds"]  # the split's extraction, model loading excluded
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--images-per-class", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2, help="alternating plain/fairseq training runs")
    p.add_argument("--large", action="store_true", help="also the 1000-class x 1024-d row (ImageNet, RN50)")
    p.add_argument("--flush-denormal", action="store_true",
                   help="flush denormals to zero in both loops (a saturated softmax at scale 100 makes the CPU's "
                   "denormal slow path a large, trajectory-dependent share of these tiny steps)")
    p.add_argument("--skip-extract", action="store_true", help="only the training rows")
    p.add_argument("--skip-train", action="store_true", help="only the extraction rows")
    a = p.parse_args()
    torch.set_num_threads(1)
    result = {"config": vars(a)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_features(tmp / "feats", n_classes=a.classes, width=a.width, per_class=(a.shots, 4, 4),
                              templates=1, views=2)
        if not a.skip_train:
            result["train"] = r = train_rows(data, a)
            print(f"training from cached features ({a.classes} classes x {a.width}-d): fairseq {r['fairseq_ups']:.0f} "
                  f"updates/s, plain loop {r['plain_ups']:.0f} updates/s, ratio {r['ratio']:.2f}")
            if a.large:  # the released scale: ImageNet's 1000 classes, RN50's 1024-d features
                big = argparse.Namespace(**{**vars(a), "classes": 1000, "width": 1024})
                data = write_features(tmp / "feats_large", n_classes=1000, width=1024, per_class=(a.shots, 4, 1),
                                      templates=1, views=2)
                result["train_large"] = r = train_rows(data, big)
                print(f"training from cached features (1000 classes x 1024-d): fairseq {r['fairseq_ups']:.0f} "
                      f"updates/s, plain loop {r['plain_ups']:.0f} updates/s, ratio {r['ratio']:.2f}")
        if a.skip_extract:
            print(json.dumps(result))
            return
        from tests.xmodal_helpers import image_folders, tiny_clip_folder

        tiny_clip_folder(tmp)
        classes = tuple(f"c{i}" for i in range(8))
        image_folders(tmp / "images", classes=classes, counts=(a.images_per_class, 0, 0), size=(64, 48))
        n = len(classes) * a.images_per_class
        result["extract"] = {f"workers_{w}": extraction(tmp, w, n) for w in (0, 2)}
        for w, r in result["extract"].items():
            print(f"extraction {w}: {r['images_per_s']:.1f} images/s, peak RSS {r['maxrss_mb']:.0f} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
