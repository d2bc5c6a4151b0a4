#!/usr/bin/env bash
# Every figure the README and the model card quote, measured again for one model: run it
# after new weights are made the default (docs/training.md, "Shipping a model"). On the
# 2-core machine each benchmark runs as two processes of one thread, Kodak's first 12
# images beside its last 12, and the halves are merged: about two hours, idle machine.
#
#   benchmarks/release_figures.sh MODEL KODAK CID22_VALIDATION OUT [LIMIT]
#
# OUT gets eval_kodak.json, eval_cid22_validation.json (NELBO, 8 samples), full_file/
# (default and 16-step lossless files, every decode checked), rd/ (the 4-layer prefixes'
# rate-distortion beside the classical codecs' stored curves, benchmarks/results/kodak/, with
# BD-rates) and completion/ (generative completion, 10 steps, whole images). LIMIT (at
# least 2; default: all): the first LIMIT images of each folder only (a smoke run).
# PYTHON: the interpreter to use [default: python3].
set -euo pipefail
usage() { sed -n 2,14p "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 4 ] || usage
model=$1 kodak=$2 cid=$3 out=$4 limit=${5:-all}
[[ $limit == all || ( $limit =~ ^[0-9]+$ && $limit -ge 2 ) ]] || usage
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
diffcodec() { "$python" "$here/../bin/diffcodec" "$@"; }
fail() { echo "release_figures.sh: $1 failed, see $2" >&2; exit 1; }
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # no half left running when the other fails
mkdir -p "$out"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# the first LIMIT images of a folder (in the benchmarks' order) in a folder of their own
first_images() {
    rm -rf "$2" && mkdir -p "$2"
    "$python" - "$1" "$2" "$limit" <<'EOF' || fail "listing $1" "the message above"
import shutil, sys
from diffcodec.images import list_images
for path in list_images(sys.argv[1])[: int(sys.argv[3])]:
    shutil.copy(path, sys.argv[2])
EOF
}
if [ "$limit" != all ]; then
    first_images "$kodak" "$out/kodak" && kodak=$out/kodak
    first_images "$cid" "$out/cid22" && cid=$out/cid22
fi
count=$("$python" -c "import sys; from diffcodec.images import list_images; print(len(list_images(sys.argv[1])))" "$kodak")
half=$(( (count + 1) / 2 ))

# halves NAME SCRIPT ARGS...: SCRIPT on the first and the last images side by side
halves() {
    local name=$1 script=$2
    shift 2
    "$python" "$here/$script" "$kodak" --model "$model" --limit "$half" --out "$out/$name.a" "$@" \
        > "$out/$name.a.log" 2>&1 &
    local first=$!
    "$python" "$here/$script" "$kodak" --model "$model" --skip "$half" --out "$out/$name.b" "$@" \
        > "$out/$name.b.log" 2>&1 &
    local second=$!
    wait "$first" || fail "$script on the first images" "$out/$name.a.log"
    wait "$second" || fail "$script on the last images" "$out/$name.b.log"
}

diffcodec eval "$kodak" --model "$model" --json "$out/eval_kodak.json" > "$out/eval_kodak.log" 2>&1 &
kodak_eval=$!
diffcodec eval "$cid" --model "$model" --json "$out/eval_cid22_validation.json" > "$out/eval_cid22.log" 2>&1 \
    || fail "diffcodec eval (CID22 validation)" "$out/eval_cid22.log"
wait "$kodak_eval" || fail "diffcodec eval (Kodak)" "$out/eval_kodak.log"

halves full_file full_file.py --lossless-steps 16
"$python" "$here/full_file.py" --merge "$out/full_file.a/full_file.json" "$out/full_file.b/full_file.json" \
    --out "$out/full_file" > "$out/full_file.log" 2>&1 || fail "merging full_file" "$out/full_file.log"

halves rd rate_distortion.py --steps 4 --completion-steps 0 --budget-bpps none --no-classical --ideal-points 0
"$python" "$here/rate_distortion.py" --merge "$out/rd.a/rd_raw.json" "$out/rd.b/rd_raw.json" --out "$out/rd" \
    --against "$here/results/kodak" > "$out/rd.log" 2>&1 || fail "merging rate_distortion" "$out/rd.log"

halves completion completion.py --crop 0 --steps 10
"$python" "$here/completion.py" --merge "$out/completion.a/completion.json" "$out/completion.b/completion.json" \
    --out "$out/completion" > "$out/completion.log" 2>&1 || fail "merging completion" "$out/completion.log"

echo "figures in $out: eval_kodak.json, eval_cid22_validation.json, full_file/, rd/, completion/"
