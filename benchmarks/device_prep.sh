#!/usr/bin/env bash
# Prepare, on this machine, everything `benchmarks/gpu_check.sh` needs on a lent GPU machine, so that the
# device time goes to measuring:
#   .whl/          wheels for the device's Python 3.12 that its image lacks (optuna, datasets, mlflow's
#                  client and SQL store, and the MLflow and rich dependencies device-prep.sh leaves out;
#                  benchmarks/_wheel_check.py checks that every requirement is there)
#   .model/minilm  all-MiniLM-L6-v2 (float16 on disk, loads as float32; ~45 MB)
#   .data/stsb-en  train.csv and dev.csv of the STS benchmark from ../shared
# and lists them in .git/info/exclude. A device call carries at most 64 MiB, so the wheels and the model
# travel in separate calls, one right after the other while the machine stays warm (30 s):
#   run(carry=[".whl"], command="bash benchmarks/gpu_check.sh setup", timeout_s=120)     # wheels to /tmp/site
#   run(carry=[".model/minilm", ".data/stsb-en"], command="export STHPO_BENCH_RESULTS=$OUT; bash benchmarks/gpu_check.sh part1", timeout_s=470)
#   run(carry=[".model/minilm", ".data/stsb-en"], command="export STHPO_BENCH_RESULTS=$OUT; bash benchmarks/gpu_check.sh part2", timeout_s=300)
# (about 14 minutes of device time with the machine's start: a 15-minute lease leaves no room for a rerun)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
bash "$SHARED/tools/device-prep.sh" wheels .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl lazy_importer cryptography cffi pycparser annotated-doc cloudpickle zipp rich markdown-it-py mdurl \
  pygments plotly 2>&1 | grep -v 'WARNING: Location' || true
[ -f .model/minilm/modules.json ] || PATH="$(dirname "$PY"):$PATH" bash "$SHARED/tools/device-prep.sh" model .model/minilm
mkdir -p .data/stsb-en
cp "$SHARED/data/stsb-en/train.csv" "$SHARED/data/stsb-en/dev.csv" .data/stsb-en/
"$PY" benchmarks/_wheel_check.py .whl || { echo "device_prep: add the missing wheels above" >&2; exit 1; }
mkdir -p .git/info
for p in .whl .model .data; do grep -qx "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
du -sh .whl .model/minilm .data/stsb-en
echo "device_prep: ready; carry .whl in the setup call, then .model/minilm and .data/stsb-en (each under 64 MiB)"
