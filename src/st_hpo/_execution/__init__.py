"""Where trials run: the study loop of one process, and (see ``_workers``) worker processes."""
