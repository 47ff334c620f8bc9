"""The ``st-hpo`` command: thin commands over the library; the only place that configures logging."""

from st_hpo.cli._main import console_main, main

__all__ = ["console_main", "main"]
