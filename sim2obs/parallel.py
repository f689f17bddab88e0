"""Run independent shard jobs on a Dask cluster, with resume and a progress bar.

The cluster comes from the ``cluster`` config group:

- ``kind: local``: ``n_workers`` single-threaded processes on this machine (default: one per core).
  On Linux they are forked from this process (a ``ProcessPoolExecutor``): they start in milliseconds
  with everything this process imported, where a Dask ``LocalCluster`` took ~2 s of a 6 s job to
  start its scheduler, nannies and workers. Elsewhere (no safe ``fork``) a ``LocalCluster`` is used;
- ``kind: address``: an existing scheduler at ``address`` (e.g. ``tcp://head-node:8786``);
- ``kind: jobqueue``: a dask-jobqueue cluster (SLURM, PBS, ...) built from ``jobqueue`` with
  Hydra's ``_target_`` and scaled to ``jobs`` jobs;
- ``kind: synchronous``: no cluster, shards run one after another in this process.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Mapping, Sequence

from sim2obs.errors import ConfigError

CLUSTER_KINDS = ("local", "address", "jobqueue", "synchronous")
# Worker processes each get one thread: GalSim/FFTW/BLAS threads fighting over cores made two
# processes four times slower than one.
_WORKER_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}
# distributed's nanny sets MALLOC_TRIM_THRESHOLD_, which turns off glibc's adaptive mmap threshold:
# every temporary over 128 KiB became a fresh mmap and page faults (most of the TNG mocks' system
# time). A fixed 32 MiB mmap threshold keeps such temporaries on the heap.
_WORKER_ENV["MALLOC_MMAP_THRESHOLD_"] = str(32 * 1024 * 1024)


def validate_cluster_config(cfg: Mapping[str, Any]) -> None:
    kind = cfg.get("kind", "local")
    if kind not in CLUSTER_KINDS:
        raise ConfigError("cluster.kind", "unknown cluster kind", value=kind, allowed=list(CLUSTER_KINDS))
    n = cfg.get("n_workers")
    if kind == "local" and n is not None and int(n) < 1:
        raise ConfigError("cluster.n_workers", "must be at least 1 (or null for one per core)", value=n)
    if kind == "address" and not cfg.get("address"):
        raise ConfigError("cluster.address", "a scheduler address is required for kind=address")
    if kind == "jobqueue" and not (cfg.get("jobqueue") or {}).get("_target_"):
        raise ConfigError("cluster.jobqueue._target_", "name a dask-jobqueue class, e.g. "
                          "dask_jobqueue.SLURMCluster")


# Worker settings of a local cluster: no statistical profiler (it samples every worker's stack every
# 10 ms for a dashboard the local cluster does not serve; 10-20 % of a GalSim worker's CPU time here).
_LOCAL_WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


@contextlib.contextmanager
def _local_workers(preload: Sequence[str]) -> Iterator[None]:
    """Inside the block, a local cluster's worker processes get :data:`_LOCAL_WORKER_CONFIG` and are
    forked from one server process that imported ``distributed`` and the ``preload`` modules once
    (instead of every worker starting a fresh interpreter and importing them again: ~1.5 s of CPU
    per worker for the GalSim generator). Where fork is not available (Windows), workers are
    spawned as before."""
    import dask

    if "forkserver" not in multiprocessing.get_all_start_methods():
        with dask.config.set(_LOCAL_WORKER_CONFIG):
            yield
        return
    from distributed.utils import get_mp_context

    with dask.config.set({**_LOCAL_WORKER_CONFIG, "distributed.worker.multiprocessing-method": "forkserver"}):
        # distributed sets its own preload list once; ours adds the job's modules to it. A server
        # already running (a second set in this process) keeps its modules: only slower.
        get_mp_context().set_forkserver_preload(["distributed", "numpy", *preload])
        yield


def _forks_local_workers() -> bool:
    """Whether local workers are forked from this process (Linux; macOS's system libraries are not
    fork-safe and Windows has no fork)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


WarmUp = tuple[Callable[..., Any], tuple]  # (function, its arguments), run once in each local worker


def _start_worker(preload: Sequence[str], warm_up: WarmUp | None) -> None:
    """Initializer of a forked local worker: one thread in every BLAS / OpenMP pool it inherited
    (the variables of :data:`_WORKER_ENV` cover libraries it loads later), then the ``preload``
    imports and the job's ``warm_up``."""
    os.environ.update(_WORKER_ENV)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    for name in preload:
        importlib.import_module(name)
    if warm_up is not None:
        warm_up[0](*warm_up[1])


def local_workers(cfg: Mapping[str, Any], n_jobs: int | None) -> int:
    """How many local worker processes ``cfg`` gets for ``n_jobs`` jobs (0: run in this process)."""
    if cfg.get("kind", "local") == "synchronous" or (n_jobs is not None and n_jobs <= 1):
        return 0
    n = int(cfg.get("n_workers") or os.cpu_count() or 1)
    return min(n, n_jobs) if n_jobs else n


@contextlib.contextmanager
def forked_pool(n_workers: int, preload: Sequence[str] = (), warm_up: WarmUp | None = None
                ) -> Iterator[ProcessPoolExecutor]:
    """``n_workers`` single-threaded processes forked from this one now (they import ``preload``
    and run ``warm_up`` while the caller goes on); all are stopped on exit."""
    pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(tuple(preload), warm_up))
    pool.submit(os.getpid)  # the first job forks every worker (a fork pool starts them all at once)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def dask_client(cfg: Mapping[str, Any], n_jobs: int | None = None, preload: Sequence[str] = (),
                warm_up: WarmUp | None = None) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for the configured cluster (None for synchronous; a
    :class:`~concurrent.futures.ProcessPoolExecutor` of forked workers for ``kind: local`` on Linux).

    With ``n_jobs`` known, a local cluster starts no more workers than there are jobs, and none
    at all for a single job (starting and stopping worker processes costs seconds: one job
    runs faster in this process). ``preload``: modules a local cluster's workers import before
    they start (the job's module); ``warm_up``: what forked local workers run before their first job."""
    validate_cluster_config(cfg)
    kind = cfg.get("kind", "local")
    if kind == "synchronous" or (kind == "local" and local_workers(cfg, n_jobs) == 0):
        yield None
        return
    if kind == "local" and _forks_local_workers():
        with forked_pool(local_workers(cfg, n_jobs), preload, warm_up) as pool:
            yield pool
        return
    from dask.distributed import Client, LocalCluster

    if kind == "local":
        os.environ.update(_WORKER_ENV)  # inherited by the worker processes (and their fork server)
        n = local_workers(cfg, n_jobs)
        with _local_workers(preload), \
                LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                             silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
    elif kind == "address":
        with Client(cfg["address"]) as client:
            yield client
    else:
        from hydra.utils import instantiate

        try:
            cluster = instantiate(cfg["jobqueue"])
        except Exception as exc:  # missing dask-jobqueue, bad queue settings, ...
            raise ConfigError("cluster.jobqueue", f"could not build the cluster ({exc}); "
                              "is dask-jobqueue installed (pip install sim2obs[jobqueue])?") from exc
        with cluster:
            cluster.scale(jobs=int(cfg.get("jobs", 1)))
            with Client(cluster) as client:
                yield client


class ClusterInBackground:
    """The cluster of ``cfg`` for ``n_jobs`` jobs, started in a thread as soon as this is made, so
    that its workers start (and import the ``preload`` modules) while the caller prepares the
    jobs. Use it as a context manager (it stops the cluster on exit) and pass it to
    :func:`run_shards` in place of the cluster config."""

    def __init__(self, cfg: Mapping[str, Any], n_jobs: int, preload: Sequence[str] = (),
                 warm_up: WarmUp | None = None):
        validate_cluster_config(cfg)  # a bad config fails here, before any work
        self._stack = contextlib.ExitStack()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sim2obs-cluster")
        if cfg.get("kind", "local") == "local" and _forks_local_workers():
            # nothing to start in the background: the pool forks its workers now, in milliseconds,
            # and they warm up while this process prepares the jobs
            self._client: Future = Future()
            self._client.set_result(self._stack.enter_context(dask_client(cfg, n_jobs, preload, warm_up)))
        else:
            self._client = self._thread.submit(self._stack.enter_context, dask_client(cfg, n_jobs, preload))

    def client(self) -> Any:
        """The ``distributed.Client`` or local process pool (None: run in this process), once it is up."""
        return self._client.result()

    def __enter__(self) -> "ClusterInBackground":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._client.result()  # let a start in progress finish before stopping the cluster
        except Exception:
            if exc_type is None:
                raise
        finally:
            try:  # stopped in the thread that started it (the client's context variable lives there)
                self._thread.submit(self._stack.close).result()
            finally:
                self._thread.shutdown()


@contextlib.contextmanager
def _client_for(cluster: Any, n_jobs: int, job: Callable[..., Any]) -> Iterator[Any]:
    if isinstance(cluster, ClusterInBackground):
        yield cluster.client()
    else:
        with dask_client(cluster, n_jobs=n_jobs, preload=[job.__module__]) as client:
            yield client


def run_shards(job: Callable[..., Any], shard_args: Sequence[tuple], cluster: Mapping[str, Any] | ClusterInBackground,
               desc: str = "shards", progress: bool = True) -> list[Any]:
    """Call ``job(*args)`` for every tuple in ``shard_args``; return results in order. ``cluster``:
    a cluster config, or a :class:`ClusterInBackground` already starting.

    Jobs must be independent and write their own output atomically, so that a killed run,
    started again, only needs the shards that are missing.
    """
    from tqdm.auto import tqdm

    results: list[Any] = [None] * len(shard_args)

    def bar():  # made after the jobs are submitted: its monitor thread must not exist when workers fork
        return tqdm(total=len(shard_args), desc=desc, unit="shard", disable=not progress or not shard_args)

    with _client_for(cluster, len(shard_args), job) as client:
        if client is None:
            with bar() as b:
                for i, args in enumerate(shard_args):
                    results[i] = job(*args)
                    b.update()
            return results
        if isinstance(client, ProcessPoolExecutor):
            from concurrent.futures import as_completed

            futures = {client.submit(job, *args): i for i, args in enumerate(shard_args)}
        else:
            from dask.distributed import as_completed

            futures = {client.submit(job, *args, pure=False): i for i, args in enumerate(shard_args)}
        with bar() as b:
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()  # re-raises a worker's exception here
                b.update()
    return results
