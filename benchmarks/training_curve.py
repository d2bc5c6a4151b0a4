#!/usr/bin/env python3
"""The training curve of a model made in stages: every stage's training loss and
validations, one after the other on a common axis of training steps.

    python benchmarks/training_curve.py RUN_DIR [RUN_DIR ...] --out results/training/

Each RUN_DIR is a `diffcodec train --out` directory (its curve.jsonl and options.json),
given in the order the stages ran; a stage that resumed from the one before continues its
step count, one started with --init counts from zero and is placed after it. Writes
``curve.png`` (needs matplotlib), ``validations.md`` (every validation: stage, step,
minutes on the run's clock, the metrics) and a copy of each stage's curve and options, so
the figure can be redrawn without the runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def read_stage(run: Path) -> tuple[dict, list[dict]]:
    options = json.loads((run / "options.json").read_text())
    rows = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines() if line.strip()]
    return options, rows


def validation_metrics(val: dict) -> dict[str, float]:
    """The bits/dim a validation reports: the objective's total and, where present, its parts."""
    keep = {key: val[key] for key in ("total", "nelbo", "chain") if key in val}
    return {key: float(value) for key, value in keep.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run directories, in order")
    parser.add_argument("--names", help="comma-separated stage names (default: the directory names)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    args = parser.parse_args()
    names = args.names.split(",") if args.names else [run.name for run in args.runs]
    if len(names) != len(args.runs):
        parser.error("--names needs one name per run")
    args.out.mkdir(parents=True, exist_ok=True)

    offset, stages, lines = 0, [], ["| stage | objective | step | minutes | validation (bits/dim) |", "|---|---|---|---|---|"]
    for name, run in zip(names, args.runs):
        options, rows = read_stage(run)
        shutil.copyfile(run / "curve.jsonl", args.out / f"{name}.curve.jsonl")
        shutil.copyfile(run / "options.json", args.out / f"{name}.options.json")
        train = [(offset + r["step"], r["train_bpd"]) for r in rows if "train_bpd" in r]
        vals = [(offset + r["step"], r["minutes"], validation_metrics(r["val"])) for r in rows if "val" in r]
        vals = [v for i, v in enumerate(vals) if i == 0 or v != vals[i - 1]]  # a run's end and its resume
        for step, minutes, metrics in vals:
            shown = ", ".join(f"{key} {value:.3f}" for key, value in metrics.items())
            lines.append(f"| {name} | {options['objective']} | {step} | {minutes:.1f} | {shown} |")
        stages.append((name, options["objective"], train, vals))
        offset = max([offset] + [step for step, _ in train])
    (args.out / "validations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(10, 7))
    grid = fig.add_gridspec(2, len(stages))
    top = fig.add_subplot(grid[0, :])
    for index, (name, objective, train, vals) in enumerate(stages):
        if train:
            steps, losses = zip(*train)
            window = 20
            smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1])
                      for i in range(len(losses))]
            top.plot(steps, smooth, label=f"{name} ({objective})")
        panel = fig.add_subplot(grid[1, index])  # each stage's own metric and scale
        for key in ("nelbo", "chain", "total"):
            points = [(step, m[key]) for step, _, m in vals if key in m]
            if key == "total" and any("nelbo" in m for _, _, m in vals):
                continue  # a chain+ELBO run's total is the sum of the two shown
            if points:
                xs, ys = zip(*points)
                panel.plot(xs, ys, "o-", label={"total": "validation", "nelbo": "NELBO", "chain": "chain term"}[key])
        panel.set_title(name, fontsize=9)
        panel.set_xlabel("step", fontsize=8)
        panel.tick_params(labelsize=7)
        panel.grid(alpha=0.3)
        panel.legend(fontsize=7)
        if index == 0:
            panel.set_ylabel("bits/dim (CID22 validation)")
    top.set_ylabel("bits/dim (training batches, smoothed)")
    top.set_xlabel("training step (stages one after the other)")
    top.grid(alpha=0.3)
    top.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "curve.png", dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
