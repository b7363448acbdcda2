"""One run per output directory: an exclusive lock on ``OUTPUT_DIR`` for as long as a run writes
there.

Two training processes writing into one directory interleave their checkpoints, ``last_checkpoint``
and ``metrics.json``, and both exit 0: every curve and every resume from that directory is then
silently wrong. :func:`hold_output_dir` takes the lock before anything is built; a second holder
fails at once with :class:`OutputDirLocked`, naming the directory and the holder (PID, host, start
time, what it runs).

The lock is ``filelock``'s (a ``flock`` on ``<dir>/.detkd.lock``; filelock is already installed
with torch): the kernel drops it when the holder's process ends however it ends, so a killed run
leaves no lock behind. Who holds it is written beside it (``.detkd.lock.json``, removed on a
clean release); finding that file when the lock is free means its writer is gone without
releasing it (killed, machine rebooted), and the lock is taken over with a warning that names it.
"""

import contextlib
import datetime
import json
import logging
import os
import socket
import sys

from filelock import FileLock, Timeout

__all__ = ["LOCK_FILE", "HOLDER_FILE", "OutputDirLocked", "hold_output_dir", "holder_of"]

logger = logging.getLogger(__name__)

LOCK_FILE = ".detkd.lock"
HOLDER_FILE = LOCK_FILE + ".json"


class OutputDirLocked(RuntimeError):
    """Another process holds the output directory."""


def holder_of(directory: str) -> dict:
    """What ``<directory>/.detkd.lock.json`` says of the lock's holder (``{}`` when unreadable)."""
    try:
        with open(os.path.join(directory, HOLDER_FILE)) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that wrote no holder record"
    return (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
        f"{holder.get('started', '?')} ({holder.get('purpose', '?')})"
    )


@contextlib.contextmanager
def hold_output_dir(directory: str, purpose: str = "training", hint: str = ""):
    """Hold the exclusive lock on ``directory`` (made if missing) while the block runs.

    ``purpose`` says what the holder does (shown to whoever finds the directory held); ``hint``
    ends the error a second holder gets (what to do instead). Raises :class:`OutputDirLocked`
    at once when another process (or another holder in this one) has it."""
    os.makedirs(directory, exist_ok=True)
    lock = FileLock(os.path.join(directory, LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputDirLocked(
            f"{directory} is held by another run: {_describe(holder_of(directory))}; two runs "
            f"writing into one output directory mix their checkpoints and metrics. "
            f"{hint or 'Wait for it to finish or choose another output directory.'}"
        ) from None
    holder_path = os.path.join(directory, HOLDER_FILE)
    try:
        left = holder_of(directory)
        if left:
            logger.warning(
                "%s: taking over the lock left by %s, which is gone without releasing it",
                directory,
                _describe(left),
            )
        record = dict(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.datetime.now().isoformat(timespec="seconds"),
            purpose=purpose,
            command=" ".join(sys.argv),
        )
        tmp = f"{holder_path}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, holder_path)
        yield record
    finally:
        with contextlib.suppress(FileNotFoundError):
            if holder_of(directory).get("pid") == os.getpid():
                os.remove(holder_path)
        lock.release()
