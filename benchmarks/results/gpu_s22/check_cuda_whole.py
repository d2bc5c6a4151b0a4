"""kodim01 whole on the GPU: decode the CPU-written files, encode both modes, compare; seconds."""
import time, sys
import numpy as np, torch
from pathlib import Path
from diffcodec import Codec
from diffcodec.images import read_image
d = Path(sys.argv[1])
t = time.perf_counter(); codec = Codec("default", device="cuda"); print(f"load {time.perf_counter()-t:.1f} s", flush=True)
pixels = np.asarray(read_image(d / "kodim01.png"))
for mode in ("progressive", "lossless"):
    ref = (d / f"kodim01.{mode}.dfc").read_bytes()
    t = time.perf_counter(); out = codec.decode(ref); torch.cuda.synchronize()
    print(f"decode {mode} on cuda: {'exact' if np.array_equal(out, pixels) else 'NOT EXACT'} {time.perf_counter()-t:.1f} s", flush=True)
    t = time.perf_counter(); data = codec.encode(pixels, mode=mode); torch.cuda.synchronize()
    print(f"encode {mode} on cuda: {'byte-identical' if data == ref else 'DIFFERENT'} ({len(data)} vs {len(ref)} B) {time.perf_counter()-t:.1f} s", flush=True)
