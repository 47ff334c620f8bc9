"""How trials run: the session (a study validated by ``_validation``), the study loop of one process, the
trial itself and its callbacks, storages, recovery, progress, the kept best model, and (see ``_workers``)
worker processes."""
