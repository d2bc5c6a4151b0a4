#!/bin/bash
# session 33's part of the table (kodim03-24), two images at a time: run.sh's loop with the
# decode settings that differ from native on this AVX2 machine (onednn AVX2 and numpy avx512
# off are the native process here; kodim03 and 04 had them too) and the second writer
. .venv/bin/activate
cd REPO
for n in "$@"; do
  python benchmarks/portability.py run --images KODAK/kodim$n.png \
    --writers native "aten default + onednn SSE41" \
    --settings native "aten default" "onednn SSE41" "1 thread" \
    --out OUT/kodim$n > OUT/kodim$n.log 2>&1
done
# ./run_s33.sh 03 05 07 ... 23 & ./run_s33.sh 04 06 ... 24; then
# python benchmarks/portability.py merge --reports <kodim01-02 report> OUT/kodim*/portability.json --out DIR
