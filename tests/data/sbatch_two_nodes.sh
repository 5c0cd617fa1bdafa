#!/bin/bash
#SBATCH --job-name=petl-enro 1
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --gpus-per-node=4
#SBATCH --time=12:00:00
#SBATCH --partition=gpu
#SBATCH --account=lab
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={TMP}/runs/slurm-logs/%x-%j.out
#SBATCH --chdir={TMP}
#SBATCH --signal=B:INT@300
#SBATCH --mem=64G
#SBATCH --exclusive
# petl-submit slurm: the search 'enro 1' on a private Ray cluster over 2 node(s); a requeued or
# re-submitted job resumes it. Exit code: petl-search's (petl-search --help).
set -uo pipefail
PY=/opt/venv/bin/python
export PYTHONPATH={ROOT}${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
export RAY_AUTH_TOKEN="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
export PETL_RAY_BASE=$(( 20000 + (SLURM_JOB_ID % 800) * 50 ))
mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD="$("$PY" -m search.submit node-ip "${NODES[0]}"):$PETL_RAY_BASE"
[ "${HEAD%%:*}" ] || { echo "error: no address for node ${NODES[0]}"; exit 5; }
STEPS=()
srun --overlap --nodes=1 --ntasks=1 -w "${NODES[0]}" "$PY" -m search.submit ray-node --head &
STEPS+=($!)
srun --overlap --nodes=1 --ntasks=1 --ntasks-per-node=1 -x "${NODES[0]}" "$PY" -m search.submit ray-node --head-address "$HEAD" --first-index 1 &
STEPS+=($!)
# SIGTERM to the Ray steps' tasks (a signal to srun itself would SIGKILL them): each ends its node and
# removes its temp dir.
stop_ray() {
  for step in $(squeue -h -s -j "$SLURM_JOB_ID" -o %i | grep -v -e '\.batch$' -e '\.extern$'); do
    scancel --signal=TERM "$step"
  done
  wait "${STEPS[@]}" 2>/dev/null
}
"$PY" -m search.submit wait-nodes --address "$HEAD" --nodes 2 --timeout 300 || { code=$?; stop_ray; exit $code; }
"$PY" -m search.submit run -- --space full --dataset en-ro --name 'enro 1' --storage {TMP}/runs --gpus-per-trial 1 --tracking-uri sqlite:///{TMP}/mlflow.db --address "$HEAD" &
DRIVER=$!
# SLURM's --signal=B:INT reaches this shell only: pass it on; the driver saves its state and stops.
trap 'kill -INT "$DRIVER" 2>/dev/null' INT TERM
while true; do wait "$DRIVER"; code=$?; kill -0 "$DRIVER" 2>/dev/null || break; done
stop_ray
exit $code
