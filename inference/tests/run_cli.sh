#!/bin/sh
# run_cli.sh COMMONS_RUN CASE MODEL [VOCAB]: end-to-end checks of commons-run.
#   usage   bad flags exit 2 with a usage message; a bad model file exits 1 naming it
#   seed    same --seed, same sampled text; another seed, other text
#   stop    --stop TEXT ends the output just before the first TEXT of the greedy output
#   chat    --chat answers two user lines from stdin (default model, Gemma format)
# Expected outputs are derived from other runs of the program, never written in here.
set -u
run=$1
case_=$2
model=$3
vocab=${4:-}
fail=0
pass=0
check() {  # description, then a command whose success is the check
  d=$1
  shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $d"; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

exit_is() {  # expected status, then the commons-run arguments
  want=$1
  shift
  "$run" "$@" >"$tmp/out" 2>"$tmp/err"
  st=$?
  [ "$st" -eq "$want" ] || { echo "  exit $st, expected $want: $*"; cat "$tmp/err"; return 1; }
}

case $case_ in
usage)
  check "unknown flag" exit_is 2 --model "$model" --prompt x --bogus 1
  check "usage text on stderr" grep -q "usage: commons-run" "$tmp/err"
  check "missing --model" exit_is 2 --prompt x
  check "non-numeric --temp" exit_is 2 --model "$model" --prompt x --temp abc
  check "message names the flag" grep -q -- "--temp" "$tmp/err"
  check "zero threads" exit_is 2 --model "$model" --prompt x --threads 0
  check "negative -n" exit_is 2 --model "$model" --prompt x -n -3
  check "two modes" exit_is 2 --model "$model" --prompt x --chat
  check "unknown chat format" exit_is 2 --model "$model" --chat --chat-format jinja
  check "no chat format in a file without one" sh -c "echo hi | '$run' --model '$model' --chat -n 2 >/dev/null 2>'$tmp/err'; test \$? -eq 1 && grep -q -- --chat-format '$tmp/err'"
  check "--chat-format chatml on the same file" sh -c "echo hi | '$run' --model '$model' --chat --chat-format chatml -n 2 >/dev/null 2>'$tmp/err' && grep -q 'chat format chatml' '$tmp/err'"
  check "flag without value" exit_is 2 --model "$model" --prompt
  check "missing file" exit_is 1 --model "$tmp/nope.gguf" --prompt x
  check "message names the file" grep -q "$tmp/nope.gguf" "$tmp/err"
  if [ -n "$vocab" ]; then   # a vocabulary-only GGUF is not a model ...
    check "vocabulary-only file as model" exit_is 1 --model "$vocab" --prompt x
    check "message says what is missing" grep -q "missing" "$tmp/err"
    # ... but is enough to tokenize
    check "tokenize with vocabulary only" exit_is 0 --model "$vocab" --tokenize "Hello"
  fi
  ;;
seed)
  check "seeded run 1" exit_is 0 --model "$model" --prompt "Hello" -n 24 --temp 1.2 --top-k 0 --seed 5
  cp "$tmp/out" "$tmp/a"
  check "seeded run 2" exit_is 0 --model "$model" --prompt "Hello" -n 24 --temp 1.2 --top-k 0 --seed 5
  check "same seed, same text" cmp -s "$tmp/a" "$tmp/out"
  check "other seed" exit_is 0 --model "$model" --prompt "Hello" -n 24 --temp 1.2 --top-k 0 --seed 6
  check "other seed, other text" sh -c "! cmp -s '$tmp/a' '$tmp/out'"
  check "text was generated" test -s "$tmp/a"
  check "speeds reported" grep -q "generation 24 tokens" "$tmp/err"
  ;;
stop)
  check "greedy run" exit_is 0 --model "$model" --prompt "The capital of France is" -n 24 --temp 0
  full=$(cat "$tmp/out")
  # A stop string from the middle of the output: 4 bytes starting at byte 8.
  stop=$(printf '%s' "$full" | cut -b 9-12)
  check "output long enough for the test" test ${#stop} -ge 1
  check "greedy run with --stop" exit_is 0 --model "$model" --prompt "The capital of France is" -n 24 --temp 0 --stop "$stop"
  want=$(printf '%s' "$full" | awk -v s="$stop" 'BEGIN{RS="\001"} {i=index($0,s); printf "%s", substr($0,1,i-1)}')
  got=$(cat "$tmp/out")
  check "output ends before the stop string ('$got' vs '$want')" test "$got" = "$want"
  ;;
chat)
  printf 'What is the capital of France?\nAnd of Germany?\n' >"$tmp/in"
  "$run" --model "$model" --chat -n 16 --temp 0 <"$tmp/in" >"$tmp/out" 2>"$tmp/err"
  check "chat exits 0" test $? -eq 0
  check "chat format detected" grep -q "chat format gemma" "$tmp/err"
  check "two replies" test "$(wc -l <"$tmp/out")" -ge 2
  check "no control tokens printed" sh -c "! grep -q '<start_of_turn>\|<end_of_turn>' '$tmp/out'"
  # The second turn reuses the cache: far fewer prompt tokens than two full renders.
  check "prompt tokens reported" grep -q "prompt [0-9]* tokens" "$tmp/err"
  ;;
*)
  echo "run_cli.sh: unknown case $case_" >&2
  exit 2
  ;;
esac
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
