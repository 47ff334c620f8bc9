#!/usr/bin/env bash
# The GPU variants of the benchmarks, for a lent H100/H200, in two device calls after a `setup` call (the
# whole check no longer fits one 600 s call: on 2026-12-04 the H200 ran out of its caps, see
# results/gpu-h200-2026-12-04.log). Measured there: the overhead anchor took 135 s for 5 trials, the trials
# step 130 s, the GradCache and costs parts of gpu_memory 54 s. Steps, their caps and sizes:
#   part1 (about 445 s):
#     4. trials (TRIALS_CAP=135): `st-hpo run --workers 2` with a first trial that runs out of GPU memory
#        (OUT_OF_MEMORY, then the next trial on its worker), the device of every trial's model and optimizer
#        state, whether nvidia-smi ever lists the supervisor, one CrossEncoder and one SparseEncoder trial
#        (benchmarks/gpu_trials.py)
#     5. gpu_memory (GPU_MEMORY_CAP=130): a multi-objective trial's cost.encode_ms and cost.peak_memory_mb on
#        CUDA, a CachedMultipleNegativesRankingLoss whose first mini-batch cannot fit lowering its
#        mini_batch_size, and `st-hpo validate --probe-memory` on the card (benchmarks/gpu_memory.py; each
#        part's figures are merged as it ends)
#     1. overhead (OVERHEAD_CAP=180): st-hpo vs the docs' hyperparameter_search recipe; MiniLM, full STSb
#        train (5,749 pairs) and dev (1,500 pairs), 1 epoch, fp32, batch 16, 3 trials each (OVERHEAD_ARGS),
#        with nvidia-smi's GPU busy fraction
#   part2 (about 280 s):
#     2. memory (MEMORY_CAP=130): 30 MiniLM trials on CUDA in one process (complete, pruned, failed
#        mid-training), RSS and CUDA allocated/reserved after each trial; it stops starting trials 25 s
#        before its cap and reports those that ran (STHPO_BENCH_TIME_LIMIT)
#     3. throughput (THROUGHPUT_CAP=150): trials per hour with 1, 2 and 4 workers on GPU 0 (MiniLM, 1,000
#        STSb pairs, up to 8 trials each: THROUGHPUT_TRIALS), with nvidia-smi's busy fraction; each
#        configuration stops starting trials after its share of the cap less 25 s
# A step cut off by its cap prints nothing; the caps leave room for its imports and its results.
# Prepare here with `bash benchmarks/device_prep.sh` (wheels in .whl, the model in .model/minilm, the data
# in .data/stsb-en). Expects, in the repo root there: .model/minilm (or a copy in /tmp/minilm from an
# earlier call) and .data/stsb-en
# (train.csv, dev.csv); optuna, datasets and mlflow either on PYTHONPATH already (e.g. /tmp/site) or as
# wheels in .whl (../shared/tools/device-prep.sh wheels), installed here to /tmp/site.
# Results (JSON + Markdown per benchmark, and the log) go to $OUT when set, else benchmarks/results/.
#
#   bash benchmarks/gpu_check.sh setup      # first call (carry .whl): install the wheels to /tmp/site, check imports
#   bash benchmarks/gpu_check.sh part1      # second call (carry .model/minilm and .data/stsb-en), at once
#   bash benchmarks/gpu_check.sh part2      # third call, at once (the machine stays warm 30 s)
#   bash benchmarks/gpu_check.sh overhead   # or one step: memory, throughput, trials, gpu_memory; `all`: all five
#   OVERHEAD_CAP=300 TRIALS_CAP=150 bash benchmarks/gpu_check.sh part1   # caps in seconds
# OVERHEAD_ARGS (default "--trials 3") and MEMORY_ARGS (default none) are passed to those benchmarks.
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
  step() { [ "$what" = all ] || [ "$what" = "$1" ] || { [ "$what" = part1 ] && [[ " trials gpu_memory overhead " == *" $1 "* ]]; } \
    || { [ "$what" = part2 ] && [[ " memory throughput " == *" $1 "* ]]; }; }
  if step trials; then
    timeout "${TRIALS_CAP:-135}" "$PY" benchmarks/gpu_trials.py --device-check || rc=1
  fi
  if step gpu_memory; then
    timeout "${GPU_MEMORY_CAP:-130}" "$PY" benchmarks/gpu_memory.py --device-check ${GPU_MEMORY_ARGS:-} || rc=1
  fi
  if step overhead; then
    timeout "${OVERHEAD_CAP:-180}" "$PY" benchmarks/overhead.py --device-check ${OVERHEAD_ARGS:---trials 3} || rc=1
  fi
  if step memory; then
    STHPO_BENCH_TIME_LIMIT=$(( ${MEMORY_CAP:-130} - 25 )) timeout "${MEMORY_CAP:-130}" "$PY" benchmarks/memory_drift.py \
      --device-check ${MEMORY_ARGS:-} || rc=1
  fi
  if step throughput; then
    STHPO_BENCH_N_TRIALS=${THROUGHPUT_TRIALS:-8} STHPO_BENCH_TIME_LIMIT=$(( ${THROUGHPUT_CAP:-150} - 25 )) \
      timeout "${THROUGHPUT_CAP:-150}" "$PY" benchmarks/throughput.py --device-check || rc=1
  fi
  echo "gpu_check: exit $rc"
} 2>&1 | tee "$LOG"
