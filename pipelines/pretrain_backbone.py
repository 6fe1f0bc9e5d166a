"""Pretrain the transferred feature extractor: torchvision's ResNet18 on the eight CIFAR-10 classes outside
CIFAR-2 (clean labels), cached by content hash; prints the time and the source-task test accuracy.

    python pipelines/pretrain_backbone.py                       # -> results/pretrained/cifar8-resnet18.pt
    python pipelines/robust_al_eval.py q1 configs/eval-cifar2-transfer.yaml

The weights are written under their content hash (``cifar8-resnet18-<hash>.pt``, with a ``.json`` of the
settings, accuracy, time and versions) and copied to ``--out`` (the stable name the configs read). A second
run with the same data and settings trains nothing.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from robust_al.data.pretrain import CIFAR2, pretrain_cifar, source_classes, source_ids
from robust_al.reproducible import cpu_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", nargs="+", default=list(CIFAR2), help="the target task's classes (left out)")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n-train", type=int, default=16000,
                    help="source images (a stratified sample: 2000 per class by default; 0 = all 40,000)")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads: 1 gives the same weights on any "
                    "machine of one CPU kind (more threads sum in another order; 0 = torch's default)")
    ap.add_argument("--cache", default="results/pretrained")
    ap.add_argument("--out", default="results/pretrained/cifar8-resnet18.pt")
    args = ap.parse_args()
    with cpu_threads(args.threads):
        path, meta = pretrain_cifar(source_classes(args.target), args.arch, args.epochs, lr=args.lr,
                                    seed=args.seed, cache_dir=args.cache, n_train=args.n_train or None)
    out = Path(args.out)
    if out.resolve() != path.resolve():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(out)
        out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"source classes {meta['classes']}: {meta['n_train_images']} images, {meta['epochs']} epochs; "
          f"source test accuracy {meta['source_test_accuracy']:.4f} on {meta['n_test_images']} images; "
          f"pretraining took {meta['seconds']:.0f} s on {meta['device']}")
    ids = out.parent / (out.name + ".train_ids.csv")  # data.options.exclude of a CIFAR-10 campaign
    pd.DataFrame({"index": source_ids(meta["classes"], args.n_train or None, args.seed)}).to_csv(ids, index=False)
    print(f"weights: {out} (cached as {path}); its {meta['n_train_images']} source images: {ids}")


if __name__ == "__main__":
    main()
