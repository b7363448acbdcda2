"""The demo's output directories: one demo at a time writes into an output (its lock),
and a run trained again starts in an emptied directory the demo made."""

import contextlib
import os
import shutil

from ..engine.output_lock import OutputDirLocked, hold_output_dir

# written into every run directory the demo makes; it, or a file only a demo run leaves (run.json,
# the teacher's CONFIG_FINGERPRINT: demos older than the marker wrote those), lets the demo clear it
RUN_MARKER = ".demo-run"
OWNED_BY = (RUN_MARKER, "run.json", "CONFIG_FINGERPRINT")


@contextlib.contextmanager
def output_lock(output: str):
    """Hold the output directory's lock (:func:`detkd.engine.hold_output_dir`, the lock
    ``train_net.py`` takes on its ``OUTPUT_DIR``) while the block runs: two demos writing into one
    output directory would clear and overwrite each other's runs. A second holder fails at once
    naming the first (pid, host, start time). The kernel drops the lock when the holder's process
    dies; the demo's worker processes never hold it."""
    try:
        with hold_output_dir(output, "demo", "Wait for it or choose another --output."):
            yield
    except OutputDirLocked as e:
        raise OutputDirLocked(f"demo: {e}") from None


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
