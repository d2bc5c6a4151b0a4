"""Decode the CPU-written files on DEVICE and encode the sources there: compare pixels and bytes."""
import subprocess, sys, time
import numpy as np
from PIL import Image
dev = sys.argv[1]
import os; ROOT = os.path.abspath("../..")
ok = True
def px(p):
    im = Image.open(p); return im.mode, np.asarray(im)
for f in ["a_def", "a_ll", "b_def", "c_ll", "a_def_l1", "b_def_l1"]:
    t = time.time()
    r = subprocess.run([sys.executable, ROOT + "/bin/diffcodec", "decode", f + ".dfc", "-o", f"out_{f}.png", "--device", dev, "--quiet", "--force"], capture_output=True, text=True)
    if r.returncode:
        print("DECODE FAIL", f, r.stderr[-2000:]); ok = False; continue
    m1, a1 = px(f"out_{f}.png"); m2, a2 = px(f"exp_{f}.png")
    same = m1 == m2 and a1.shape == a2.shape and np.array_equal(a1, a2)
    ok &= same
    print(f"decode {f} on {dev}: {'identical to the CPU decode' if same else 'DIFFERENT'} ({time.time()-t:.1f} s)", flush=True)
for src, f, extra in [("a.png", "a_def", []), ("a.png", "a_ll", ["--mode", "lossless"]), ("b.png", "b_def", []), ("c.png", "c_ll", ["--mode", "lossless"])]:
    t = time.time()
    r = subprocess.run([sys.executable, ROOT + "/bin/diffcodec", "encode", src, "-o", f"gpu_{f}.dfc", "--device", dev, "--quiet", "--force", *extra], capture_output=True, text=True)
    if r.returncode:
        print("ENCODE FAIL", f, r.stderr[-2000:]); ok = False; continue
    same = open(f"gpu_{f}.dfc", "rb").read() == open(f + ".dfc", "rb").read()
    ok &= same
    print(f"encode {src} {' '.join(extra) or 'default'} on {dev}: {'byte-identical to the CPU file' if same else 'DIFFERENT bytes'} ({time.time()-t:.1f} s)", flush=True)
print("PORTABILITY", "OK" if ok else "FAILED")
