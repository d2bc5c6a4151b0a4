#!/bin/bash
# the portability table for the shipped (session-28) model, one Kodak image per report
. .venv/bin/activate
cd REPO
for n in 01 02 03 04 05 06 07 08; do
  s=$(date +%s)
  python benchmarks/portability.py run --images KODAK/kodim$n.png \
    --settings native "aten default" "onednn SSE41" "onednn AVX2" "numpy avx512 off" "1 thread" "no SIMD (default + SSE41)" "compiled loops off" \
    --out OUT/kodim$n > OUT/kodim$n.log 2>&1
  echo "kodim$n $(( $(date +%s) - s )) s rc $?" >> OUT/done.txt
done
