#!/usr/bin/env bash
# The training experiments of issue 4, run through the `semsearch` command exactly as a user would.
#
#   benchmarks/training.sh stsb       # 1. regression on STSb train (dev every epoch, best kept) -> STSb test
#   benchmarks/training.sh nli        # 2. classification on SNLI validation -> SNLI test accuracy, STSb test
#   benchmarks/training.sh triplet    # 3. triplets on SNLI validation triplets -> test triplet accuracy before/after
#   benchmarks/training.sh nli-stsb   # 4. the paper's recipe: NLI softmax first, then STSb regression
#   benchmarks/training.sh stsb-eval90  # 1 again, also scored on dev every 90 steps (same seed: same weights)
#   benchmarks/training.sh snli-all-stsb  # 4 with twice the NLI data: softmax on SNLI validation + test (19,666
#                                       # pairs), then STSb; its NLI accuracy is not reported (it saw the test set)
#   benchmarks/training.sh nli-stsb-traindev  # 4, but the STSb stage trains on train + dev (7,249 pairs) for
#                                       # 4 epochs and keeps the last one (no dev file left to choose with)
#   benchmarks/training.sh triplet-stsb  # 3 (triplets), then 1 starting from that model
#   benchmarks/training.sh all
#
# Each writes benchmarks/results/training-NAME.log (commands, their output, wall times). Models go to
# $MODELS (default /tmp/semsearch-training-models), not into the repository. Data is read in place from
# ../shared/data. Runs are seeded: SEED=42 (the default of --seed); another SEED names its logs NAME-seedN.
#
# Threads: torch uses one thread (OMP_NUM_THREADS=1) unless you set it. On a 2-core machine shared with
# other work, two threads made a MiniLM training step 20x slower (threads waiting on each other when one is
# descheduled); on an idle machine with more cores, set OMP_NUM_THREADS to the core count.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/.."
DATA=${DATA:-../shared/data}
MODELS=${MODELS:-/tmp/semsearch-training-models}
RESULTS=benchmarks/results
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SEMSEARCH=${SEMSEARCH:-.venv/bin/semsearch}
SEED=${SEED:-42}
SUFFIX=$([ "$SEED" = 42 ] && echo "" || echo "-seed$SEED")
mkdir -p "$MODELS" "$RESULTS"
STS_TRAIN=$DATA/stsb/stsb-en-train.csv
STS_DEV=$DATA/stsb/stsb-en-dev.csv
STS_TEST=$DATA/stsb/stsb-en-test.csv
NLI_COLUMNS=premise,hypothesis,label

run() {  # echo a command, run it, report its wall time
    echo "\$ $*"
    local start=$SECONDS
    "$@"
    echo "(wall time: $((SECONDS - start)) s)"
    echo
}

setup() {
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(uname -m), $(nproc --all) CPUs, OMP_NUM_THREADS=$OMP_NUM_THREADS, load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())')"
    echo
}

stsb() {
    setup
    run $SEMSEARCH eval sts "$STS_TEST"
    run $SEMSEARCH train "$STS_TRAIN" --objective regression --output "$MODELS/stsb$SUFFIX" --dev "$STS_DEV" \
        --epochs 4 --seed "$SEED" -q
    run $SEMSEARCH eval sts "$STS_TEST" --model "$MODELS/stsb$SUFFIX"
}

nli() {
    setup
    run $SEMSEARCH train "$DATA/nli/snli-validation.tsv" --objective classification --columns $NLI_COLUMNS \
        --output "$MODELS/nli$SUFFIX" --epochs 1 --seed "$SEED" -q
    run $SEMSEARCH eval nli "$DATA/nli/snli-test.tsv" --model "$MODELS/nli$SUFFIX" --columns $NLI_COLUMNS
    run $SEMSEARCH eval sts "$STS_TEST" --model "$MODELS/nli$SUFFIX"
    run $SEMSEARCH eval sts "$STS_DEV" --model "$MODELS/nli$SUFFIX"
}

triplet() {
    setup
    run $SEMSEARCH eval triplets "$DATA/nli/snli-triplets-test.tsv"
    run $SEMSEARCH train "$DATA/nli/snli-triplets-validation.tsv" --objective triplet --output "$MODELS/triplet" \
        --epochs 1 -q
    run $SEMSEARCH eval triplets "$DATA/nli/snli-triplets-test.tsv" --model "$MODELS/triplet"
    run $SEMSEARCH eval sts "$STS_TEST" --model "$MODELS/triplet"
}

stsb_eval90() {
    setup
    run $SEMSEARCH train "$STS_TRAIN" --objective regression --output "$MODELS/stsb-eval90" --dev "$STS_DEV" \
        --epochs 4 --eval-steps 90 -q
    run $SEMSEARCH eval sts "$STS_TEST" --model "$MODELS/stsb-eval90"
}

# A second stage: STSb regression (4 epochs) starting from the model in $1, saved as $MODELS/$2$SUFFIX, on the
# training file $3 (more `semsearch train` arguments after it), then scored on STSb test.
regression_stage() {
    local base=$1 name=$2 data=$3
    shift 3
    run $SEMSEARCH train "$data" --objective regression --model "$base" --output "$MODELS/$name$SUFFIX" \
        --epochs 4 --seed "$SEED" -q "$@"
    run $SEMSEARCH eval sts "$STS_TEST" --model "$MODELS/$name$SUFFIX"
}

nli_stsb() {
    setup
    [ -f "$MODELS/nli$SUFFIX/model.safetensors" ] || nli
    regression_stage "$MODELS/nli$SUFFIX" nli-stsb "$STS_TRAIN" --dev "$STS_DEV"
}

snli_all_stsb() {
    setup
    local all="$MODELS/snli-validation+test.tsv"
    { cat "$DATA/nli/snli-validation.tsv"; tail -n +2 "$DATA/nli/snli-test.tsv"; } > "$all"
    run $SEMSEARCH train "$all" --objective classification --columns $NLI_COLUMNS --output "$MODELS/snli-all$SUFFIX" \
        --epochs 1 --seed "$SEED" -q
    run $SEMSEARCH eval sts "$STS_DEV" --model "$MODELS/snli-all$SUFFIX"
    regression_stage "$MODELS/snli-all$SUFFIX" snli-all-stsb "$STS_TRAIN" --dev "$STS_DEV"
}

nli_stsb_traindev() {
    setup
    [ -f "$MODELS/nli$SUFFIX/model.safetensors" ] || nli
    local both="$MODELS/stsb-train+dev.csv"
    cat "$STS_TRAIN" "$STS_DEV" > "$both"
    regression_stage "$MODELS/nli$SUFFIX" nli-stsb-traindev "$both"
}

triplet_stsb() {
    setup
    [ -f "$MODELS/triplet/model.safetensors" ] || triplet
    regression_stage "$MODELS/triplet" triplet-stsb "$STS_TRAIN" --dev "$STS_DEV"
}

case "${1:-}" in
    stsb) stsb 2>&1 | tee "$RESULTS/training-stsb$SUFFIX.log" ;;
    nli) nli 2>&1 | tee "$RESULTS/training-nli$SUFFIX.log" ;;
    triplet) triplet 2>&1 | tee "$RESULTS/training-triplet.log" ;;
    nli-stsb) nli_stsb 2>&1 | tee "$RESULTS/training-nli-stsb$SUFFIX.log" ;;
    stsb-eval90) stsb_eval90 2>&1 | tee "$RESULTS/training-stsb-eval90.log" ;;
    snli-all-stsb) snli_all_stsb 2>&1 | tee "$RESULTS/training-snli-all-stsb$SUFFIX.log" ;;
    nli-stsb-traindev) nli_stsb_traindev 2>&1 | tee "$RESULTS/training-nli-stsb-traindev$SUFFIX.log" ;;
    triplet-stsb) triplet_stsb 2>&1 | tee "$RESULTS/training-triplet-stsb$SUFFIX.log" ;;
    all) for name in stsb nli triplet nli-stsb; do "$SELF" "$name"; done ;;
    *) sed -n '2,13p' "$SELF"; exit 2 ;;
esac
