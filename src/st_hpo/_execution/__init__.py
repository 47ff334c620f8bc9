"""How trials run: validation, the resources a worker prepares once, the session, the study loop of one
process, the trial itself and its callbacks, storages, recovery, progress, the kept best model, and
(see ``_workers``) worker processes."""
