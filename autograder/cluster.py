"""Grade on a Dask distributed cluster: one task per notebook, results back to the grading process.

``python -m autograder grade SUBMITTED --out OUT --dask ADDRESS`` sends every
notebook to grade as a task to the scheduler at ADDRESS
(``tcp://host:8786``); ``--dask local`` starts a cluster of ``--jobs`` worker
processes on this machine.  A task runs ``grading.grade_notebook_file`` on a
worker, where the learner's code runs in the same sandbox as in a local run
(bubblewrap on that worker), and returns the result; only the process that
ran ``grade`` stores results, writes the CSV files and the gradebook, so
resume and regrade-on-change behave as in a local run.  When a worker dies
during a task, the scheduler runs the task again on another worker (up to
``distributed.scheduler.allowed-failures`` times); a result is stored only
when it arrives, once.

Workers read the submitted notebooks at the path the grading process sees
(a shared filesystem, as on a cluster's shared home or scratch space, or the
same volume mounted in every pod); the source notebooks travel with the
tasks.  The time budgets of the hidden checks are measured on each worker,
for the machine that runs the learner's code.
"""
import os


class ClusterError(Exception):
    """The Dask cluster cannot be reached or used; the message says what to do."""


def connect(address, jobs):
    """A distributed.Client for ADDRESS, or for a new local cluster of ``jobs`` workers when 'local'."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("--dask needs the 'distributed' package (pinned in requirements.txt): "
                           "pip install -r requirements.txt") from None
    try:
        if address == "local":
            # one single-threaded worker process per job: grading is CPU-bound and each task
            # already runs the learner's code in a child process of its own
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            return Client(cluster)
        return Client(address, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}. Start one with "
                           "'dask scheduler' and workers with 'dask worker ADDRESS', or use --dask local") \
            from None


def close(client):
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def grade_task(*args):
    """Runs on a worker: grading.grade_task's result dict, with the worker's name."""
    from .grading import grade_task as grade
    result = grade(*args)
    try:
        from distributed import get_worker
        result["worker"] = str(get_worker().name)
    except (ImportError, ValueError):   # called outside a worker
        result["worker"] = os.uname().nodename
    return result


def grade_on_cluster(client, items, on_result):
    """Submit every (key, args) of items as a task; call on_result(key, result or exception) as each ends.

    ``args`` are grade_task's arguments.  A task whose worker died is rerun by
    the scheduler elsewhere; one that could not finish at all (every try lost
    its worker) is passed to on_result as the exception.
    """
    from distributed import as_completed
    futures = {}
    for key, args in items:
        fut = client.submit(grade_task, *args, pure=False)
        futures[fut] = key
    for fut in as_completed(futures):
        key = futures[fut]
        try:
            on_result(key, fut.result())
        except Exception as exc:  # KilledWorker, a worker's environment failing: the grader's fault
            on_result(key, exc)
        finally:
            fut.release()
