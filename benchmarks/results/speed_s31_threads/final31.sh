#!/bin/bash
# idle A/B vs the float network (container 9), then two encodes at once; training paused
. /work/main/.venv/bin/activate
cd /work/scratch
TR=$(pgrep -f "s31grow" | head -1); kill -STOP $TR
T() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local e=$(date +%s.%N); echo "$e - $s" | bc; }
for round in 1 2; do
 for img in kodim01 kodim23; do
  for v in float new; do
   if [ $v = float ]; then P=/tmp/float9; else P=/work/main; fi
   enc=$(export PYTHONPATH=$P; T diffcodec encode kodak12/$img.png -o /tmp/ab_$v.dfc --force)
   dec=$(export PYTHONPATH=$P; T diffcodec decode /tmp/ab_$v.dfc -o /tmp/ab_$v.png --force)
   echo "idle round $round $img $v encode $enc decode $dec"
  done
 done
done
for v in float new float new; do
  if [ $v = float ]; then P=/tmp/float9; else P=/work/main; fi
  export PYTHONPATH=$P
  s=$(date +%s.%N)
  ( a=$(T diffcodec encode kodak12/kodim01.png -o /tmp/cc1_$v.dfc --force); echo "  kodim01 $a" ) &
  ( b=$(T diffcodec encode kodak12/kodim23.png -o /tmp/cc2_$v.dfc --force); echo "  kodim23 $b" ) &
  wait
  e=$(date +%s.%N); echo "two at once $v: both done in $(echo "$e - $s" | bc)"
  unset PYTHONPATH
done
kill -CONT $TR
