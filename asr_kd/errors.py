"""Errors caused by what a user gave: the CLI prints each as one line, with no traceback.

Every module raises its own kind (``ConfigError``, ``ManifestError``, ``AudioError``, ...),
all subclasses of :class:`UserError`, with a message that names the file, row or key and
the fix. This module imports nothing, so any layer may use it.

Example
-------
>>> try:
...     raise UserError("data/train.csv: no such file; give the path of a manifest")
... except UserError as err:
...     print(err)
data/train.csv: no such file; give the path of a manifest
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """An error caused by the user's input: printed as one message, no traceback."""


#: What to do about the operating-system errors a user meets most.
_OS_FIXES = {
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file, not a folder",
    errno.EEXIST: "a file is in the way where a folder is needed; choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EACCES: "check the permissions, or choose a folder you can write to",
    errno.EPERM: "check the permissions, or choose a folder you can write to",
    errno.EROFS: "the file system is read-only; choose another output folder",
    errno.ENOSPC: "the disk is full; free some space (finished work is kept) and rerun the same command",
    errno.EDQUOT: "the disk quota is used up; free some space and rerun the same command",
}


def describe_os_error(err: OSError) -> str:
    """One line for an :class:`OSError`: the file, what went wrong and the fix.

    >>> describe_os_error(PermissionError(13, "Permission denied", "exp/demo/model.pt"))
    'exp/demo/model.pt: Permission denied; check the permissions, or choose a folder you can write to'
    >>> describe_os_error(OSError(28, "No space left on device"))
    'No space left on device; the disk is full; free some space (finished work is kept) and rerun the same command'
    """
    what = err.strerror or str(err)
    where = f"{err.filename}: " if err.filename else ""
    fix = _OS_FIXES.get(err.errno or -1)
    return f"{where}{what}" + (f"; {fix}" if fix else "")
