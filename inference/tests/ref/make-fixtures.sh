#!/bin/sh
# make-fixtures.sh BUILD_DIR [NAME...]: (re)make the logits fixtures in this folder.
#
# Synthetic models: for each line of synthetic.txt (or only the NAMEs given), write the
# model with BUILD_DIR/inference/commons-mkmodel and run reference.py on it.
# Real model (when no NAME is given, or REAL=1): the default Gemma 3 270M
# (scripts/get-model), prompts below.
# Needs a Python with `gguf` and `numpy` (PYTHON, default: the venv scripts/get-model
# makes in BUILD_DIR, into which this script pip-installs them).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=$(cd "${1:?usage: make-fixtures.sh BUILD_DIR [NAME...]}" && pwd)
shift
vocab=${VOCAB:-$root/../shared/data/vocab/ggml-vocab-llama-spm.gguf}
model=$("$root/scripts/get-model" "$build")
py=${PYTHON:-$build/model-venv/bin/python}
"$py" -c 'import gguf, numpy' 2>/dev/null || "$py" -m pip install --quiet gguf numpy
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "<s> The capital of France is a test language.\n The" in the Llama SPM vocabulary:
# 12 tokens, so Gemma's 4-token sliding window is exceeded; 4 more are generated.
synth_tokens="1 450 7483 310 3444 338 263 1243 4086 29889 13 450"

grep -v '^#' "$here/synthetic.txt" | while IFS='|' read -r name args atol rtol margin; do
  name=$(echo $name)
  [ -n "$name" ] || continue
  if [ $# -gt 0 ]; then
    case " $* " in *" $name "*) ;; *) continue ;; esac
  fi
  echo "== $name" >&2
  # shellcheck disable=SC2086
  "$build/inference/commons-mkmodel" --vocab "$vocab" --out "$tmp/$name.gguf" $args
  "$py" "$here/reference.py" "$tmp/$name.gguf" --tokens "$synth_tokens" --generate 4 \
    --name "$name" --out "$here/$name.txt"
  rm -f "$tmp/$name.gguf"
done

real() {  # name, token ids (BOS + `commons-run --tokenize TEXT`), tokens to generate,
          # [first stored position]
  echo "== $1" >&2
  "$py" "$here/reference.py" "$model" --tokens "$2" --generate "$3" --name "$1" \
    --first-pos "${4:-0}" --out "$here/$1.txt"
}
if [ $# -eq 0 ] || [ "${REAL:-0}" = 1 ]; then   # REAL=1: also with NAMEs given
  # "Monday, Tuesday, Wednesday,"
  real gemma3-days "2 49381 236764 9863 236764 10119 236764" 6
  # "January, February, March, April,"
  real gemma3-months "2 36302 236764 7250 236764 5261 236764 5365 236764" 8
  # "1, 2, ..., 150," (642 tokens, past the 512-token window): only the last prompt
  # position and the continuation are stored.
  ids="2 $("$build/inference/commons-run" --model "$model" --tokenize "$(seq -s ', ' 1 150),")"
  n=$(echo $ids | wc -w)
  real gemma3-count150 "$ids" 8 $((n - 1))
fi
