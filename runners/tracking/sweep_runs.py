"""A multirun in MLflow: one parent run per experiment the sweep touches, its jobs nested under it.

MLflow nests a run under another through the tag `mlflow.parentRunId`, so jobs in any launcher's processes
(basic, joblib, submitit) join their sweep's parent by tagging themselves. The first job of an experiment creates
the parent (a file lock in the sweep folder makes it one per experiment); it is named after the sweep and tagged
with the sweep's overrides, which CreateTrackingStore wrote to <sweep_dir>/sweep.json when the multirun started.
When the multirun ends, the Table 3 report is logged as the parents' artifacts and they end FINISHED (FAILED if a
job failed). A skipped job (its config FINISHED in an earlier sweep) stays under that sweep's parent; a resumed
run moves to the new one.

A sweep that is killed never reaches its end, so its parents would stay RUNNING in the UI forever. The launching
process therefore holds a lock in the sweep folder for the multirun's lifetime (`hold_sweep`; the kernel frees it
however the process ends), and each new multirun closes, as KILLED, every RUNNING parent whose folder's lock is
free (`close_orphaned_parents`). Parents whose folder is not on this machine are left alone.
"""
from __future__ import annotations

import json
from pathlib import Path

PARENT_TAG = "sweep_parent"   # "true" on a sweep's parent run; reports leave those rows out
SWEEP_FILE = "sweep.json"
STATUS_FILE = "status.json"   # what a job did, written by runners/run.py in its folder
HYDRA_RECORD = ("hydra.yaml", ".hydra")   # Hydra writes <job folder>/.hydra/hydra.yaml before the job runs
ALIVE_LOCK = ".alive.lock"    # held by the multirun's launching process while the sweep runs
_held: dict[str, object] = {}  # sweep folder -> its held lock (kept referenced: a collected lock is released)


def hold_sweep(sweep_dir: Path) -> None:
    """Mark the sweep as alive until this process ends or `release_sweep` is called."""
    from filelock import FileLock, Timeout

    folder = Path(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ALIVE_LOCK), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:   # another live multirun shares this folder (a fixed hydra.sweep.dir): it marks it alive
        return
    _held[str(folder)] = lock


def release_sweep(sweep_dir: Path) -> None:
    lock = _held.pop(str(Path(sweep_dir)), None)
    if lock is not None:
        lock.release()


def _sweep_alive(sweep_dir: str) -> bool | None:
    """True while the sweep's launching process lives; None when its folder is not on this machine."""
    from filelock import FileLock, Timeout

    folder = Path(sweep_dir)
    if not folder.is_dir():
        return None
    if str(folder) in _held:
        return True
    lock = FileLock(str(folder / ALIVE_LOCK), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def close_orphaned_parents(client) -> list[str]:
    """End, as KILLED, the RUNNING parent runs of sweeps whose launching process is gone; returns their ids."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(experiments, filter_string=f"tags.{PARENT_TAG} = 'true' and "
                                                            "attributes.status = 'RUNNING'")
    closed = []
    for run in running:
        if _sweep_alive(run.data.tags.get("sweep_dir", "")) is False:
            client.set_tag(run.info.run_id, "error", "orphaned: the sweep's process ended before the sweep did")
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


def job_folders(sweep_dir: Path) -> list[Path]:
    """Every job folder of the sweep, however deep it nests (a `/` in a name interpolated into hydra.sweep.subdir
    nests it): the folders holding Hydra's record of a job or a job's status file, in path order."""
    root = Path(sweep_dir)
    name, sub = HYDRA_RECORD
    found = {p.parent.parent for p in root.rglob(name) if p.parent.name == sub}
    found |= {p.parent for p in root.rglob(STATUS_FILE)}
    return sorted(found)


def job_statuses(sweep_dir: Path) -> list[dict]:
    """What each job of the sweep reported, in path order. A job folder without a status file (the job was killed
    or crashed before recording its outcome) counts as FAILED, named by its folder."""
    root = Path(sweep_dir)
    statuses = []
    for folder in job_folders(root):
        status = folder / STATUS_FILE
        if status.is_file():
            statuses.append(json.loads(status.read_text()))
        else:
            statuses.append({"status": "FAILED", "run_name": str(folder.relative_to(root)),
                             "error": f"no {STATUS_FILE}: the job ended before recording its outcome"})
    return statuses


def write_sweep_file(sweep_dir: Path, overrides: list[str], command: str) -> None:
    """What the sweep was asked for, read by the job that creates a parent run."""
    from datasets.atomic import atomic_write_text

    atomic_write_text(Path(sweep_dir) / SWEEP_FILE, json.dumps({"overrides": overrides, "command": command}))


def parent_run_id(client, experiment_id: str, sweep_dir: str) -> str:
    """The id of the sweep's parent run in `experiment_id`, created by the first job that asks."""
    from filelock import FileLock

    folder = Path(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f".parent_{experiment_id}.lock")):
        found = _parents(client, [experiment_id], sweep_dir)
        if found:
            return found[0].info.run_id
        meta = json.loads((folder / SWEEP_FILE).read_text()) if (folder / SWEEP_FILE).exists() else {}
        tags = {"sweep_dir": sweep_dir, PARENT_TAG: "true", "sweep_overrides": " ".join(meta.get("overrides", [])),
                "command": meta.get("command", "")}
        return client.create_run(experiment_id, run_name=f"sweep {folder.parent.name}/{folder.name}",
                                 tags=tags).info.run_id


def close_parents(client, sweep_dir: str, files: list[Path], failed: int) -> list[str]:
    """Log `files` (the sweep's report) to every parent run of the sweep and end them, FAILED when a job failed
    (`failed`, from the jobs' folders) or a run under the parent ended FAILED or KILLED; returns their ids."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = _parents(client, experiments, sweep_dir) if experiments else []
    for run in parents:
        children = client.search_runs([run.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        failed = max(failed, sum(1 for c in children if c.info.status in ("FAILED", "KILLED")))
        client.set_tag(run.info.run_id, "failed_jobs", str(failed))
        for f in files:
            client.log_artifact(run.info.run_id, str(f), artifact_path="report")
        client.set_terminated(run.info.run_id, status="FAILED" if failed else "FINISHED")
    return [r.info.run_id for r in parents]


def _parents(client, experiment_ids: list[str], sweep_dir: str) -> list:
    return client.search_runs(experiment_ids, filter_string=f"tags.sweep_dir = '{sweep_dir}' and "
                                                             f"tags.{PARENT_TAG} = 'true'")
