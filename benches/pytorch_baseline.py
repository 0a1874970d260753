"""PyTorch eager baselines for `make bench`, timed the way `muxmed bench model` times muxmed.

torchvision's DenseNet-121 (14 outputs, random weights: speed does not depend on them) in
NCHW and channels-last memory format: inference under torch.inference_mode() in eval mode,
and a training step (train mode, BCE-with-logits, backward, gradient-norm clipping at 5,
AdamW, zero_grad), at each batch size given. Optionally a TorchScript module (muxmed's
exported MUXNet-m) for inference. Each figure is the median of --iters timed runs after one
warm-up, in images per second. One JSON object per line on stdout; the first describes the
machine (CPU model, threads, torch version) so a figure is never read without it.
"""

import argparse
import json
import platform
import statistics
import time

import torch
import torchvision


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median_rate(batch, iters, fn):
    rates = []
    for i in range(iters + 1):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        if i > 0:
            rates.append(batch / dt)
    return statistics.median(rates)


def densenet(fmt):
    torch.manual_seed(0)
    m = torchvision.models.densenet121(weights=None, num_classes=14)
    return m.to(memory_format=fmt)


def infer_rate(model, x, iters):
    model.eval()

    def run():
        with torch.inference_mode():
            model(x).sum().item()

    return median_rate(x.shape[0], iters, run)


def train_rate(model, x, y, iters):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def run():
        loss = loss_fn(model(x), y)
        loss.item()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        opt.zero_grad()

    return median_rate(x.shape[0], iters, run)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="32,1")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--scripted", help="a TorchScript module to time for inference")
    ap.add_argument("--scripted-name", default="scripted")
    ap.add_argument("--formats", default="nchw,channels_last",
                    help="torchvision DenseNet-121 memory formats to time")
    ap.add_argument("--tag", default="default",
                    help="recorded in every row (e.g. the malloc settings of this run)")
    a = ap.parse_args()
    print(json.dumps({
        "machine": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }), flush=True)
    r = a.resolution
    for batch in [int(b) for b in a.batches.split(",")]:
        torch.manual_seed(0)
        x = torch.randn(batch, 3, r, r)
        y = torch.rand(batch, 14).round()
        formats = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
        for name in a.formats.split(","):
            fmt = formats[name]
            xf = x.contiguous(memory_format=fmt)
            m = densenet(fmt)
            row = {"model": "torchvision densenet121", "format": name, "batch": batch,
                   "tag": a.tag, "infer_images_per_s": infer_rate(m, xf, a.iters)}
            row["train_images_per_s"] = train_rate(m, xf, y, a.iters)
            print(json.dumps(row), flush=True)
        if a.scripted:
            m = torch.jit.load(a.scripted)
            print(json.dumps({"model": a.scripted_name, "format": "as exported", "batch": batch,
                              "tag": a.tag, "infer_images_per_s": infer_rate(m, x, a.iters)}),
                  flush=True)


if __name__ == "__main__":
    main()
