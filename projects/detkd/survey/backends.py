"""Where a survey's trials train: on this machine (:class:`LocalBackend`, a process pool as the
demo always had) or on a Ray cluster (:class:`RayBackend`, each trial a Ray task with the CPUs
and GPUs it asks for). Both take a trial function (a picklable callable of one
:class:`~detkd.survey.trials.Trial` that returns its run) and yield ``(trial, run)`` as trials
finish; the runs are saved by the runner, into the survey's output folder, which on a cluster
must be one every node sees."""

import multiprocessing
import os
import threading
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch

# the initializations done in this process (a pool or Ray worker runs several trials)
_INITIALIZED = set()


def prepare_worker(
    threads: Optional[int],
    cwd: Optional[str] = None,
    initializer: Optional[Callable] = None,
    initargs: Sequence = (),
):
    """Set up a process that trains trials: ``threads`` torch threads (None: torch's default),
    the survey's working directory ``cwd`` (relative paths in configs resolve as on the machine
    that planned them), then ``initializer(*initargs)`` once per process (registering the
    datasets a trial's config names)."""
    if threads:
        torch.set_num_threads(threads)
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    if initializer is not None:
        token = (initializer.__module__, initializer.__qualname__, repr(tuple(initargs)))
        if token not in _INITIALIZED:
            initializer(*initargs)
            _INITIALIZED.add(token)


def exit_with_parent() -> None:
    """In a worker process: a daemon thread that ends this process as soon as the process that
    spawned it is gone, so that a killed survey or demo leaves no worker training (and writing into
    its run folders) behind it."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _pool_worker(*args):
    exit_with_parent()
    prepare_worker(*args)


class LocalBackend:
    """``jobs`` trials at once on this machine: ``jobs=1`` one after another in this process,
    else each in a spawned worker process (a fork of a process whose OpenMP pool runs can hang)
    that ends when this process does (:func:`exit_with_parent`).
    ``threads``: torch threads per trial (None: torch's default with ``jobs=1``, else ``cpu_count
    // jobs``). ``initializer(*initargs)`` runs once in each worker process (in this process
    too, with ``jobs=1``)."""

    name = "local"

    def __init__(
        self,
        jobs: int = 1,
        threads: Optional[int] = None,
        initializer: Optional[Callable] = None,
        initargs: Sequence = (),
    ):
        if jobs < 1:
            raise ValueError(f"LocalBackend: jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.threads = threads or (None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs))
        self.initializer, self.initargs = initializer, tuple(initargs)

    def describe(self) -> str:
        threads = self.threads or torch.get_num_threads()
        return f"local, {self.jobs} trial(s) at a time with {threads} thread(s) each"

    def run(self, fn: Callable, trials: List) -> Iterator[Tuple[object, dict]]:
        if self.jobs == 1:
            before = torch.get_num_threads()
            try:
                prepare_worker(self.threads, None, self.initializer, self.initargs)
                for trial in trials:
                    print(f"[survey] training {trial.name} seed {trial.seed}", flush=True)
                    yield trial, fn(trial)
            finally:
                torch.set_num_threads(before)
            return
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(
            self.jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_pool_worker,
            initargs=(self.threads, os.getcwd(), self.initializer, self.initargs),
        ) as pool:
            futures = {pool.submit(fn, trial): trial for trial in trials}
            for future in as_completed(futures):
                yield futures[future], future.result()


def _ray_trial(fn, trial, threads, cwd, initializer, initargs):
    """The body of one Ray task: set up the worker, train the trial."""
    prepare_worker(threads, cwd, initializer, initargs)
    return fn(trial)


class RayBackend:
    """Each trial a Ray task asking for ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs, on
    the cluster at ``address`` (``"auto"``: the one this machine belongs to; ``"HOST:PORT"``;
    ``"local"``: a new instance on this machine, ``init_kwargs`` passed to ``ray.init``).
    Each task trains with ``cpus_per_trial`` torch threads in the survey's working directory,
    after ``initializer(*initargs)`` (once per Ray worker process). A Ray instance this backend
    started is shut down when its trials are done."""

    name = "ray"

    def __init__(
        self,
        address: str = "auto",
        cpus_per_trial: int = 1,
        gpus_per_trial: float = 0,
        initializer: Optional[Callable] = None,
        initargs: Sequence = (),
        init_kwargs: Optional[dict] = None,
    ):
        if cpus_per_trial < 1:
            raise ValueError(f"RayBackend: cpus_per_trial must be >= 1, got {cpus_per_trial}")
        self.address = address
        self.cpus, self.gpus = cpus_per_trial, gpus_per_trial
        self.initializer, self.initargs = initializer, tuple(initargs)
        self.init_kwargs = dict(init_kwargs or {})

    def describe(self) -> str:
        return (
            f"ray at {self.address}, {self.cpus} CPU(s) and {self.gpus:g} GPU(s) per trial "
            "(one Ray task each)"
        )

    def run(self, fn: Callable, trials: List) -> Iterator[Tuple[object, dict]]:
        import ray

        started = not ray.is_initialized()
        if started:
            kwargs = dict(self.init_kwargs)
            if self.address == "local":
                kwargs.setdefault("include_dashboard", False)
                ray.init(**kwargs)
            else:
                ray.init(address=self.address, **kwargs)
        try:
            task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus)(_ray_trial)
            cwd = os.getcwd()
            pending = {
                task.remote(fn, trial, self.cpus, cwd, self.initializer, self.initargs): trial
                for trial in trials
            }
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                trial = pending.pop(done[0])
                yield trial, ray.get(done[0])
        finally:
            if started:
                ray.shutdown()
