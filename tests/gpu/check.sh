#!/bin/sh
# tests/gpu/check.sh: the GPU check of the CUDA backend (issue 6), for a
# machine that has a GPU, CMake and the CUDA toolkit and nothing else.
#  1. builds kernels/ + inference/ with COMMONS_INFERENCE_ONLY=ON (nvcc, cuBLAS),
#  2. check_gpu_ops: every CUDA kernel against the CPU kernel on fresh random
#     inputs (outputs poisoned with NaN first; NaN never passes),
#  3. check_gpu_model: whole-model logits GPU vs CPU on synthetic models of the
#     default model's shape (Gemma 3 270M) and Llama shapes, generated here,
#  4. bench/infer-gpu: a kernel-level decode step (eager vs CUDA graph, whose
#     logits must match bit for bit), then generation through infer_eval vs the
#     memory-bandwidth floor for synthetic TinyLlama-1.1B (BF16, Q8_0) and
#     default-model shapes.
# Usage: sh tests/gpu/check.sh [BUILD_DIR]   (default build-gpu; SKIP_BENCH=1
# skips step 4). Every step has a time limit; the script prints a summary and
# exits non-zero if any step failed. Results also go to $OUT when it is set.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$ROOT/build-gpu}
WORK=${WORK:-$BUILD/gpu-check}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
START=$(date +%s)
FAILED=""
mkdir -p "$WORK" || exit 1
LOG=$WORK/check.log
: > "$LOG"

say() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
# run NAME SECONDS CMD...: runs CMD with a time limit, logs it, records a failure
run() {
    name=$1; limit=$2; shift 2
    say "== $name"
    ( timeout -k 10 "$limit" "$@"; echo $? > "$WORK/.rc" ) 2>&1 | tee -a "$LOG"
    rc=$(cat "$WORK/.rc")
    if [ "$rc" != 0 ]; then
        [ "$rc" = 124 ] && say "TIMEOUT after ${limit}s: $name"
        say "FAILED ($rc): $name"
        FAILED="$FAILED $name"
    fi
    return "$rc"
}
finish() {
    say "== summary: $(($(date +%s) - START)) s"
    if [ -n "${OUT:-}" ]; then
        cp "$LOG" "$OUT/gpu-check.log"
        for f in bench.md step.md; do [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/"; done
    fi
    if [ -n "$FAILED" ]; then say "FAILED:$FAILED"; exit 1; fi
    say "all GPU checks passed"; exit 0
}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH

run configure 120 cmake -S "$ROOT" -B "$BUILD" -DCOMMONS_INFERENCE_ONLY=ON -DCMAKE_BUILD_TYPE=Release || finish
grep -q '^COMMONS_HAVE_CUDA\|CUDA found' "$LOG" || say "note: configure output did not mention CUDA"
run build 400 cmake --build "$BUILD" -j "$JOBS" --target check_gpu_ops check_gpu_model check_gpu_mkvocab \
    bench_infer_gpu bench_step_gpu commons-mkmodel test_kernels_cuda_nodev || finish
B=$BUILD/kernels
run ctx_smoke 60 "$B/test_kernels_cuda_nodev"
run kernels_vs_cpu 180 "$B/check_gpu_ops" --threads "$JOBS"
if [ "$rc" = 2 ]; then say "no usable CUDA device: nothing else can run"; finish; fi

MK=$BUILD/inference/commons-mkmodel
run vocab 60 sh -c "'$B/check_gpu_mkvocab' '$WORK/vocab32k.gguf' 32000 && '$B/check_gpu_mkvocab' '$WORK/vocab262k.gguf' 262144"
# the default model's shape (Gemma 3 270M: 640-wide rows, so Q5_0/Q8_0 as in its Q4_K_M file)
GEMMA="--arch gemma3 --embd 640 --layers 18 --heads 4 --kv-heads 1 --head-dim 256 --ff 2048 --window 512 --ctx 4096"
TINY="--arch llama --embd 2048 --layers 22 --heads 32 --kv-heads 4 --ff 5632 --ctx 2048"
run mk_gemma 120 "$MK" --vocab "$WORK/vocab262k.gguf" --out "$WORK/gemma270m-q5_0.gguf" $GEMMA --type q5_0 --embd-type q8_0
run mk_llama_q4k 120 "$MK" --vocab "$WORK/vocab32k.gguf" --out "$WORK/llama-q4k.gguf" --arch llama --embd 2048 \
    --layers 3 --heads 32 --kv-heads 4 --ff 5632 --type q4_k --embd-type q6_k --rope-freqs
run mk_llama_bf16 120 "$MK" --vocab "$WORK/vocab32k.gguf" --out "$WORK/llama-bf16.gguf" --arch llama --embd 1024 \
    --layers 2 --heads 16 --kv-heads 4 --ff 2816 --type bf16 --tied
M=$B/check_gpu_model
run logits_gemma 180 "$M" "$WORK/gemma270m-q5_0.gguf" --threads "$JOBS"
run logits_gemma_kvf16 180 "$M" "$WORK/gemma270m-q5_0.gguf" --threads "$JOBS" --kv f16 --prompt 530 --gen 4
run logits_llama_q4k 120 "$M" "$WORK/llama-q4k.gguf" --threads "$JOBS"
run logits_llama_bf16 120 "$M" "$WORK/llama-bf16.gguf" --threads "$JOBS" --kv f16

if [ "${SKIP_BENCH:-0}" != 1 ]; then
    # kernel-level decode step: eager vs CUDA graph (also checks graph == eager logits)
    ST=$B/bench_step_gpu
    : > "$WORK/step.md"
    run step_bf16 120 sh -c "'$ST' --type bf16 --header >> '$WORK/step.md'"
    run step_q8_0 120 sh -c "'$ST' --type q8_0 >> '$WORK/step.md'"
    run step_q4_k 120 sh -c "'$ST' --type q4_k >> '$WORK/step.md'"
    tee -a "$LOG" < "$WORK/step.md"
    run mk_tiny_bf16 180 "$MK" --vocab "$WORK/vocab32k.gguf" --out "$WORK/tinyllama-bf16.gguf" $TINY --type bf16
    run mk_tiny_q8 180 "$MK" --vocab "$WORK/vocab32k.gguf" --out "$WORK/tinyllama-q8_0.gguf" $TINY --type q8_0
    BI=$B/bench_infer_gpu
    : > "$WORK/bench.md"
    run bench_tiny_bf16 120 sh -c "'$BI' '$WORK/tinyllama-bf16.gguf' --label 'TinyLlama-1.1B shape BF16' --header >> '$WORK/bench.md'"
    run bench_tiny_q8 120 sh -c "'$BI' '$WORK/tinyllama-q8_0.gguf' --label 'TinyLlama-1.1B shape Q8_0' >> '$WORK/bench.md'"
    run bench_gemma 120 sh -c "'$BI' '$WORK/gemma270m-q5_0.gguf' --label 'Gemma 3 270M shape Q5_0/Q8_0' >> '$WORK/bench.md'"
    say "== bench/infer-gpu (record in bench/RESULTS.md with card and date)"
    tee -a "$LOG" < "$WORK/bench.md"
    rm -f "$WORK"/tinyllama-*.gguf
fi
finish
