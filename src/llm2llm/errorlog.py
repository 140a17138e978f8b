"""Where an internal error's traceback goes: the run directory's error.log, else a new file in a per-user directory.

Never a fixed name in the shared temp directory: another user could have put a symlink there, and writing through
it would overwrite whatever it points to. The run directory's error.log is replaced by rename (a symlink in its place
is replaced, not followed); elsewhere each log is a new file made with O_EXCL (tempfile.mkstemp) in a directory of
our own. When neither can be written, the caller shows the traceback instead: a failing log must not hide the error.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path

from llm2llm.models import cache_dir


def write_error_log(text: str, run_dir: Path | None = None) -> Path | None:
    """Write `text`; return the file it went to, or None when no place could take it."""
    if run_dir is not None and run_dir.is_dir():
        try:
            return _replace(run_dir / "error.log", text)
        except OSError:
            pass  # a read-only run directory: try the per-user one
    try:
        directory = _own_directory(cache_dir() / "logs")
        handle, name = tempfile.mkstemp(prefix=time.strftime("error-%Y%m%d-%H%M%S-"), suffix=".log", dir=directory)
        with os.fdopen(handle, "w", encoding="utf-8") as log:
            log.write(text)
        return Path(name)
    except OSError:
        return None


def _replace(path: Path, text: str) -> Path:
    handle, tmp = tempfile.mkstemp(prefix=".error-", suffix=".log", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as log:
            log.write(text)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _own_directory(path: Path) -> Path:
    """`path`, created private (0700) if missing; refused when it is a symlink or belongs to someone else."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a directory of this user")
    return path
