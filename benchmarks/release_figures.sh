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
# rate-distortion, diffcodec only: the classical codecs' points do not change) and
# completion/ (generative completion, 10 steps, whole images). LIMIT (default 24): the
# first LIMIT Kodak images only, split the same way (a smoke run).
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n 2,13p "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
model=$1 kodak=$2 cid=$3 out=$4 limit=${5:-24}
half=$(( (limit + 1) / 2 ))
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# halves NAME SCRIPT ARGS...: SCRIPT on the first and the last images side by side, then merged
halves() {
    local name=$1 script=$2
    shift 2
    python "$here/$script" "$kodak" --model "$model" --limit "$half" --out "$out/$name.a" "$@" > "$out/$name.a.log" 2>&1 &
    local first=$!
    python "$here/$script" "$kodak" --model "$model" --skip "$half" --limit "$(( limit - half ))" \
        --out "$out/$name.b" "$@" > "$out/$name.b.log" 2>&1 &
    local second=$!
    wait "$first" || { echo "$script (first half) failed: $out/$name.a.log" >&2; exit 1; }
    wait "$second" || { echo "$script (second half) failed: $out/$name.b.log" >&2; exit 1; }
}

if [ "$limit" -ne 24 ]; then  # a smoke run: the first LIMIT images in a folder of their own
    mkdir -p "$out/images"
    find "$kodak" -maxdepth 1 -name '*.png' | sort | head -n "$limit" | xargs -I{} cp {} "$out/images/"
    kodak=$out/images
fi

diffcodec eval "$kodak" --model "$model" --json "$out/eval_kodak.json" > "$out/eval_kodak.log" 2>&1 &
diffcodec eval "$cid" --model "$model" --json "$out/eval_cid22_validation.json" > "$out/eval_cid22.log" 2>&1
wait

halves full_file full_file.py --lossless-steps 16
python "$here/full_file.py" --merge "$out/full_file.a/full_file.json" "$out/full_file.b/full_file.json" --out "$out/full_file"

halves rd rate_distortion.py --steps 4 --completion-steps 0 --budget-bpps none --no-classical --ideal-points 0
python "$here/rate_distortion.py" --merge "$out/rd.a/rd_raw.json" "$out/rd.b/rd_raw.json" --out "$out/rd" \
    --steps 4 --completion-steps 0 --budget-bpps none --no-classical --ideal-points 0 > "$out/rd.log" 2>&1

halves completion completion.py --crop 0 --steps 10
python "$here/completion.py" --merge "$out/completion.a/completion.json" "$out/completion.b/completion.json" \
    --out "$out/completion" > "$out/completion.log" 2>&1

echo "figures in $out: eval_kodak.json, eval_cid22_validation.json, full_file/, rd/, completion/"
