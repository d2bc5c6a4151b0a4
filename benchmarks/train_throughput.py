#!/usr/bin/env python3
"""Training crops/s and evaluation megapixels/s of a model configuration on this machine.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--batch-size 16] [--crop 64]
        [--model CHECKPOINT] [--json out.json]

Training speed is measured on random crops (the data pipeline is included: crops come
from in-memory images as in `diffcodec train`); evaluation speed is the NELBO of a
768x512 image (Kodak size), one (t, eps) sample per network pass.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffcodec.model import DiffusionModel, ModelConfig, load_model  # noqa: E402
from diffcodec.train.data import CropSampler  # noqa: E402
from diffcodec.train.evaluation import image_nelbo  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_training(model: DiffusionModel, sampler: CropSampler, batch: int, steps: int, device) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for i in range(steps + 3):  # three warm-up steps
        if i == 3:
            sync(device)
            start = time.perf_counter()
        loss = model.nelbo(sampler.sample(batch).to(device), generator=generator).total.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def measure_evaluation(model: DiffusionModel, samples: int, device) -> float:
    model.eval()
    image = np.random.default_rng(0).integers(0, 256, (512, 768, 3), dtype=np.uint8)
    image_nelbo(model, image[:64, :64], samples=1)  # warm-up
    sync(device)
    start = time.perf_counter()
    image_nelbo(model, image, samples=samples, max_batch_pixels=512 * 768)
    sync(device)
    return samples * image.shape[0] * image.shape[1] / 1e6 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--eval-samples", type=int, default=3, help="timed evaluation passes")
    parser.add_argument("--model", help="checkpoint to measure instead of the default configuration")
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = load_model(args.model, device) if args.model else DiffusionModel(ModelConfig()).to(device)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(8)]
    sampler = CropSampler(images, args.crop)
    result = {
        "device": str(device) if device.type != "cpu" else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": model.config.to_dict(),
        "batch_size": args.batch_size,
        "crop": args.crop,
        "train_crops_per_s": round(measure_training(model, sampler, args.batch_size, args.steps, device), 2),
        "eval_megapixels_per_s": round(measure_evaluation(model, args.eval_samples, device), 4),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
