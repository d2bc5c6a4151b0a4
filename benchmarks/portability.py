"""Do files decode exactly on other machines? Other CPUs simulated with the libraries' own
switches, each in a fresh process: files written natively and under other settings must be
byte-identical, and every file must decode to the exact pixels under every setting.

    python benchmarks/portability.py --images KODAK/*.png --out results/portability
    python benchmarks/portability.py merge --reports part1/portability.json part2/... --out all
    python benchmarks/portability.py --images ... --writers native cuda --settings native cuda  # on a GPU
    python benchmarks/portability.py compare --report benchmarks/results/portability/REPORT/portability.json \
        --images KODAK/kodim23.png --model MODEL --out here   # this machine against another's files

writes ``portability.json`` and a markdown table (settings x modes: files exact / files);
``merge`` joins the reports of runs over different images (a long run done in parts);
``compare`` writes the images of a stored report on this machine (a real other CPU, not a
simulated one) and checks the bytes against the report's native files by their SHA-256, then
decodes them here.
The test suite runs the same on a tiny model and small images (tests/test_portability.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Each setting is what another machine's kernels would be: the environment of a fresh process.
NUMPY_AVX512_OFF = "X86_V4 AVX512_ICL AVX512_SPR"
SETTINGS = {
    "native": {},
    "aten default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "onednn SSE41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "onednn AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "numpy avx512 off": {"NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512_OFF},
    "1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "aten default + onednn SSE41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "no SIMD (default + SSE41)": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                                  "NPY_DISABLE_CPU_FEATURES": "X86_V3 " + NUMPY_AVX512_OFF,
                                  "DIFFCODEC_KERNEL": "plain"},
    "compiled loops off": {"DIFFCODEC_KERNEL": "off"},  # no C compiler: the torch code
    "cuda": {},
}
# A setting that is another device rather than another CPU: its process runs the codec there.
DEVICES = {"cuda": "cuda"}
CPU_SETTINGS = tuple(s for s in SETTINGS if s not in DEVICES)
WRITERS = ("native", "no SIMD (default + SSE41)")
MODES = ("progressive", "lossless")


def _name(image: Path, mode: str) -> str:
    return f"{image.stem}.{mode}.dfc"


def write(model: str, images: list[Path], out: Path, modes, fallback: bool = True, device: str = "cpu") -> dict:
    """Encode every image in every mode into ``out``: {file: (sha256, seconds)}; without
    ``fallback`` the bits-back chain even where a coder without the model would be smaller."""
    from diffcodec import Codec
    from diffcodec.images import read_image as load_image

    codec = Codec(model, device=device)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for image in images:
        pixels = load_image(image)
        for mode in modes:
            start = time.perf_counter()
            data = codec.encode(pixels, mode=mode, stored_fallback=fallback)
            results[_name(image, mode)] = (hashlib.sha256(data).hexdigest(), time.perf_counter() - start)
            (out / _name(image, mode)).write_bytes(data)
    return results


def read(model: str, images: list[Path], folder: Path, modes, device: str = "cpu") -> dict:
    """Decode every file of ``folder``: {file: (exact, seconds)}."""
    from diffcodec import Codec
    from diffcodec.images import read_image as load_image

    codec = Codec(model, device=device)
    results = {}
    for image in images:
        pixels = np.asarray(load_image(image))
        pixels = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels  # as decode gives it
        for mode in modes:
            start = time.perf_counter()
            try:
                decoded = codec.decode((folder / _name(image, mode)).read_bytes())
                exact = bool(decoded.shape == pixels.shape and np.array_equal(decoded, pixels))
            except Exception as exc:  # noqa: BLE001 - a failure is a result here
                print(f"{image.name} {mode}: {exc}", file=sys.stderr)
                exact = False
            results[_name(image, mode)] = (exact, time.perf_counter() - start)
    return results


def machine() -> str:
    """This machine in words (common.machine_description: CPU model, torch's instruction set)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine_description

    return machine_description("cpu")


def _model_hash(model: str) -> str:
    from diffcodec.model.registry import load_named_model

    return load_named_model(model).model_hash


def compare(report: dict, model: str, images: list[Path], out: Path) -> dict:
    """Write ``images`` in the report's modes on this machine, compare each file's SHA-256 with
    the report's native file of the same name (written on the machine of the report), and
    decode every file here. Returns the comparison (also out/compare.json and compare.md)."""
    from diffcodec.format.container import VERSION

    try:
        reference, modes = report["written"]["native"], report["modes"]
    except (KeyError, TypeError):
        raise SystemExit("error: not a portability report (no native files in it)") from None
    names = [_name(image, mode) for image in images for mode in modes]
    if not names:
        raise SystemExit("error: compare needs --images (the report's images, here)")
    if any(name not in reference for name in names):
        raise SystemExit(f"error: the report has no files for {', '.join(n for n in names if n not in reference)}")
    if report.get("format_version", VERSION) != VERSION:
        raise SystemExit(f"error: the report's files are container {report['format_version']}, this code writes {VERSION}")
    model_hash = _model_hash(model)
    if report.get("model_hash", model_hash) != model_hash:
        raise SystemExit(f"error: the report was written with model {report['model_hash'][:16]}, not this one")
    if "model_hash" not in report:
        print("warning: the report does not record its model: --model must be the one it was written with",
              file=sys.stderr)
    fallback = report.get("fallback", True)
    written = write(model, images, out / "files", modes, fallback)
    decoded = read(model, images, out / "files", modes)
    result = {"model": model, "model_hash": model_hash, "machine": machine(), "reference_machine": report.get("machine"),
              "images": [image.name for image in images], "modes": modes,
              "identical": {f: sha == reference[f][0] for f, (sha, _) in written.items()},
              "decoded": decoded, "encode_seconds": {f: [seconds, reference[f][1]] for f, (_, seconds) in written.items()}}
    (out / "compare.json").write_text(json.dumps(result, indent=1))
    lines = [f"This machine: {result['machine']}; the report's: {result['reference_machine'] or 'not recorded'}.", "",
             "| file | bytes identical to the report's | exact decode here | encode s here / there |", "|---|---|---|---|"]
    for f, same in result["identical"].items():
        here, there = result["encode_seconds"][f]
        lines.append(f"| {f} | {'yes' if same else 'NO'} | {'yes' if decoded[f][0] else 'NO'} | {here:.1f} / {there:.1f} |")
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    return result


def _in_process(setting: str, action: str, model: str, images: list[Path], folder: Path, modes,
                fallback: bool = True) -> dict:
    """Run ``action`` in a fresh Python under ``setting``'s environment."""
    env = {**os.environ, **SETTINGS[setting]}
    command = [sys.executable, __file__, action, "--model", model, "--folder", str(folder),
               "--device", DEVICES.get(setting, "cpu"), "--modes", *modes, "--images", *map(str, images)]
    command += [] if fallback else ["--no-fallback"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{setting} {action} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(model: str, images: list[Path], out: Path, settings=CPU_SETTINGS, writers=WRITERS, modes=MODES,
        fallback: bool = True) -> dict:
    """Write with each writer, compare the bytes with the native ones, decode the native files
    under every setting. Returns the report (also written to out/portability.json)."""
    if writers[0] != "native":
        raise SystemExit("the first writer must be native: its files are the reference")
    if any(s in DEVICES for s in (*settings, *writers)):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("the cuda setting needs a GPU, and torch sees none here")
    written = {w: _in_process(w, "write", model, images, out / w.replace(" ", "_"), modes, fallback)
               for w in writers}
    native = written[writers[0]]
    identical = {w: {f: files[f][0] == native[f][0] for f in files} for w, files in written.items()}
    decoded = {s: _in_process(s, "read", model, images, out / writers[0].replace(" ", "_"), modes) for s in settings}
    from diffcodec.format.container import VERSION

    report = {"model": model, "model_hash": _model_hash(model), "machine": machine(), "format_version": VERSION,
              "fallback": fallback, "images": [i.name for i in images], "modes": list(modes),
              "written": written, "identical": identical, "decoded": decoded}
    (out / "portability.json").write_text(json.dumps(report, indent=1))
    (out / "portability.md").write_text(table(report))
    return report


def merge(reports: list[dict], out: Path) -> dict:
    """One report from runs over different images with the same model and modes; a setting or
    writer that only some runs had counts only their files (the table says so: exact / files)."""
    first = reports[0]
    for other in reports[1:]:
        if (other["model"], other.get("model_hash"), other["modes"]) != (
                first["model"], first.get("model_hash"), first["modes"]):
            raise SystemExit("these reports differ in model or modes")
    merged = {"model": first["model"], **{k: first[k] for k in ("model_hash", "format_version", "fallback") if k in first},
              "images": [Path(i).name for r in reports for i in r["images"]], "modes": first["modes"]}
    machines = sorted({r["machine"] for r in reports if "machine" in r})
    if machines:
        merged["machine"] = "; ".join(machines)
    for key in ("written", "identical", "decoded"):
        names = list(dict.fromkeys(name for r in reports for name in r[key]))
        merged[key] = {name: {f: v for r in reports for f, v in r[key].get(name, {}).items()} for name in names}
    out.mkdir(parents=True, exist_ok=True)
    (out / "portability.json").write_text(json.dumps(merged, indent=1))
    (out / "portability.md").write_text(table(merged))
    return merged


def table(report: dict) -> str:
    modes = report["modes"]
    lines = ["| setting | " + " | ".join(f"{m}: exact decodes" for m in modes) + " | seconds per decode |",
             "|---|" + "---|" * (len(modes) + 1)]
    for setting, files in report["decoded"].items():
        cells = []
        for mode in modes:
            mine = [v for f, v in files.items() if f.endswith(f".{mode}.dfc")]
            cells.append(f"{sum(e for e, _ in mine)}/{len(mine)}")
        seconds = np.mean([s for _, s in files.values()])
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {seconds:.1f} |")
    lines += ["", "| writer | " + " | ".join(f"{m}: bytes identical to native" for m in modes) + " |",
              "|---|" + "---|" * len(modes)]
    for writer, files in report["identical"].items():
        cells = [f"{sum(v for f, v in files.items() if f.endswith(f'.{m}.dfc'))}/"
                 f"{sum(1 for f in files if f.endswith(f'.{m}.dfc'))}" for m in modes]
        lines.append(f"| {writer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", nargs="?", default="run", choices=["run", "write", "read", "merge", "compare"])
    parser.add_argument("--images", nargs="+", type=Path, default=[])
    parser.add_argument("--settings", nargs="+", default=list(CPU_SETTINGS), choices=list(SETTINGS),
                        help="(run) the settings to decode under (cuda: on the GPU)")
    parser.add_argument("--writers", nargs="+", default=list(WRITERS), choices=list(SETTINGS),
                        help="(run) the settings to write under; the first writes the files every setting decodes")
    parser.add_argument("--device", default="cpu", help="(write, read) where the codec runs")
    parser.add_argument("--reports", nargs="+", type=Path, default=[], help="(merge) portability.json files")
    parser.add_argument("--report", type=Path, help="(compare) the portability.json whose native files to match")
    parser.add_argument("--model", default="default")
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--folder", type=Path, help="(write, read) where the files are")
    parser.add_argument("--out", type=Path, default=Path("results/portability"))
    parser.add_argument("--no-fallback", dest="fallback", action="store_false",
                        help="bits-back chains even where a coder without the model is smaller")
    args = parser.parse_args()
    if args.action == "write":
        print(json.dumps(write(args.model, args.images, args.folder, args.modes, args.fallback, args.device)))
    elif args.action == "read":
        print(json.dumps(read(args.model, args.images, args.folder, args.modes, args.device)))
    elif args.action == "compare":
        if args.report is None:
            raise SystemExit("error: compare needs --report")
        try:
            report = json.loads(args.report.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: cannot read the report {args.report}: {exc}") from None
        args.out.mkdir(parents=True, exist_ok=True)
        compare(report, args.model, args.images, args.out)
        print((args.out / "compare.md").read_text())
    elif args.action == "merge":
        print(table(merge([json.loads(path.read_text()) for path in args.reports], args.out)))
    else:
        report = run(args.model, args.images, args.out, settings=args.settings, writers=args.writers,
                     modes=args.modes, fallback=args.fallback)
        print(table(report))


if __name__ == "__main__":
    main()
