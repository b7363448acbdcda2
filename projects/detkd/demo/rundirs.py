"""The demo's output directories: one demo at a time writes into an output (a lock file there),
and a run trained again starts in an emptied directory the demo made."""

import contextlib
import fcntl
import os
import shutil

# written into every run directory the demo makes; it, or a file only a demo run leaves (run.json,
# the teacher's CONFIG_FINGERPRINT: demos older than the marker wrote those), lets the demo clear it
RUN_MARKER = ".demo-run"
OWNED_BY = (RUN_MARKER, "run.json", "CONFIG_FINGERPRINT")
LOCK_FILE = ".demo.lock"  # in the output directory, held by the demo writing into it


@contextlib.contextmanager
def output_lock(output: str):
    """Hold an exclusive lock on ``<output>/.demo.lock`` (its content: the holder's PID) while the
    block runs: two demos writing into one output directory would clear and overwrite each other's
    runs. A second lock on it fails at once. The kernel drops the lock when its file is closed, on
    an exception or when the process dies; the descriptor is not inherited, so the demo's workers
    never hold it."""
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            why = (
                f"demo: another demo (pid {holder}) is writing into {output} (it holds {path}); "
                "wait for it or choose another --output"
            )
            raise RuntimeError(why) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def fresh_run_dir(path: str):
    """Make ``path`` an empty run directory marked as the demo's, before a run is trained in it:
    detectron2's writers append to the ``metrics.json`` and events files they find, so a stale run
    would mix its AP curve with the new one. A directory the demo made (see ``OWNED_BY``) is
    removed, and said so; a non-empty one it did not make is refused, not deleted."""
    if os.path.isdir(path) and os.listdir(path):
        if not any(os.path.exists(os.path.join(path, f)) for f in OWNED_BY):
            raise RuntimeError(
                f"demo: run directory {path} holds files the demo did not write "
                f"(none of {', '.join(OWNED_BY)}); move it away or choose another "
                "--output"
            )
        print(f"[demo] removing the stale run in {path}", flush=True)
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    open(os.path.join(path, RUN_MARKER), "w").close()
