#!/bin/bash
# the weakest cells of ab32 again, alternating (float first, then new), and two encodes at once
. /work/main/.venv/bin/activate
cd /work/scratch
T() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local e=$(date +%s.%N); echo "$e - $s" | bc; }
for v in float new; do
  if [ $v = float ]; then P=/tmp/float9; else P=/work/main; fi
  PYTHONPATH=$P diffcodec encode /work/shared/data/kodak/kodim14.png -o /tmp/m14_$v.dfc --force >/dev/null 2>&1
done
for round in 1 2; do
 for v in float new; do
  if [ $v = float ]; then P=/tmp/float9; else P=/work/main; fi
  enc=$(export PYTHONPATH=$P; T diffcodec encode /work/shared/data/kodak/kodim23.png -o /tmp/m23_$v.dfc --mode lossless --steps 16 --force)
  dec=$(export PYTHONPATH=$P; T diffcodec decode /tmp/m14_$v.dfc -o /tmp/m14_$v.png --force)
  echo "round $round $v kodim23 lossless encode $enc kodim14 default decode $dec"
 done
done
for v in new; do
  P=/work/main; export PYTHONPATH=$P
  s=$(date +%s.%N)
  (diffcodec encode /work/shared/data/kodak/kodim01.png -o /tmp/t1.dfc --force >/dev/null 2>&1; echo "two at once $v kodim01 $(echo "$(date +%s.%N) - $s" | bc)") &
  (diffcodec encode /work/shared/data/kodak/kodim23.png -o /tmp/t2.dfc --force >/dev/null 2>&1; echo "two at once $v kodim23 $(echo "$(date +%s.%N) - $s" | bc)") &
  wait
done
