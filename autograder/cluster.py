"""Grade on a Dask distributed cluster: one task per learner, results back to the grading process.

``python -m autograder grade SUBMITTED --out OUT --dask ADDRESS`` sends the
notebooks to grade to the scheduler at ADDRESS (``tcp://host:8786``), one task
per learner; ``--dask local`` starts a cluster of ``--jobs`` worker processes
on this machine.  A task grades one learner's notebooks
(``grading.grade_learner``) on a worker, where the learner's code runs in the
same sandbox as in a local run (bubblewrap on that worker), and returns the
results; only the process that ran ``grade`` stores results, writes the CSV
files and the gradebook, so resume and regrade-on-change behave as in a local
run.  When a worker dies during a task, the scheduler runs the task again on
another worker (up to ``distributed.scheduler.allowed-failures`` times); a
result is stored only when it arrives, once.

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
    except ImportError as exc:
        raise ClusterError(f"--dask needs the 'distributed' package (pinned in requirements.txt), which "
                           f"did not import ({exc}): pip install -r requirements.txt") from None
    try:
        if address == "local":
            # one single-threaded worker process per job: grading is CPU-bound and each task
            # already runs the learner's code in a child process of its own
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            return Client(cluster)
        _refused_at_once(address)
        return Client(address, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}. Start one with "
                           "'dask scheduler' and workers with 'dask worker ADDRESS', or use --dask local") \
            from None


def _refused_at_once(address):
    """Raise OSError when a tcp:// scheduler address refuses the connection or names no host, so that
    a mistyped port is reported at once instead of after the client's 30 s of retries; a scheduler
    that is slow to answer (still starting, behind a firewall) is left to the client's timeout."""
    import socket
    from urllib.parse import urlsplit
    if not address.startswith("tcp://"):
        return
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise OSError(f"not a scheduler address ({exc})") from None
    if not host or port is None:
        raise OSError("the address needs a host and a port, as in tcp://10.0.0.5:8786")
    try:
        socket.create_connection((host, port), timeout=5).close()
    except (ConnectionRefusedError, socket.gaierror) as exc:
        raise OSError(f"{exc.strerror or exc}") from None
    except OSError:      # no answer yet: the client waits
        pass


def close(client):
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def grade_task(grade, tasks):
    """Runs on a worker: grade(tasks)'s result dicts (one learner's notebooks; ``grade`` is
    grading.grade_learner), with the worker's name in each."""
    results = grade(tasks)
    try:
        from distributed import get_worker
        name = str(get_worker().name)
    except (ImportError, ValueError):   # called outside a worker
        name = os.uname().nodename
    for result in results:
        result["worker"] = name
    return results


def grade_on_cluster(client, grade, items, on_result):
    """Submit grade(tasks) for every (keys, tasks) of items (one learner's notebooks) as a task; call
    on_result(key, result or exception) for each notebook as its task ends.

    ``grade`` is grading.grade_learner (passed in, so that this module does not import the grader
    that imports it; a worker imports it by name), ``tasks`` are grading.grade_task's argument tuples.  A task whose worker died is rerun by
    the scheduler elsewhere; one that could not finish at all (every try lost its worker) is
    passed to on_result as the exception, for each of its notebooks.
    """
    from distributed import as_completed
    futures = {}
    for keys, tasks in items:
        fut = client.submit(grade_task, grade, tasks, pure=False)
        futures[fut] = keys
    for fut in as_completed(futures):
        keys = futures[fut]
        try:
            results = fut.result()
        except Exception as exc:  # KilledWorker, a worker's environment failing: the grader's fault
            results = [exc] * len(keys)
        finally:
            fut.release()
        for key, result in zip(keys, results):
            on_result(key, result)
