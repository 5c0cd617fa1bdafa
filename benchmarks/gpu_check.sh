#!/usr/bin/env bash
# GPU check for a lent machine with no package index (see benchmarks/gpu_check.py for what is measured):
#   bash benchmarks/gpu_check.sh                 # ~3-5 min on one H100/H200; results under $OUT (else ./gpu_check_out)
#   bash benchmarks/gpu_check.sh --cpu-smoke     # any extra arguments go to gpu_check.py
# 1. deepspeed: if `import deepspeed` fails, install the bundled pure-Python wheel benchmarks/wheels/deepspeed-*.whl
#    (--no-deps --no-index), then any of its import-time dependencies that are missing (hjson, einops, msgpack,
#    py-cpuinfo, psutil, pydantic stack, typing-extensions) from benchmarks/wheels/deps (pip picks the wheel matching this Python).
#    If deepspeed still does not import, gpu_check.py runs the plain-PyTorch parts and says so.
# 2. the project: if `import finetune` fails, `pip install --no-deps --no-index --no-build-isolation -e .`,
#    falling back to PYTHONPATH=<repo root>.
# 3. python benchmarks/gpu_check.py "$@", its console output also saved to $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python}
OUT=${OUT:-$REPO/gpu_check_out}
export OUT
mkdir -p "$OUT"
PIP=("$PY" -m pip install --no-deps --no-index --disable-pip-version-check -q)

echo "== $(date -Is) $(hostname)  $($PY --version 2>&1)"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "(no nvidia-smi)"
$PY - <<'EOF'
import torch, transformers
print(f"torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}")
EOF

if ! $PY -c "import deepspeed" >/dev/null 2>&1; then
    echo "== deepspeed not importable: installing the bundled wheel"
    shopt -s nullglob
    wheels=(benchmarks/wheels/deepspeed-*.whl)
    if ((${#wheels[@]})); then
        "${PIP[@]}" "${wheels[@]}" || echo "   pip could not install ${wheels[*]}"
        # pydantic-core 2.50 needs typing_extensions.Sentinel (typing-extensions >= 4.14)
        if ! $PY -c "from typing_extensions import Sentinel" >/dev/null 2>&1; then
            echo "   installing typing-extensions 4.16 (pydantic-core needs Sentinel)"
            "${PIP[@]}" --find-links benchmarks/wheels/deps typing-extensions || echo "   could not install typing-extensions"
        fi
        # module to import → distribution in benchmarks/wheels/deps
        for pair in hjson:hjson einops:einops msgpack:msgpack cpuinfo:py-cpuinfo psutil:psutil \
                    annotated_types:annotated-types typing_inspection:typing-inspection \
                    pydantic_core:pydantic-core pydantic:pydantic; do
            mod=${pair%%:*}; dist=${pair#*:}
            if ! $PY -c "import $mod" >/dev/null 2>&1; then
                echo "   installing missing dependency $dist"
                "${PIP[@]}" --find-links benchmarks/wheels/deps "$dist" || echo "   could not install $dist"
            fi
        done
    else
        echo "   no benchmarks/wheels/deepspeed-*.whl: DeepSpeed runs will be skipped"
    fi
    DS_ACCELERATOR=${DS_ACCELERATOR:-} $PY -c "import deepspeed; print('   deepspeed', deepspeed.__version__)" 2>&1 \
        | grep -v "^\[20" | tail -3
fi

if ! $PY -c "import finetune.inject" >/dev/null 2>&1; then
    echo "== project not importable: pip install -e ."
    if ! "${PIP[@]}" --no-build-isolation -e . >/dev/null 2>&1 || ! $PY -c "import finetune.inject" >/dev/null 2>&1; then
        echo "   editable install failed: using PYTHONPATH=$REPO"
        export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi

echo "== python benchmarks/gpu_check.py $*"
$PY benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
