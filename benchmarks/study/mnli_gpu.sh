#!/usr/bin/env bash
# The MNLI tier of the study on one GPU machine without a package index or a model hub, in one call. On your own GPU
# machine with the repository installed, the tier is one command instead (the three MNLI files that tiers.yaml's
# `mnli` tier names, under DIR/mnli/; the packaged MiniLM):
#   python -m benchmarks.study.run_study --tier mnli --data-root DIR --workers 12 --threads 1
# This script carries everything the offline machine lacks. Prepare here, once:
#   python -m benchmarks.study.device_pack          # writes .device/ (fp16 MiniLM, the MNLI files, 4 wheels)
# then on the GPU machine, from the repository root, with .device carried:
#   STUDY_CODE_VERSION=$(git rev-parse HEAD) bash benchmarks/study/mnli_gpu.sh  # est. 5-8 min on one H200 (not run yet)
#   bash benchmarks/study/mnli_gpu.sh --smoke       # the same path on CPU: 2 designs, 4 steps a run
# Results: $OUT/mnli.jsonl (the committed benchmarks/study/mnli.jsonl plus this call's runs: copy it back and
# commit it) and $OUT/mnli.log. Resumable: a later call starts from the committed table and skips what it holds.
# Environment: WORKERS (default 12 processes sharing the GPU, 1 CPU thread each), DEADLINE (seconds after which no
# run starts; default 420, so a 600 s call ends with its runs finished).
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
OUT=${OUT:-$REPO/mnli_out}  # git-ignored
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
exec > >(tee -a "$OUT/mnli.log") 2>&1

echo "== $(date -Is) $(hostname) $($PY --version 2>&1)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
if [[ ! -d .device/minilm16 ]]; then
    echo "error: .device/ is missing: run python -m benchmarks.study.device_pack here and carry .device"; exit 2
fi
if ! $PY -c "import sacremoses, rouge_score" >/dev/null 2>&1; then
    echo "== installing the carried wheels into /tmp/site"
    $PY -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target /tmp/site \
        .device/whl/*.whl || exit 2
fi
export PYTHONPATH=/tmp/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__)"

MODEL=/tmp/minilm-mnli
$PY -m benchmarks.study.device_pack --unpack "$MODEL" || exit 2
RUN=($PY -m benchmarks.study.run_study --tier mnli --data-root .device --model "$MODEL" --work /tmp/study-work
     --nice 0)
if ((SMOKE)); then
    TABLE=$OUT/mnli_smoke.jsonl
    RUN+=(--smoke --table "$TABLE" --designs head_only,lora_qv_r32 --workers 2 --threads 1)
else
    TABLE=$OUT/mnli.jsonl
    [[ -f benchmarks/study/mnli.jsonl && ! -f $TABLE ]] && cp benchmarks/study/mnli.jsonl "$TABLE"
    RUN+=(--table "$TABLE" --workers "${WORKERS:-12}" --threads 1 --deadline-s "${DEADLINE:-420}")
fi
start=$(date +%s)
"${RUN[@]}"
rc=$?
echo "== runner exit $rc after $(( $(date +%s) - start )) s"
((rc == 2)) && exit 2  # bad input or no GPU: the runner's one error line above says what to fix
"${RUN[@]:0:11}" --table "$TABLE" $( ((SMOKE)) && echo --smoke --designs head_only,lora_qv_r32) --status
exit $rc
