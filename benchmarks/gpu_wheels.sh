#!/usr/bin/env bash
# Prepare the GPU check's payload on a machine with network access (PyPI) and the real GLUE data:
#   bash benchmarks/gpu_wheels.sh [--data-dir DIR] [--out DIR]
# writes DIR (default .gpu_payload/ in the checkout, git-ignored) with
#   wheels/  cp312 wheels of what the GPU machine lacks (GPU_MACHINE_HAS below says what it has): ve-fairseq
#            without its dependencies (they list torchaudio, a second torch), the dependencies fairseq and the
#            plugin import (setup.py install_requires: tests/test_gpu_check.py checks that each is here or there),
#            pytest;
#   data/    SST-2 train/dev tsv files and the GPT-2 BPE + ALBERT vocabularies (the layout of ../shared/data);
#   bin/     the same SST-2 binarized for RoBERTa and ALBERT (benchmarks/glue_data.py), when fairseq is here.
# Then copy the whole checkout (payload included) to the GPU machine and run `bash benchmarks/gpu_check.sh OUT_DIR`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${FAIRSEQ_NPU_SHARED_DATA:-$REPO/../shared/data}"
OUT="$REPO/.gpu_payload"
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) DATA_DIR="$2"; shift 2 ;;
        --data-dir=*) DATA_DIR="${1#*=}"; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#*=}"; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "gpu_wheels.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
for f in glue/SST-2/train.tsv glue/SST-2/dev.tsv vocab/gpt2_bpe/encoder.json vocab/gpt2_bpe/vocab.bpe \
         vocab/gpt2_bpe/dict.txt vocab/albert/30k-clean.rebuilt.model vocab/albert/30k-clean.vocab; do
    [ -f "$DATA_DIR/$f" ] || { echo "gpu_wheels.sh: error: $DATA_DIR/$f not found (pass --data-dir DIR)" >&2; exit 2; }
done

# built beside the destination and renamed into place: an interrupted run leaves no half payload behind
TMP="$(mktemp -d "$(dirname "$OUT")/.gpu_payload.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/wheels" "$TMP/data/glue/SST-2" "$TMP/data/vocab/gpt2_bpe" "$TMP/data/vocab/albert"

PY_VERSION="${GPU_PYTHON_VERSION:-3.12}"  # the GPU machine's Python
TARGET=(--python-version "$PY_VERSION" --implementation cp --abi "cp${PY_VERSION/./}" --platform manylinux2014_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --only-binary=:all:)
PIP=("$PYTHON" -m pip --disable-pip-version-check)
# the GPU machine (Python 3.12, CUDA torch 2.11, transformers 5.17): what it has, which the payload leaves out
GPU_MACHINE_HAS=(torch transformers accelerate tensorboard protobuf safetensors numpy pyyaml regex tqdm packaging
                 scikit-learn scipy sentencepiece tiktoken)
# in fairseq's requirements for building its extensions only: nothing imports them at run time
BUILD_ONLY=(cffi cython)
# one by one and without dependencies (theirs are in GPU_MACHINE_HAS or listed here)
WHEELS=(
    "ve-fairseq==0.12.3"
    "hydra-core>=1.3.2,<1.4" "omegaconf>=2.3,<2.4"   # fairseq's configuration
    "bitarray"                                        # fairseq.data.huffman, imported by fairseq.data
    "sacrebleu>=2.0,<3" "portalocker" "tabulate" "colorama" "lxml"   # fairseq.scoring imports sacrebleu
    "tensorboardX"                                    # --tensorboard-logdir (fairseq writes with it; needs protobuf)
    "pytest>=7" "iniconfig" "pluggy>=1.5"             # the CUDA tests (in case the machine's pytest is missing or old)
)
for spec in "${WHEELS[@]}"; do
    "${PIP[@]}" download --quiet --no-deps "${TARGET[@]}" -d "$TMP/wheels" "$spec"
done
# omegaconf 2.3 pins antlr4-python3-runtime 4.9.*, published as a source archive only: build its (pure Python,
# platform-independent) wheel here
"${PIP[@]}" wheel --quiet --no-deps -w "$TMP/wheels" "antlr4-python3-runtime==4.9.3"

cp "$DATA_DIR/glue/SST-2/train.tsv" "$DATA_DIR/glue/SST-2/dev.tsv" "$TMP/data/glue/SST-2/"
cp "$DATA_DIR"/vocab/gpt2_bpe/{encoder.json,vocab.bpe,dict.txt} "$TMP/data/vocab/gpt2_bpe/"
cp "$DATA_DIR"/vocab/albert/30k-clean.{rebuilt.model,vocab} "$TMP/data/vocab/albert/"
# the binarized SST-2 the benchmarks train on (fairseq's GLUE layout, benchmarks/glue_data.py), so that the GPU
# machine does not spend its minutes on BPE-encoding 67k sentences; without fairseq here, it builds them itself
if (cd "$REPO" && FAIRSEQ_NPU_SHARED_DATA="$DATA_DIR" "$PYTHON" -m benchmarks.glue_data --model roberta \
        --model albert --task SST-2 --cache "$TMP/bin" >"$TMP/bin.log" 2>&1); then
    rm -f "$TMP/bin.log"
else
    echo "gpu_wheels.sh: warning: could not binarize SST-2 here (see the log below); the GPU machine will" >&2
    tail -n 5 "$TMP/bin.log" >&2
    rm -rf "$TMP/bin" "$TMP/bin.log"
fi
(cd "$TMP" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum > SHA256SUMS)

SIZE_KB="$(du -sk "$TMP" | cut -f1)"
LIMIT_KB=$((60 * 1024))
if [ "$SIZE_KB" -gt "$LIMIT_KB" ]; then
    echo "gpu_wheels.sh: error: payload is $((SIZE_KB / 1024)) MiB, over the 60 MiB limit" >&2
    exit 1
fi
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
ls -l "$OUT/wheels"
echo "gpu_wheels.sh: $OUT: $((SIZE_KB / 1024)) MiB ($(ls "$OUT/wheels" | wc -l) wheels, SST-2, vocabularies$([ -d "$OUT/bin" ] && echo ", binarized SST-2"))"
