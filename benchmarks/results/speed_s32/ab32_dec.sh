#!/bin/bash
# lossless-mode decode only, alternating float / new three times, kodim08 and kodim19 (the two slower pairs of round 2)
. /work/main/.venv/bin/activate
cd /work/scratch
T() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local e=$(date +%s.%N); echo "$e - $s" | bc; }
for img in kodim08 kodim19; do
 for v in float new; do
  if [ $v = float ]; then P=/tmp/float9; else P=/work/main; fi
  PYTHONPATH=$P diffcodec encode /work/shared/data/kodak/$img.png -o /tmp/l_${img}_$v.dfc --mode lossless --steps 16 --force >/dev/null 2>&1
 done
done
for round in 1 2 3; do
 for img in kodim08 kodim19; do
  for v in float new; do
   if [ $v = float ]; then P=/tmp/float9; else P=/work/main; fi
   dec=$(export PYTHONPATH=$P; T diffcodec decode /tmp/l_${img}_$v.dfc -o /tmp/l_$v.png --force)
   echo "round $round $img lossless $v decode $dec"
  done
 done
done
