#!/bin/bash
. /work/main/.venv/bin/activate
cd /work/scratch
TR=$(pgrep -f "s31grow" | head -1); kill -STOP $TR
T() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local e=$(date +%s.%N); echo "$e - $s" | bc; }
for round in 1 2; do
  for v in float passive default; do
   P=/work/main; [ $v = float ] && P=/tmp/float9
   pol=PASSIVE; [ $v = default ] && pol=""; [ $v = float ] && pol=""
   enc=$(export PYTHONPATH=$P OMP_WAIT_POLICY=$pol; T diffcodec encode kodak12/kodim01.png -o /tmp/pp_$v.dfc --force)
   dec=$(export PYTHONPATH=$P OMP_WAIT_POLICY=$pol; T diffcodec decode /tmp/pp_$v.dfc -o /tmp/pp_$v.png --force)
   echo "round $round kodim01 $v encode $enc decode $dec"
  done
done
kill -CONT $TR
