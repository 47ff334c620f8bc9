"""The stored schema: every key st-hpo writes into the Optuna storage (study and trial attributes) and into
MLflow (tags, and the attribute names that point from one to the other), declared once.

The storage and the MLflow store outlive the code that wrote them: a study is resumed, read by ``status``
and ``best``, and synced by later versions. This module is their contract, as Optuna's
``storages/_rdb/models.py`` is for its tables: code imports these names and never spells a key itself
(``tests/test_schema.py`` checks that no ``"st_hpo.`` literal lives anywhere else). A key's meaning never
changes silently: a new meaning is a new key, and readers of older studies keep understanding the old one.

Trial attributes that mirror to MLflow run tags are stored under ``st_hpo.tag.<name>`` and shown in MLflow
as ``st_hpo.<name>``.
"""

from __future__ import annotations

# --- Study attributes (the Optuna study's user attributes) ---

#: Study user attribute: the definition the study's trials ran under (see :func:`definition_record`).
DEFINITION_ATTR = "st_hpo.definition"
#: Study user attribute: the name of the kind the study trains (readers that load no study file part use it).
KIND_ATTR = "st_hpo.model_kind"
#: Study attribute: the budget, finished trials in total (a larger --n-trials extends it).
N_TRIALS_KEY = "st_hpo.n_trials"
#: Study attribute: the MLflow run id of the study's parent run.
PARENT_ATTR = "st_hpo.mlflow_parent_run_id"
#: On the study: the process of the run (``st-hpo run``, or its supervisor) that holds its MLflow parent run
#: open: {"host", "st_hpo.pid", and what identifies it beyond the pid}.
RUNNER_ATTR = "st_hpo.runner"
#: On the study: ``{"resume_interrupted": bool, "max_resumes": int}``, from the study file of the last run.
POLICY_ATTR = "st_hpo.resume_policy"
#: Study attribute: the objective of the model before fine-tuning (scored once per study).
BASE_MODEL_VALUE_KEY = "st_hpo.base_model_value"
#: Study attribute: the base model's score on the test set.
BASE_TEST_VALUE_ATTR = "st_hpo.base_model_test_value"
#: Study attribute: the metric the test set was scored with.
TEST_METRIC_ATTR = "st_hpo.test_metric"
#: Study attribute: the trial whose kept model was scored on the test set.
TEST_TRIAL_ATTR = "st_hpo.test_trial"
#: Study attribute: that trial's test score.
TEST_VALUE_ATTR = "st_hpo.test_value"
#: Study attribute: what the last ``st-hpo confirm`` found, and of which best trial.
CONFIRMED_ATTR = "st_hpo.confirmed"

# --- Trial attributes: what it ran ---

#: True on the baseline trial (the base arguments, trial 0 by default); also an MLflow tag.
BASELINE_ATTR = "st_hpo.baseline"
#: Set on a baseline of a define-by-run space (and, before st-hpo recorded the names below, on a baseline with
#: any base value outside the space): it runs the base arguments unsampled.
UNSAMPLED_ATTR = "st_hpo.unsampled"
#: Set on a baseline of a dict space: the names it leaves at their base value without an Optuna param (a base
#: value the space cannot produce, a ``model.`` name); the others it is queued with, as Optuna params.
BASELINE_UNSAMPLED_ATTR = "st_hpo.baseline_unsampled"
#: Trial attribute: the configuration it trained with (sampled values, Choice labels and values).
CONFIG_ATTR = "st_hpo.config"
#: Where a baseline run unsampled kept its base values before trials recorded ``st_hpo.config`` (read only).
EFFECTIVE_PARAMS_ATTR = "st_hpo.effective_params"
#: Training-argument values set on an enqueued trial over its sampled ones (a confirmation's training seed).
ARGS_OVERRIDE_ATTR = "st_hpo.args_override"
#: Study attribute of a confirmation study: its own queue was taken over (nothing of the main study's).
QUEUED_KEY = "st_hpo.queued"
#: Set on an enqueued trial whose trained model is scored on the study's test set (a confirmation's).
SCORE_TEST_ATTR = "st_hpo.score_test"
#: The prefix of a confirmation trial's own attributes (kept on a retry).
CONFIRM_PREFIX = "st_hpo.confirm."
#: "baseline" or the source trial's number
CONFIRM_KEY_ATTR = "st_hpo.confirm.config"
#: the training seed (the run's tags are strings: not matched on)
CONFIRM_SEED_ATTR = "st_hpo.confirm.seed"

# --- Trial attributes: how it ended ---

#: Trial attribute and MLflow tag: why a trial failed, was pruned or was cancelled, in one line.
ERROR_ATTR = "st_hpo.error"
#: On a FAIL trial that was stopped from outside (Ctrl-C, SIGTERM, its worker killed), not by its own error.
STOPPED_ATTR = "st_hpo.stopped"
#: On a trial that a stop (Ctrl-C, SIGTERM) ended: its run ends KILLED, also when ``sync`` closes it.
KILLED_ATTR = "st_hpo.run_killed"
#: Set on a trial asked when other workers had filled the budget: it never ran.
CANCELLED_ATTR = "st_hpo.cancelled"
#: True on a trial whose loss or objective became NaN or infinite; also the name of its constraint.
DIVERGED_KEY = "st_hpo.diverged"
#: True on a trial that ran out of (GPU) memory: a user attribute, the name of the infeasible constraint
#: the sampler reads, and the MLflow tag of its run.
OUT_OF_MEMORY_ATTR = "st_hpo.out_of_memory"
#: The ``mini_batch_size`` a trial's GradCache (Cached) loss trained with; also its MLflow tag.
MINI_BATCH_ATTR = "st_hpo.mini_batch_size"
#: The final evaluation's metrics that matter to the kind besides the objective (sparsity): status, reports.
SIDE_METRICS_ATTR = "st_hpo.side_metrics"
#: Trial attribute: where the trial saved its model (absolute path on the host that ran it).
MODEL_DIR_ATTR = "st_hpo.model_dir"
#: Trial attribute: seconds of the whole trial, from its start in the worker to its end.
TRIAL_SECONDS_KEY = "st_hpo.trial_seconds"
#: Trial attribute: seconds of training steps, evaluations left out (see ``_tracking/_times.py``).
TRAIN_SECONDS_KEY = "st_hpo.train_seconds"
#: Trial attribute: seconds in the objective's evaluations (see ``_tracking/_times.py``).
EVAL_SECONDS_KEY = "st_hpo.eval_seconds"
#: Trial attribute: seconds its resumable checkpoints took to save (part of train_seconds).
CHECKPOINT_SECONDS_KEY = "st_hpo.checkpoint_seconds"
#: Trial attribute: the peak GPU memory the trial reserved, in MB.
PEAK_GPU_RESERVED_MB_KEY = "st_hpo.peak_gpu_reserved_mb"
#: Trial attribute: the trainer steps of the trial (to turn per-mille progress back into steps).
MAX_STEPS_KEY = "st_hpo.max_steps"
#: Trial user attribute: where the trial really trained, read from the trainer after its first optimizer step:
#: ``{"model": "cuda:0", "optimizer_state": "cuda:0"}`` (devices joined by "," when they differ; "none" when
#: the optimizer keeps no state tensors, plain SGD say).
DEVICE_ATTR = "st_hpo.device"

# --- Trial attributes: where it runs, and whether it still does ---

#: Trial attribute: the pid of the worker that runs it.
PID_KEY = "st_hpo.pid"
#: What identifies a worker process beyond its pid (Linux only; see :func:`process_identity`).
PID_START_ATTR = "st_hpo.pid_start"
#: Trial attribute: the boot id of its worker's machine (a pid is only unique within one boot).
BOOT_ID_ATTR = "st_hpo.boot_id"
#: Trial attribute: the pid of the supervisor that started its worker.
SUPERVISOR_ATTR = "st_hpo.supervisor_pid"
#: The trial attribute that holds a running trial's last sign of life (seconds since the epoch).
LAST_SEEN_ATTR = "st_hpo.last_seen"
#: Where a trial's worker runs, as its engine names it: ``slurm:<job>_<task>``, ``ray:<actor id>``, ``local:<pid>``.
ENGINE_REF_ATTR = "st_hpo.tag.engine_ref"
#: Trial attribute: the MLflow run id of the trial's run.
RUN_ATTR = "st_hpo.mlflow_run_id"
#: Study attribute: ``{trial number (a str): run id}`` of the trial runs ``st-hpo sync`` made anew (a lost or
#: replaced MLflow store); a finished trial's own ``RUN_ATTR`` cannot change, and names the lost run.
SYNCED_RUNS_ATTR = "st_hpo.mlflow_synced_runs"
#: Trial attribute: MLflow writes held back during an outage, replayed by the next sync.
SPOOL_ATTR = "st_hpo.mlflow_spool"

# --- Trial attributes: resuming an interrupted trial ---

#: On a running trial: its last complete checkpoint, ``{"path": ".../trials/trial-N/resume-S", "step": S}``.
CHECKPOINT_ATTR = "st_hpo.checkpoint"
#: On a queued retry: what it resumes, ``{"trial", "step", "checkpoint", "resumes", "values"}``.
RESUME_ATTR = "st_hpo.resume"
#: On a retry, for readers (``st-hpo status --json``): ``{"trial": N, "step": S}``.
RESUMED_FROM_ATTR = "st_hpo.resumed_from"

# --- Trial attributes mirrored as the trial run's tags (``st_hpo.tag.<name>`` -> ``st_hpo.<name>``) ---

#: Trial attributes under this prefix are the trial run's tags, shown in MLflow as ``st_hpo.<name>``.
TAG_PREFIX = "st_hpo.tag."
#: Trial attribute mirrored as the run tag ``st_hpo.host``.
TAG_HOST_KEY = "st_hpo.tag.host"
#: Trial attribute mirrored as the run tag ``st_hpo.worker``.
TAG_WORKER_KEY = "st_hpo.tag.worker"
#: Trial attribute mirrored as the run tag ``st_hpo.gpu``.
TAG_GPU_KEY = "st_hpo.tag.gpu"
#: Trial attribute mirrored as the run tag ``st_hpo.resumed_from`` (``trial-N@step-S``).
TAG_RESUMED_FROM_KEY = "st_hpo.tag.resumed_from"
#: Confirmation trial: which of the new seeds it trains with.
TAG_SEED_INDEX_KEY = "st_hpo.tag.seed_index"
#: Confirmation trial: mirrored as the run tag ``st_hpo.source_trial``.
TAG_SOURCE_TRIAL_KEY = "st_hpo.tag.source_trial"
#: Confirmation trial: the training seed, mirrored as a run tag.
TAG_TRAINING_SEED_KEY = "st_hpo.tag.training_seed"

# --- MLflow run tags ---

#: The prefix of every key.
PREFIX = "st_hpo."
#: Run tag: what the run is: ``study`` (the parent run), ``trial``, ``confirm`` or ``retrain``.
KIND_KEY = "st_hpo.kind"
#: Run tag: the study's name.
STUDY_KEY = "st_hpo.study"
#: Trial-run tag: the Optuna trial number.
TRIAL_NUMBER_KEY = "st_hpo.trial_number"
#: Trial-run tag: the trial's state as st-hpo shows it (COMPLETE, PRUNED, FAIL, OUT_OF_MEMORY).
TRIAL_STATE_KEY = "st_hpo.trial_state"
#: Trial-run tag: the host the trial ran on.
HOST_KEY = "st_hpo.host"
#: Trial-run tag: the worker that ran the trial.
WORKER_KEY = "st_hpo.worker"
#: Trial-run tag: the GPU the trial trained on (``none`` on the CPU).
GPU_KEY = "st_hpo.gpu"
#: Trial-run tag: which rows the intermediate (pruning) evaluations used.
INTERMEDIATE_EVAL_KEY = "st_hpo.intermediate_eval"
#: Retrain-run tag: the trial whose configuration it trains again.
SOURCE_TRIAL_KEY = "st_hpo.source_trial"
#: Run tag: the run was re-created by ``st-hpo sync`` from the storage.
SYNCED_KEY = "st_hpo.synced"
#: Trial-run tag: the registered model name and version of its logged model.
REGISTERED_MODEL_KEY = "st_hpo.registered_model"
#: Parent-run tag: the base model (a name, a path or a factory).
MODEL_KEY = "st_hpo.model"
#: Parent-run tag: the objective metric.
OBJECTIVE_KEY = "st_hpo.objective"
#: Parent-run tag: whether the study file's git checkout had uncommitted changes.
GIT_DIRTY_KEY = "st_hpo.git_dirty"
#: Parent-run tags: the version of each package the study ran with.
VERSION_TAG_PREFIX = "st_hpo.version."
#: Parent-run tag: the best trial's number.
BEST_TRIAL_KEY = "st_hpo.best_trial"
#: Parent-run tag: where the best trial's model is kept.
BEST_MODEL_DIR_KEY = "st_hpo.best_model_dir"
#: Parent-run tag: the host that keeps the best trial's model.
BEST_MODEL_HOST_KEY = "st_hpo.best_model_host"

# --- Quality against cost: several objectives, measured costs, constraints, the Pareto set ---

#: Study user attribute: the objective names of a study, in order (a list; one name for a single objective).
#: The directions are Optuna's own (``study.directions``).
OBJECTIVES_ATTR = "st_hpo.objectives"
#: Study user attribute: the constraints of a study, ``{"cost.embedding_dim": "<= 256", ...}`` as written.
CONSTRAINTS_ATTR = "st_hpo.constraints"
#: Trial user attribute: the costs st-hpo measured for the trial, ``{"cost.encode_ms": 12.3, ...}``.
COSTS_ATTR = "st_hpo.costs"
#: Trial user attribute: the intermediate values of the first objective st-hpo keeps itself in a
#: multi-objective study (Optuna refuses ``Trial.report`` there): ``{"<step>": value, ...}``.
INTERMEDIATE_ATTR = "st_hpo.intermediate"
#: Trial user attribute: what the pruner wrote on the trial's single-objective view in a multi-objective study
#: (successive halving's rung values, ``{"completed_rung_0": value, ...}``), so that later views show them.
PRUNER_ATTRS_ATTR = "st_hpo.pruner_attrs"
#: Trial user attribute (and the name of its Optuna constraint): true when a complete trial broke a
#: constraint of the study; it is never best nor in the Pareto set.
INFEASIBLE_ATTR = "st_hpo.infeasible"
#: Trial-run tag: ``true`` on the runs of the trials in the study's Pareto set.
PARETO_KEY = "st_hpo.pareto"
