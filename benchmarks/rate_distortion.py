#!/usr/bin/env python3
"""Rate-distortion of diffcodec's progressive prefixes against classical codecs.

    python benchmarks/rate_distortion.py IMAGES_DIR [--model default|PATH] [--steps N]
        [--limit N] [--quick] [--out results/] [--completion-steps 0,20] [--nelbo-samples 0]
        [--ideal-points 28] [--budget-bpps 0.05,0.1,...|none] [--skip N]
    python benchmarks/rate_distortion.py --merge part1/rd_raw.json part2/rd_raw.json --out DIR

Every image is encoded once with diffcodec; its prefixes are then measured two ways:
whole progressive layers (0 .. steps+1, from one ``decode_every_layer`` pass) and byte
budgets at fixed bpp targets (each cut at a chunk boundary and decoded). Each prefix is
shown either as the denoised estimate (completion 0) or after N steps of generative
completion. JPEG, WebP, AVIF, JPEG 2000 and (when installed) JPEG-XL run their quality
sweeps on the same images. Rates always come from real byte counts, headers included.

The yardstick is the model's ideal-channel curve (diffcodec.coding.ideal): the rate a
perfect channel coder would need to reach z_t, and the PSNR of the best estimate there.
It is drawn beside the real points, and ``rd_layers.md`` sets each layer's real bytes
against it: the curve's rate at the layer's noise level, and at the layer's PSNR.

Written to --out: one CompressAI-style JSON per method (``results`` holds per-point means
over images), ``rd_raw.json`` (every image and point), ``rd_table.md`` (PSNR at fixed
rates, BD-rates), the plots ``rd_psnr.png`` / ``rd_msssim.png`` and the first image's contact
sheet of its layers (``sheet_NAME.png``, as ``diffcodec previews`` draws it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    add_common_arguments, bd_rate, classical_codecs, interpolate_at, load_codec, load_images,
    machine_description, markdown_table, parse_int_list, point, run_classical, slug, timed, write_json,
)
from diffcodec.format import parse_file  # noqa: E402
from diffcodec.format.container import TIME_UNITS, VERSION, Mode  # noqa: E402
from diffcodec.sheet import contact_sheet, labels  # noqa: E402

BUDGET_BPPS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
TABLE_BPPS = (0.25, 0.5, 0.75, 1.0, 2.0)
IDEAL = "model ideal channel"
PLOT_MAX_BPP = 2.5
RESULT_KEYS = {"bpp": "bpp", "psnr-rgb": "psnr", "ms-ssim-rgb": "ms_ssim",
               "encoding_time": "encoding_time", "decoding_time": "decoding_time"}


def variant(completion: int) -> str:
    return "denoised" if completion == 0 else f"completion {completion}"


def layers_method(completion: int) -> str:
    return f"diffcodec ({variant(completion)})"


def budget_method(completion: int) -> str:
    return f"diffcodec budget ({variant(completion)})"


def network_passes(layers: int, completion: int) -> int:
    """Network evaluations of a standalone decode of the first ``layers`` step layers: one
    per point of the chain reached (each gives the next step's mean and the image shown),
    plus the completion steps."""
    return layers + 1 + completion


def ideal_rate_at(curve: dict, value: float, key: str) -> float | None:
    """The ideal curve's rate where ``key`` (psnr or times) equals ``value``; None outside it."""
    xs, rates = np.asarray(curve[key]), np.asarray(curve["bpp"])
    order = np.argsort(xs)
    if value is None or not np.isfinite(value) or not len(xs) or value < xs.min() or value > xs.max():
        return None
    return float(np.interp(value, xs[order], rates[order]))


def measure_diffcodec(codec, image: np.ndarray, steps: int | None, completions: list[int],
                      budgets: tuple[float, ...], sheet: Path | None = None) -> tuple[dict, dict]:
    """Encode once, then measure every layer prefix and byte budget for each completion variant.

    Returns (per-image facts, {method name: [point or None per index]}). Layer-prefix decode
    times are estimates (measured full-decode time scaled by network passes), since the
    images come from one shared pass; budget decode times are measured.
    """
    height, width = image.shape[:2]
    pixels = height * width
    data, encode_seconds = timed(codec.encode, image, steps=steps, seed=0)
    exact, decode_seconds = timed(codec.decode, data)
    parsed = parse_file(data)
    header_bytes = parsed.header_size
    facts = dict(file_bytes=len(data), header_bytes=header_bytes, lossless_bpp=8 * len(data) / pixels,
                 bpd=8 * len(data) / exact.size, lossless_round_trip=bool(np.array_equal(exact, image)),
                 encode_seconds=encode_seconds, decode_seconds=decode_seconds, every_layer_pass_seconds={})
    lossy = parsed.header.lossy_steps
    facts["times"] = [t / TIME_UNITS for t in parsed.header.times[: lossy + 1]] + [0.0]  # the tail ends at 0
    facts["rate_placed_layers"] = lossy
    facts["tail"] = str(Mode(parsed.header.tail_mode))
    _, lossy_seconds = timed(codec.decode, data, layers=lossy)
    facts["lossy_decode_seconds"] = lossy_seconds
    cuts = [parsed.prefix(layers=k).size for k in range(lossy + 2)]  # the step layers, then the tail
    methods = {}
    for completion in completions:
        shown, pass_seconds = timed(codec.decode_every_layer, data, completion_steps=completion)
        facts["every_layer_pass_seconds"][variant(completion)] = pass_seconds
        if sheet is not None and completion == min(completions):  # as `diffcodec previews` draws it
            contact_sheet(shown, labels(data, shown, image)).save(sheet)
        methods[layers_method(completion)] = [
            point(8 * cut / pixels, image, decoded, encode_seconds,
                  decode_seconds if k > lossy else
                  lossy_seconds * network_passes(k, completion) / network_passes(lossy, 0), layers=k, bytes=cut)
            for k, (cut, decoded) in enumerate(zip(cuts, shown))
        ]
        decoded_cuts: dict[int, dict] = {}  # several targets can fall on one chunk boundary
        budget_points = []
        for target in budgets:
            budget = int(target * pixels / 8)
            cut = parsed.prefix(max_bytes=budget).size if budget >= header_bytes else header_bytes
            if cut == header_bytes:  # no layer data within the budget: nothing to decode
                budget_points.append(None)
                continue
            if cut not in decoded_cuts:
                decoded, seconds = timed(lambda d, **kw: codec.decode_result(d, **kw).image, data[:cut],
                                         completion_steps=completion)
                decoded_cuts[cut] = point(8 * cut / pixels, image, decoded, encode_seconds, seconds, bytes=cut)
            budget_points.append({**decoded_cuts[cut], "target_bpp": target})
        methods[budget_method(completion)] = budget_points
    return facts, methods


def aggregate(per_image: list[list[dict | None]], labels: list) -> tuple[dict, list]:
    """CompressAI-style per-index means over images. An index is kept only when every image
    has a finite point there (a budget below the header size, or a lossless prefix with
    infinite PSNR, drops it), so that each mean is over the same images."""
    results = {key: [] for key in RESULT_KEYS}
    kept = []
    for index, label in enumerate(labels):
        points = [pts[index] if index < len(pts) else None for pts in per_image]
        if any(p is None or p["psnr"] is None or not np.isfinite(p["psnr"]) for p in points):
            continue
        for key, field in RESULT_KEYS.items():
            results[key].append(float(np.mean([p[field] for p in points])))
        kept.append(label)
    return results, kept


def method_documents(per_method: dict, facts: list[dict], classical: list, args) -> dict:
    """One CompressAI-style document per method, keyed by method name."""
    steps, model = len(facts[0]["times"]) - 1, args.model
    documents = {}
    for completion in args.completion_steps:
        shared = dict(kind="diffcodec", completion_steps=completion, steps=steps, model=model,
                      bpd=float(np.mean([f["bpd"] for f in facts])),
                      lossless_bpp=float(np.mean([f["lossless_bpp"] for f in facts])),
                      lossless_round_trip=all(f["lossless_round_trip"] for f in facts))
        how = ("the denoised estimate" if completion == 0
               else f"{completion} reverse diffusion steps of generative completion")
        name = layers_method(completion)
        results, kept = aggregate(per_method[name], list(range(steps + 2)))
        documents[name] = dict(
            name=name, description=(
                f"diffcodec, model {model}, {steps} steps: prefixes of whole progressive layers, shown as {how}. "
                "Rate = real prefix bytes incl. header. decoding_time is estimated: measured full-decode "
                "time x network passes of that prefix / steps. Lossless prefixes (infinite PSNR) omitted."),
            results=results, layers=kept, **shared)
        name = budget_method(completion)
        results, kept = aggregate(per_method[name], list(args.budget_bpps))
        documents[name] = dict(
            name=name, description=(
                f"diffcodec, model {model}, {steps} steps: file truncated to a byte budget (target bpp, cut at "
                f"a chunk boundary), shown as {how}. Rate = real cut bytes incl. header; decoding_time measured. "
                "Targets below the header size or reaching the lossless file omitted."),
            results=results, target_bpp=kept, **shared)
    if all("ideal" in f for f in facts):
        curves = [f["ideal"] for f in facts]
        documents[IDEAL] = dict(
            name=IDEAL, kind="ideal", description=(
                "The model's ideal-channel curve: prior KL plus the Gaussian chain's KLs down to z_t (the rate a "
                "perfect channel coder needs), against the PSNR of the best estimate from z_t; one noise sample "
                "per t, mean over images per t."),
            times=curves[0]["times"],
            results={"bpp": np.mean([c["bpp"] for c in curves], axis=0).tolist(),
                     "psnr-rgb": np.mean([c["psnr"] for c in curves], axis=0).tolist()})
    for codec in classical:
        results, kept = aggregate(per_method[codec.name], list(codec.sweep(args.quick)))
        documents[codec.name] = dict(
            name=codec.name, description=f"{codec.description}. Rate = real file bytes.", kind="classical",
            results=results, quality=kept,
            round_trip_decoded=all(p["round_trip_decoded"] for pts in per_method[codec.name] for p in pts))
    return documents


def rd_table(documents: dict, facts: list[dict], notes: list[str], header: str) -> str:
    """PSNR at fixed rates per method, BD-rates of every diffcodec curve vs every classical codec."""
    def fmt(value, pattern="{:.2f}"):
        return None if value is None else pattern.format(value)

    rows = [[name] + [fmt(interpolate_at(d["results"]["bpp"], d["results"]["psnr-rgb"], b)) for b in TABLE_BPPS]
            for name, d in documents.items()]
    ours = [n for n, d in documents.items() if d["kind"] == "diffcodec"]
    theirs = [n for n, d in documents.items() if d["kind"] in ("classical", "ideal")]
    bd_rows = []
    for name in ours:
        test = documents[name]["results"]
        cells = []
        for anchor_name in theirs:
            anchor = documents[anchor_name]["results"]
            value = bd_rate(anchor["bpp"], anchor["psnr-rgb"], test["bpp"], test["psnr-rgb"])
            cells.append(fmt(value, "{:+.1f}%") or "n/a (no overlap)")
        bd_rows.append([name] + cells)
    time_rows = [[name, len(d["results"]["bpp"]), fmt(np.mean(d["results"]["encoding_time"]) if d["results"]["bpp"] else None, "{:.3f}"),
                  fmt(np.mean(d["results"]["decoding_time"]) if d["results"]["bpp"] else None, "{:.3f}")]
                 for name, d in documents.items() if "encoding_time" in d["results"]]
    lossless = (f"diffcodec lossless: {np.mean([f['lossless_bpp'] for f in facts]):.3f} bpp "
                f"({np.mean([f['bpd'] for f in facts]):.4f} bits/dim), exact round trip: "
                f"{all(f['lossless_round_trip'] for f in facts)}.")
    parts = [
        header,
        "## PSNR-RGB (dB) at fixed rates",
        "Interpolated linearly in log(bpp) between measured points; – where a curve does not reach the rate.",
        markdown_table(["method"] + [f"{b:g} bpp" for b in TABLE_BPPS], rows),
        "## BD-rate of diffcodec vs each classical codec and the model's ideal channel (PSNR-RGB)",
        "Negative: diffcodec needs less rate for the same PSNR. Monotone piecewise cubic fit of log(rate) "
        "vs PSNR over the overlapping PSNR range.",
        markdown_table(["diffcodec curve"] + theirs, bd_rows),
        "## Points and mean seconds per point",
        markdown_table(["method", "points", "encode s", "decode s"], time_rows),
        lossless,
    ]
    if notes:
        parts.append("Notes: " + " ".join(notes))
    return "\n\n".join(parts) + "\n"


def layer_table(facts: list[dict], per_method: dict) -> str:
    """Each layer's real cumulative rate beside the ideal curve's: at the layer's noise level
    (what the model needs to reach the same z_t) and at the layer's PSNR (what it needs for
    the same quality). Means over images; ratios are means of per-image ratios."""
    points = per_method[layers_method(0)]
    total = len(facts[0]["times"]) - 1

    def mean(values, pattern="{:.3f}"):  # "–" unless every image has a value
        values = [v for v in values if v is not None and np.isfinite(v)]
        return pattern.format(np.mean(values)) if len(values) == len(facts) else "–"

    rows = []
    for k in range(1, total + 1):
        t = [f["times"][k] for f in facts]
        real = [pts[k]["bpp"] for pts in points]
        quality = [pts[k]["psnr"] for pts in points]
        at_t = [ideal_rate_at(f["ideal"], f["times"][k], "times") for f in facts]
        at_q = [ideal_rate_at(f["ideal"], pts[k]["psnr"], "psnr") for f, pts in zip(facts, points)]
        part = "rate-placed" if k <= facts[0]["rate_placed_layers"] else "tail"
        rows.append([k, part, mean(t), mean(real), mean(quality, "{:.2f}"), mean(at_t),
                     mean([r / a if a else None for r, a in zip(real, at_t)], "{:.2f}"), mean(at_q),
                     mean([r / a if a else None for r, a in zip(real, at_q)], "{:.2f}")])
    return "\n\n".join([
        "## Progressive layers against the model's ideal channel",
        "Cumulative real bpp (header included) after each layer; the ideal curve's rate at the layer's end time "
        "t and at the layer's PSNR; – where the curve (t >= its lowest time) does not reach.",
        markdown_table(["layer", "part", "t", "real bpp", "PSNR", "ideal bpp at t", "real / ideal at t",
                        "ideal bpp at PSNR", "real / ideal at PSNR"], rows)]) + "\n"


def visible_values(bpp: np.ndarray, values: np.ndarray) -> list[float]:
    """A curve's values inside the plot's x range (bpp sorted), with the drawn line's value
    at the edge where a segment leaves it, so the y range holds every visible line."""
    shown = list(values[bpp <= PLOT_MAX_BPP])
    if bpp[0] <= PLOT_MAX_BPP < bpp[-1]:
        shown.append(float(np.interp(PLOT_MAX_BPP, bpp, values)))
    return shown


def plot(documents: dict, key: str, label: str, path: Path) -> None:
    """One curve per method against bpp (up to PLOT_MAX_BPP); diffcodec solid, classical dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    shown = []
    for name, doc in documents.items():
        if key not in doc["results"]:
            continue
        bpp, values = np.asarray(doc["results"]["bpp"]), np.asarray(doc["results"][key])
        if len(bpp) == 0:
            continue
        order = np.argsort(bpp, kind="stable")
        style = {"diffcodec": "-o", "ideal": ":"}.get(doc["kind"], "--s")
        ax.plot(bpp[order], values[order], style, markersize=3, label=name)
        shown.extend(visible_values(bpp[order], values[order]))
    ax.set_xlim(0, PLOT_MAX_BPP)
    if shown:  # scale to what is visible, not to the near-lossless points beyond the x range
        low, high = min(shown), max(shown)
        margin = 0.05 * (high - low) or 0.5 * abs(high) or 1.0
        ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, merges=True)
    parser.add_argument("--steps", type=int, default=None, help="diffcodec rate-placed layers (default: the codec's)")
    parser.add_argument("--ideal-points", type=int, default=28,
                        help="times on the model's ideal-channel curve, from t=1 to 0.3 (0: skip)")
    parser.add_argument("--budget-bpps", type=lambda v: () if v == "none" else tuple(float(b) for b in v.split(",")),
                        default=BUDGET_BPPS, help="comma-separated byte budgets to cut and decode, or 'none'")
    parser.add_argument("--completion-steps", type=parse_int_list, default=[0, 20],
                        help="comma-separated; 0 = denoised estimate, N = N generative completion steps")
    parser.add_argument("--chunk-symbols", type=int, default=None,
                        help="symbols per entropy-coded chunk (finer byte-budget cuts, more overhead)")
    parser.add_argument("--no-classical", action="store_true",
                        help="diffcodec only (the classical codecs' points do not depend on it)")
    parser.add_argument("--nelbo-samples", type=int, default=0,
                        help="also report the model's NELBO (bits/dim) with this many samples (0: skip)")
    parser.add_argument("--skip", type=int, default=0, help="start after this many images (to split a run)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="RD_RAW",
                        help="join the rd_raw.json files of parts of one run (IMAGES_DIR is then ignored)")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="also table, plot and take BD-rates against the classical codecs' curves stored in "
                             "DIR (their JSON files from an earlier run on the same images)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        config, raw_images = merged(parser, args)
    elif args.images is None:
        parser.error("give an images folder, or --merge")
    elif args.skip < 0:
        parser.error("--skip must be 0 or more")
    else:
        config, raw_images = measure(args, out)
    report(config, raw_images, args, out)


def measure(args, out: Path) -> tuple[dict, list[dict]]:
    """Every image's diffcodec facts and every method's points (rd_raw.json's content)."""
    images = load_images(args.images, args.limit, args.quick, args.skip)
    codec = load_codec(args.model, args.device, args.chunk_symbols)
    classical, notes = ([], []) if args.no_classical else classical_codecs()
    raw_images = []
    for name, image in tqdm(images, desc="images", unit="image", dynamic_ncols=True):
        sheet = out / f"sheet_{Path(name).stem}.png" if not raw_images else None  # the first image's
        info, methods = measure_diffcodec(codec, image, args.steps, args.completion_steps, args.budget_bpps, sheet)
        if args.ideal_points:
            from benchmarks.ideal import ideal_curve

            info["ideal"] = ideal_curve(codec._context(0), image, points=args.ideal_points)
        if args.nelbo_samples:
            from diffcodec.train.evaluation import image_nelbo

            info["nelbo_bpd"] = image_nelbo(codec.model, image, samples=args.nelbo_samples).total
        for c in tqdm(classical, desc="classical codecs", leave=False, dynamic_ncols=True):
            methods[c.name] = [run_classical(c, image, q) for q in c.sweep(args.quick)]
        raw_images.append(dict(name=name, height=image.shape[0], width=image.shape[1], diffcodec=info, methods=methods))
    config = dict(images_dir=str(args.images), images=len(images), skip=args.skip, model=args.model, steps=args.steps,
                  chunk_symbols=codec.chunk_symbols, completion_steps=args.completion_steps, quick=args.quick,
                  budget_bpps=list(args.budget_bpps), ideal_points=args.ideal_points, nelbo_samples=args.nelbo_samples,
                  classical=[c.name for c in classical], format_version=VERSION,
                  machine=machine_description(args.device), notes=notes)
    return config, raw_images


MERGED_SAME = ("model", "steps", "chunk_symbols", "completion_steps", "quick", "budget_bpps", "ideal_points",
               "nelbo_samples", "classical", "format_version")


def merged(parser, args) -> tuple[dict, list[dict]]:
    """The parts' images as one run; the parts must agree on everything but their images."""
    parts = [json.loads(path.read_text()) for path in args.merge]
    if any(key not in part["config"] for part in parts for key in MERGED_SAME):
        parser.error("a part was written by an older rate_distortion.py: its settings cannot be checked")
    if len({json.dumps([part["config"][key] for key in MERGED_SAME]) for part in parts}) != 1:
        parser.error(f"the parts were run with different settings (one of {', '.join(MERGED_SAME)})")
    raw_images = [image for part in parts for image in part["images"]]
    if len({image["name"] for image in raw_images}) != len(raw_images):
        parser.error("the parts share images")
    flat = lambda key: [v for part in parts for v in (part["config"][key] if isinstance(part["config"][key], list)  # noqa: E731
                                                      else [part["config"][key]])]
    config = {key: parts[0]["config"][key] for key in MERGED_SAME}
    config.update(images=len(raw_images), merged=[str(path) for path in args.merge], images_dir=flat("images_dir"),
                  machine=sorted(set(flat("machine"))), notes=sorted(set(flat("notes"))))
    for key in ("model", "steps", "completion_steps", "quick", "budget_bpps", "ideal_points", "nelbo_samples"):
        setattr(args, key, config[key])
    args.images = ", ".join(config["images_dir"])
    for sheet in args.merge[0].parent.glob("sheet_*.png"):  # the first part's first image
        shutil.copyfile(sheet, Path(args.out) / sheet.name)
    return config, raw_images


def stored_curves(folder: Path) -> dict[str, dict]:
    """The classical codecs' curves (CompressAI-format JSON files) of an earlier run."""
    curves = {}
    for path in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("kind") == "classical" and isinstance(doc.get("results"), dict):
            curves[doc["name"]] = doc
    if not curves:
        sys.exit(f"error: no classical codec's curve (JSON with kind 'classical') in {folder}")
    return curves


def report(config: dict, raw_images: list[dict], args, out: Path) -> None:
    """rd_raw.json, one JSON per method, rd_table.md and the plots."""
    available = {c.name: c for c in classical_codecs()[0]}
    missing = [name for name in config["classical"] if name not in available]
    if missing:  # their sweeps (qualities) come from the codec's description here
        sys.exit(f"error: the parts measured {', '.join(missing)}, which this machine's Pillow lacks")
    classical = [available[name] for name in config["classical"]]
    notes = config["notes"]
    facts = [image["diffcodec"] for image in raw_images]
    per_method: dict[str, list] = {}
    for image in raw_images:
        for method, points in image["methods"].items():
            per_method.setdefault(method, []).append(points)
    documents = method_documents(per_method, facts, classical, args)
    if args.nelbo_samples:
        for doc in documents.values():
            if doc["kind"] == "diffcodec":
                doc["nelbo_bpd"] = float(np.mean([f["nelbo_bpd"] for f in facts]))
    for name, doc in documents.items():
        write_json(out / f"{slug(name)}.json", doc)
    write_json(out / "rd_raw.json", dict(config=config, images=raw_images))
    if args.against:
        documents.update({name: doc for name, doc in stored_curves(args.against).items() if name not in documents})

    header = (f"# Rate-distortion: {len(raw_images)} image(s) from {args.images}"
              f"{' (quick: centre crops)' if args.quick else ''}, model {args.model}, {args.steps or 'default'} rate-placed layers")
    table = rd_table(documents, facts, notes, header)
    if args.ideal_points and 0 in args.completion_steps:
        table += "\n" + layer_table(facts, per_method)
    (out / "rd_table.md").write_text(table)
    plot(documents, "psnr-rgb", "PSNR-RGB (dB)", out / "rd_psnr.png")
    plot(documents, "ms-ssim-rgb", "MS-SSIM (RGB)", out / "rd_msssim.png")
    print(table)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


if __name__ == "__main__":
    main()
