"""What the exact network costs in NELBO: the same images, times and noise through the
float network and through its exact twin (model/exact_network.py), which the coders run.

    python benchmarks/exact_cost.py KODAK/*.png --samples 8 --out results/exact_cost.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import diffcodec  # noqa: F401  (before torch: it sets OpenMP's wait policy, which torch reads as it loads)
import torch
from diffcodec.images import read_image
from diffcodec.model import load_named_model
from diffcodec.model.exact_network import ExactNetwork
from diffcodec.train.evaluation import image_nelbo


class _ExactAsModule(torch.nn.Module):
    """The exact network where the float one is called (one image at a time, float32 out)."""

    def __init__(self, network) -> None:
        super().__init__()
        self.exact = ExactNetwork(network)

    def forward(self, z: torch.Tensor, gamma: torch.Tensor):
        outs = [self.exact(z[i : i + 1].double(), float(gamma.reshape(-1)[i if gamma.numel() > 1 else 0]))
                for i in range(z.shape[0])]
        return tuple(torch.cat([o[k] for o in outs]).float() for k in range(len(outs[0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--crop", type=int, default=0, help="centre crop side (0 = whole image)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = load_named_model(args.model)
    float_network = model.network
    exact_network = _ExactAsModule(float_network)
    rows = []
    for path in args.images:
        image = read_image(path)[:, :, :3]
        if args.crop:
            top, left = (image.shape[0] - args.crop) // 2, (image.shape[1] - args.crop) // 2
            image = image[max(0, top): max(0, top) + args.crop, max(0, left): max(0, left) + args.crop]
        row = {"image": path.name}
        for name, network in (("float", float_network), ("exact", exact_network)):
            model.network = network
            start = time.perf_counter()
            row[name] = image_nelbo(model, image, samples=args.samples, seed=0, max_batch_pixels=1).total
            row[f"{name}_seconds"] = time.perf_counter() - start
        model.network = float_network
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {k: float(np.mean([r[k] for r in rows])) for k in ("float", "exact", "float_seconds", "exact_seconds")}
    summary["ratio"] = summary["exact"] / summary["float"]
    print(json.dumps(summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "images": rows, "samples": args.samples,
                                        "crop": args.crop}, indent=1))


if __name__ == "__main__":
    main()
