#!/usr/bin/env bash
# The GPU variants of the benchmarks, for a lent H100/H200: at most about 9.5 minutes in all, so that one
# 600 s device call runs them (the five steps are capped at OVERHEAD_CAP=205 s, MEMORY_CAP=85 s,
# THROUGHPUT_CAP=105 s, TRIALS_CAP=95 s and GPU_MEMORY_CAP=75 s: 565 s; before the fifth came they were
# 240/90/120/120 s with 6 overhead trials, and the wheels are installed by an earlier `setup` call):
#   1. overhead: st-hpo vs the docs' hyperparameter_search recipe; MiniLM, full STSb train (5,749 pairs) and
#      dev (1,500 pairs), 1 epoch, fp32, batch 16, 6 trials each (OVERHEAD_ARGS), with nvidia-smi's GPU
#      busy fraction
#   2. memory drift: 30 MiniLM trials on CUDA in one process (complete, pruned, failed mid-training),
#      RSS and CUDA allocated/reserved after each trial
#   3. throughput: trials per hour with 1, 2 and 4 workers on GPU 0 (MiniLM, 1,000 STSb pairs, 8 trials
#      each: THROUGHPUT_TRIALS), with nvidia-smi's busy fraction
#   4. trials: `st-hpo run --workers 2` with a first trial that runs out of GPU memory (FAIL, then the next
#      trial on its worker), the device of every trial's model and optimizer state as the trial recorded it,
#      whether nvidia-smi ever lists the supervisor, and one CrossEncoder and one SparseEncoder trial;
#      figures merged into gpu-check.json (benchmarks/gpu_trials.py)
#   5. GPU memory and costs: a multi-objective trial's cost.encode_ms and cost.peak_memory_mb on CUDA, a
#      CachedMultipleNegativesRankingLoss whose first mini-batch cannot fit lowering its mini_batch_size, and
#      `st-hpo validate --probe-memory` on the card (benchmarks/gpu_memory.py; each part's figures are merged
#      as it ends)
# Prepare here with `bash benchmarks/device_prep.sh` (wheels in .whl, the model in .model/minilm, the data
# in .data/stsb-en). Expects, in the repo root there: .model/minilm (or a copy in /tmp/minilm from an
# earlier call) and .data/stsb-en
# (train.csv, dev.csv); optuna, datasets and mlflow either on PYTHONPATH already (e.g. /tmp/site) or as
# wheels in .whl (../shared/tools/device-prep.sh wheels), installed here to /tmp/site.
# Results (JSON + Markdown per benchmark, and the log) go to $OUT when set, else benchmarks/results/.
#
#   bash benchmarks/gpu_check.sh setup      # first call: install the wheels (.whl) to /tmp/site, check imports
#   bash benchmarks/gpu_check.sh            # all five
#   bash benchmarks/gpu_check.sh overhead   # or: memory, throughput, trials, gpu_memory
#   OVERHEAD_CAP=300 MEMORY_CAP=120 THROUGHPUT_CAP=150 TRIALS_CAP=120 bash benchmarks/gpu_check.sh   # caps in seconds
# OVERHEAD_ARGS (default "--trials 5") and MEMORY_ARGS (default none) are passed to those benchmarks.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}  # installed by an earlier call
if ! "$PY" -c "import optuna, datasets, mlflow" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | grep -v "WARNING" || true
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export STHPO_BENCH_DATA=${STHPO_BENCH_DATA:-$PWD/.data/stsb-en}
export STHPO_BENCH_CACHE=/tmp/st-hpo-bench
LOG=${OUT:-benchmarks/results}/gpu_check.log
mkdir -p "$(dirname "$LOG")"
what=${1:-all}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  rc=0
  "$PY" -c "from mlflow.tracking import MlflowClient; MlflowClient('sqlite:////tmp/st-hpo-probe.db').search_experiments(); import optuna, datasets, st_hpo; print('imports ok')" \
    || { echo "gpu_check: the Python set-up is incomplete (see above); nothing measured"; exit 1; }
  [ "$what" = setup ] && { echo "gpu_check: setup done (/tmp/site)"; exit 0; }
  if [ "$what" = all ] || [ "$what" = overhead ]; then
    timeout "${OVERHEAD_CAP:-205}" "$PY" benchmarks/overhead.py --device-check ${OVERHEAD_ARGS:---trials 5} || rc=1
  fi
  if [ "$what" = all ] || [ "$what" = memory ]; then
    timeout "${MEMORY_CAP:-85}" "$PY" benchmarks/memory_drift.py --device-check ${MEMORY_ARGS:-} || rc=1
  fi
  if [ "$what" = all ] || [ "$what" = throughput ]; then
    STHPO_BENCH_N_TRIALS=${THROUGHPUT_TRIALS:-8} timeout "${THROUGHPUT_CAP:-105}" "$PY" benchmarks/throughput.py \
      --device-check || rc=1
  fi
  if [ "$what" = all ] || [ "$what" = trials ]; then
    timeout "${TRIALS_CAP:-95}" "$PY" benchmarks/gpu_trials.py --device-check || rc=1
  fi
  if [ "$what" = all ] || [ "$what" = gpu_memory ]; then
    timeout "${GPU_MEMORY_CAP:-75}" "$PY" benchmarks/gpu_memory.py --device-check ${GPU_MEMORY_ARGS:-} || rc=1
  fi
  echo "gpu_check: exit $rc"
} 2>&1 | tee "$LOG"
