"""Subcommands of the ``asr-kd`` command line, one module each."""
