#!/bin/bash
# A/B whole-process encode/decode: float network (container 9) vs current code; idle, 2 threads; default and lossless files
. /work/main/.venv/bin/activate
cd /work/scratch
T() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local e=$(date +%s.%N); echo "$e - $s" | bc; }
for round in $ROUNDS; do
 for img in $IMAGES; do
  for mode in default lossless; do
   if [ $mode = default ]; then M=""; else M="--mode lossless --steps 16"; fi
   for v in ${ORDER:-float new}; do
    if [ $v = float ]; then P=/tmp/float9; else P=/work/main; fi
    enc=$(export PYTHONPATH=$P; T diffcodec encode /work/shared/data/kodak/$img.png -o /tmp/ab_$v.dfc --force $M)
    dec=$(export PYTHONPATH=$P; T diffcodec decode /tmp/ab_$v.dfc -o /tmp/ab_$v.png --force)
    same=$(python -c "
from PIL import Image; import numpy as np
a=np.asarray(Image.open('/work/shared/data/kodak/$img.png').convert('RGB')); b=np.asarray(Image.open('/tmp/ab_$v.png').convert('RGB')); print('exact' if (a==b).all() else 'DIFF')")
    echo "round $round $img $mode $v encode $enc decode $dec bytes $(stat -c %s /tmp/ab_$v.dfc) $same"
   done
  done
 done
done
