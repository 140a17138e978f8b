"""Put on PYTHONPATH by test_distributed.py: every Python process started with it (the launcher, each launched process)
records each file it opens for writing, creates, renames or deletes under $LLM2LLM_TEST_WATCHED, one line
`<RANK or -> <event> <path>` in $LLM2LLM_TEST_WRITES, so a test can tell which process wrote what. Python's audit hooks
see every write made through Python (open, os, shutil); writes made inside compiled libraries (safetensors, sqlite) are
not seen, which is why the test also checks what those write through other means.

With $LLM2LLM_TEST_EXITS set, each launched process also writes one line `<RANK> <open|closed>` there as it exits:
whether its torch.distributed group was still open (a gloo group left open can abort the exit, see Team.leave)."""

from __future__ import annotations

import atexit
import os
import sys

_WATCHED = os.environ.get("LLM2LLM_TEST_WATCHED")
_LOG = os.environ.get("LLM2LLM_TEST_WRITES")
_EXITS = os.environ.get("LLM2LLM_TEST_EXITS")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_busy = False


def _writes(event: str, args: tuple) -> bool:
    if event == "open":
        path, mode, flags = args
        return (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(mode is None and flags & _WRITE_FLAGS)
    return event in {"os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"}


def _hook(event: str, args: tuple) -> None:
    global _busy
    if _busy or not args or not _writes(event, args):
        return
    path = args[0]
    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(path))
    if not path.startswith(_WATCHED) or path == _LOG:
        return
    _busy = True
    try:
        with open(_LOG, "a", encoding="utf-8") as log:
            log.write(f"{os.environ.get('RANK', '-')} {event} {path}\n")
    finally:
        _busy = False


if _WATCHED and _LOG:
    sys.addaudithook(_hook)


def _exit() -> None:
    global _busy
    _busy = True  # this file is not one of the run's writes
    dist = sys.modules.get("torch.distributed")
    group = "open" if dist is not None and dist.is_available() and dist.is_initialized() else "closed"
    with open(_EXITS, "a", encoding="utf-8") as exits:
        exits.write(f"{os.environ['RANK']} {group}\n")


if _EXITS and "RANK" in os.environ:
    atexit.register(_exit)  # registered first, so run last: after every other exit handler
