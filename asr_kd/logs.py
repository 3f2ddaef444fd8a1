"""Logging: every module logs through ``logging.getLogger(__name__)``; the entry points set it up.

Library code never prints progress: it logs at INFO (progress lines), DEBUG (details) or
WARNING (something the user should look at). The CLI (and a worker process) calls
:func:`setup` once: handlers on the ``asr_kd`` logger (progress to stdout, warnings to stderr;
a worker's all to its log file), plain messages, INFO by default,
``--quiet`` for warnings only, ``--verbose`` for debug lines.

Example
-------
>>> import io, logging
>>> out = io.StringIO()
>>> setup(logging.INFO, stream=out)
>>> logging.getLogger("asr_kd.asr.recipe").info("stage 1 prepare: running")
>>> logging.getLogger("asr_kd.asr.recipe").debug("not shown at INFO")
>>> out.getvalue()
'stage 1 prepare: running\\n'
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import IO

ROOT = "asr_kd"


class _Handler(logging.StreamHandler):
    """The handler :func:`setup` installs (so a second call replaces it instead of adding one)."""


def setup(level: int = logging.INFO, stream: IO[str] | None = None, fmt: str = "%(message)s") -> None:
    """Send the project's log lines at ``level`` and above to ``stream``; without one, progress
    (below WARNING) goes to stdout and warnings and errors to stderr."""
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        if isinstance(handler, _Handler):
            logger.removeHandler(handler)
    if stream is not None:
        routes: list[tuple[IO[str], Callable[[logging.LogRecord], bool] | None]] = [(stream, None)]
    else:
        routes = [
            (sys.stdout, lambda r: r.levelno < logging.WARNING),
            (sys.stderr, lambda r: r.levelno >= logging.WARNING),
        ]
    for out, keep in routes:
        handler = _Handler(out)
        handler.setFormatter(logging.Formatter(fmt))
        if keep is not None:
            handler.addFilter(keep)
        logger.addHandler(handler)
    logger.setLevel(level)


def level_of(quiet: bool = False, verbose: bool = False) -> int:
    """The level of the CLI's ``--quiet`` / ``--verbose`` flags.

    >>> level_of(), level_of(quiet=True) == logging.WARNING, level_of(verbose=True) == logging.DEBUG
    (20, True, True)
    """
    return logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
