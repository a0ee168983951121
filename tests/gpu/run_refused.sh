#!/bin/sh
# tests/gpu/run_refused.sh COMMONS_RUN: ctest inference.run.gpu_refused.
# `commons-run --gpu` where no GPU can serve it must fail cleanly: exit status 1
# (never a crash or a signal) and a message naming CUDA, whether the build has no
# CUDA backend, the machine has no device, or the ordinal does not exist (device
# 4095 exists nowhere, so this holds on GPU machines too). Bad --device values are
# usage errors (exit status 2).
set -u
RUN=$1
TMP=$(mktemp -d) || exit 1
trap 'rm -rf "$TMP"' EXIT
fail=0
# expect NAME STATUS PATTERN ARGS...: status and a stderr line matching PATTERN
expect() {
    name=$1 want=$2 pat=$3
    shift 3
    "$RUN" "$@" > "$TMP/out" 2> "$TMP/err"
    got=$?
    if [ "$got" != "$want" ] || ! grep -q -- "$pat" "$TMP/err"; then
        echo "FAIL $name: exit status $got (want $want), stderr:"
        sed 's/^/    /' "$TMP/err"
        fail=1
    else
        echo "ok   $name: $(head -n 1 "$TMP/err")"
    fi
}
expect "absent device" 1 "CUDA" --gpu --device 4095 --model /nonexistent.gguf --prompt hi
expect "absent device, chat" 1 "CUDA" --chat --gpu --device 4095 --model /nonexistent.gguf
expect "absent device, bench" 1 "CUDA" --gpu --device 4095 --model /nonexistent.gguf --bench 4,4
expect "negative device" 2 "--device expects" --gpu --device -1 --model m.gguf --prompt hi
expect "device not a number" 2 "--device expects" --gpu --device one --model m.gguf --prompt hi
expect "device without --gpu" 2 "give --gpu too" --device 0 --model m.gguf --prompt hi
exit $fail
