#!/usr/bin/env python3
"""Baseline for `muxmed bench data`: the usual PyTorch-style image pipeline, without torch.

Each image is decoded with PIL, converted to RGB (as torchvision ImageFolder-style datasets
do), its shorter side resized to the working size (bilinear), randomly cropped to the
training size, scaled to [0, 1] and normalised with ImageNet statistics; batches are
stacked in the main process. Work is spread over worker *processes* like a DataLoader with
num_workers=2. Prints images per second as JSON.

Usage: pil_baseline.py IMAGES_DIR [--workers 2] [--working-size 256] [--crop 224]
       [--batch 32] [--epochs 1]
"""
import argparse
import json
import os
import random
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
ARGS = None


def load(item):
    path, seed = item
    rng = random.Random(seed)
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = ARGS.working_size
    if w < h:
        img = img.resize((s, round(h * s / w)), Image.BILINEAR)
    else:
        img = img.resize((round(w * s / h), s), Image.BILINEAR)
    w, h = img.size
    c = ARGS.crop
    left, top = rng.randint(0, w - c), rng.randint(0, h - c)
    img = img.crop((left, top, left + c, top + c))
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (x - MEAN) / STD


def init(args):
    global ARGS
    ARGS = args


def main():
    p = argparse.ArgumentParser()
    p.add_argument("images")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--working-size", type=int, default=256)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()
    files = sorted(
        os.path.join(args.images, f)
        for f in os.listdir(args.images)
        if f.lower().endswith((".png", ".jpg", ".jpeg"))
    )
    if not files:
        sys.exit(f"no images in {args.images}")
    n = 0
    t = time.perf_counter()
    with Pool(args.workers, initializer=init, initargs=(args,)) as pool:
        for epoch in range(args.epochs):
            order = list(range(len(files)))
            random.Random(epoch).shuffle(order)
            items = [(files[i], epoch * 1_000_003 + i) for i in order]
            batch = []
            for x in pool.imap(load, items, chunksize=4):
                batch.append(x)
                if len(batch) == args.batch:
                    np.stack(batch)
                    n += len(batch)
                    batch = []
            if batch:
                np.stack(batch)
                n += len(batch)
    dt = time.perf_counter() - t
    print(json.dumps({"images": n, "workers": args.workers, "images_per_s": n / dt}))


if __name__ == "__main__":
    main()
