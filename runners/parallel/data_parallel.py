"""Data-parallel training processes of one run (trainer.processes=N): N workers, one global batch per step.

The calling process is rank 0: it trains its share, evaluates, selects, logs and checkpoints, as with one process.
It starts N-1 helper processes (`python -m runners.parallel.data_parallel`) that train their shares only. Each step every
worker takes an interleaved shard of the same global batch (runners/step/gradient_sync.shard), computes the loss of
its rows as a part of the global batch's loss (`Batch.mean_rows`: the means divide by the global row count, so
the parts sum to the global loss), and the gradients are summed over workers before clipping and the optimiser
step (runners/step/gradient_sync.py: the control channel and the gradient backends). Every worker sums them in the
same order, so parameters stay identical on every rank and a step equals the single-process step on the whole
batch up to float summation order.
A batch at most `trainer.replicate_width` positions wide is instead computed whole by every worker, with no sum
(runners/step/gradient_sync.replicate_limit: on one host, for a model without dropout); the workers compare their
copies of the model at every evaluation point and at the end (GradientSync.check_replicas).

This module manages the processes: the job handed to the helpers, their start (sockets, shared files), their
end, and a helper's own main. Helpers die with rank 0 (PR_SET_PDEATHSIG, and a parent check at start-up), so
kill -9 of the run leaves no worker behind. Under torchrun the helpers are torchrun's other ranks instead
(runners/parallel/torchrun.py, TorchrunHelpers): the same helper code, handed its jobs through the rendezvous store.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __name__ == "__main__":  # a helper process (argv: folder, rank, peers, rank 0's pid): die with rank 0 first
    from runners.parallel.lifeline import die_with_parent

    die_with_parent(int(sys.argv[4]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from datasets.split import Split  # noqa: E402
from datasets.table import Table  # noqa: E402
from models.interface import SeqRecModel  # noqa: E402
from runners.parallel.lifeline import die_with_parent  # noqa: E402
from runners.step.gradient_sync import ControlChannel, GradientSync, WorkerFailed, make_sync  # noqa: E402
from runners.step.optim import use_sparse_embeddings, wants_sparse_grad  # noqa: E402
from runners.step.settings import TrainSettings  # noqa: E402
from runners.train.runtime import configure_runtime  # noqa: E402
from runners.train.selection import EvalData  # noqa: E402
from runners.train.trainer import StepRunner, TrainResult, train  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HelperJob:
    """Everything a helper needs, pickled into the run's private folder."""

    model: torch.nn.Module  # the initial model (rank 0's, so every worker starts from the same weights)
    table: Table
    split: Split
    settings: TrainSettings
    world: int
    backend: str
    init_method: str | None
    threads: int
    flush_denormal: bool
    program: list[np.ndarray] | None = None  # runners/bench.py: run exactly these global batches, not train()


def train_processes(model: SeqRecModel, table: Table, split: Split, settings: TrainSettings,
                    evals: EvalData, log_curve: Callable[[dict[str, float], int], None], processes: int,
                    backend: str, threads: int | None, flush_denormal: bool,
                    helpers: type[Helpers] | None = None) -> TrainResult:
    """train() in this process, or as rank 0 of `processes` data-parallel workers (`helpers`: how the others are
    started; runners/parallel/torchrun.TorchrunHelpers when torchrun started them)."""
    if processes < 1:
        raise ValueError(f"trainer.processes must be >= 1, got {processes}")
    if processes == 1:
        return train(model, table, split, settings, evals, log_metrics=log_curve)
    if not model.data_parallel:
        raise ValueError(f"model {model.name!r} cannot train with trainer.processes > 1: {model.data_parallel_note}")
    with (helpers or Helpers)(model, table, split, settings, processes, backend, threads or 1, flush_denormal) as sync:
        return train(model, table, split, settings, evals, log_metrics=log_curve, sync=sync)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Helpers:
    """Starts and stops the helper processes of one data-parallel run (a context manager that yields rank 0's
    GradientSync). On leaving, helpers still running are given 10 s to finish, then killed; a helper's failure is
    raised as WorkerFailed."""

    def __init__(self, model: SeqRecModel, table: Table, split: Split, settings: TrainSettings, world: int,
                 backend: str, threads: int, flush_denormal: bool, program: list[np.ndarray] | None = None):
        self.world, self.backend = world, backend
        # as train() will: the gradient plan needs to know which tables are sparse
        use_sparse_embeddings(model, wants_sparse_grad(settings.sparse_grad, settings.optimizer,
                                                       settings.weight_decay))
        self.dir = Path(tempfile.mkdtemp(prefix=f"seqrec-dp-{os.getpid()}-",
                                         dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        self.init_method = f"tcp://127.0.0.1:{_free_port()}" if backend != "shm" else None
        with open(self.dir / "job.pkl", "wb") as f:
            pickle.dump(HelperJob(model, table, split, settings, world, backend, self.init_method, threads,
                                  flush_denormal, program), f, protocol=pickle.HIGHEST_PROTOCOL)
        self.procs: list[subprocess.Popen] = []
        self.channel = ControlChannel(0, self._start())
        self.sync = make_sync(model, backend, 0, world, self.channel, self.dir, self.init_method)
        self.channel.barrier()  # every helper has mapped the shared files
        _remove_dir(self.dir)

    def _start(self) -> dict[int, socket.socket]:
        """Start ranks 1..world-1, each with its ends of a socket pair to every other rank; returns rank 0's."""
        pairs = {(a, b): socket.socketpair() for a in range(self.world) for b in range(a + 1, self.world)}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        for rank in range(1, self.world):
            fds = {peer: (pair[1] if rank == b else pair[0]).fileno()
                   for (a, b), pair in pairs.items() if rank in (a, b) for peer in (a, b) if peer != rank}
            for fd in fds.values():
                os.set_inheritable(fd, True)
            arg = ",".join(f"{peer}:{fd}" for peer, fd in fds.items())
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "runners.parallel.data_parallel", str(self.dir), str(rank), arg, str(os.getpid())],
                env=env, cwd=REPO_ROOT, pass_fds=tuple(fds.values())))
        own = {b: pair[0] for (a, b), pair in pairs.items() if a == 0}
        for (a, b), pair in pairs.items():  # the helpers hold their ends now
            if a == 0:
                pair[1].close()
            else:
                pair[0].close(), pair[1].close()
        return own

    def __enter__(self) -> GradientSync:
        return self.sync

    def __exit__(self, exc_type, exc, tb) -> None:
        self.channel.close()  # a helper still waiting at a barrier sees the closed socket and exits
        for p in self.procs:
            try:
                p.wait(timeout=10 if exc is None else 2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        _remove_dir(self.dir)
        end_process_group()
        failed = [(i + 1, p.returncode) for i, p in enumerate(self.procs) if p.returncode not in (0, -9)]
        if exc is None and failed:
            raise WorkerFailed(f"training worker(s) {failed} exited with an error after rank 0 finished")


def end_process_group() -> None:
    """Shut torch.distributed down before the process exits (a live gloo group aborts the interpreter's exit)."""
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _remove_dir(directory: Path) -> None:
    for f in directory.glob("*"):
        f.unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        pass


def run_program(model: SeqRecModel, table: Table, split: Split, settings: TrainSettings,
                program: list[np.ndarray], sync: GradientSync | None) -> None:
    """Training steps on the given global batches (indices into the training rows, as train() builds them), no
    evaluation: runners/bench.py times rank 0's steps (the same StepRunner) while the helpers run the program."""
    runner = StepRunner.for_training(model, table, split, settings)
    model.train()
    for idx in program:
        runner.step(idx, sync)


def helper_main(directory: str, rank: int, peers: str, parent_pid: int) -> int:
    """A helper process that rank 0 started: its control sockets are inherited descriptors. SIGINT and SIGTERM
    (Ctrl-C, a scheduler signalling the process group) are left to rank 0, which stops the run between steps
    (runners/train/interrupts.py); a helper ends when rank 0 closes its channel or dies."""
    die_with_parent(parent_pid)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    return serve_job(directory, rank, ControlChannel(rank, {int(p): socket.socket(fileno=int(fd))
                                                            for p, fd in (x.split(":") for x in peers.split(","))}))


def serve_job(directory: str, rank: int, channel: ControlChannel) -> int:
    """A helper's part of one run: load the job, map the shared files, train (or run the program) as worker
    `rank`; a failure is sent to the other workers. Returns the exit status."""
    try:
        with open(Path(directory) / "job.pkl", "rb") as f:
            job: HelperJob = pickle.load(f)
        configure_runtime(job.threads, job.flush_denormal)
        sync = make_sync(job.model, job.backend, rank, job.world, channel, Path(directory), job.init_method)
        channel.barrier()  # mapped: rank 0 may unlink the files
        if job.program is None:
            train(job.model, job.table, job.split, job.settings, evals=None, sync=sync)
        else:
            run_program(job.model, job.table, job.split, job.settings, job.program, sync)
        return 0
    except WorkerFailed:
        return 1  # another worker failed first; rank 0 reports that one
    except BaseException:
        channel.report_failure(f"rank {rank}: " + traceback.format_exc())
        return 1
    finally:
        channel.close()


if __name__ == "__main__":
    code = helper_main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    sys.stdout.flush(), sys.stderr.flush()
    # A helper's work is done here (rank 0 holds every result); leave without running C++ destructors, where a
    # live gloo process group sometimes aborts ("terminate called without an active exception").
    os._exit(code)
