"""Data-parallel training processes of one run (trainer.processes=N): N workers, one global batch per step.

The calling process is rank 0: it trains its share, evaluates, selects, logs and checkpoints, as with one process.
It starts N-1 helper processes (`python -m runners.data_parallel`) that train their shares only. Each step every
worker takes an interleaved shard of the same global batch (`shard`), computes the loss of its rows as a part of
the global batch's loss (`Batch.mean_rows`: the means divide by the global row count, so the parts sum to the
global loss), and the gradients are summed over workers before clipping and the optimiser step. Every worker
sums them in the same order, so parameters stay identical on every rank and a step equals the single-process
step on the whole batch up to float summation order.

Gradient sums (`backend`):
- "shm" (the default on CPU): same-host workers write their gradients (dense ones flat, sparse embedding
  gradients as coalesced rows) into shared-memory files and meet at a barrier of one byte per peer over
  socket pairs (~10 us round trip here). The files are unlinked once every worker has mapped them.
- "gloo" / "nccl": torch.distributed all-reduce (multi-host, GPUs). Measured on the 2-core machines here, a gloo
  all-reduce of 4 KB on loopback costs 1.3 ms and of ATRank's 135 k dense floats 2.6 ms, more than the step
  itself, hence shm on one host.

Control channel: a socket pair between every two workers carries the barriers, rank 0's decisions at evaluation
points (early stop) and, when a helper fails, its traceback; a worker that exits is seen by its peers as a
closed socket at their next barrier, so a failure anywhere ends the run with that worker's error. Helpers die
with rank 0 (PR_SET_PDEATHSIG, and a parent check at start-up), so kill -9 of the run leaves no worker behind.
"""
from __future__ import annotations

import ctypes
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

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("shm", "gloo", "nccl")


def shard(idx: np.ndarray, world: int, rank: int) -> np.ndarray:
    """This rank's part of a global batch's row indices: every world-th one, so that in a length-bucketed batch
    (sorted by history length) every worker gets the same mix of lengths (sizes differ by at most one)."""
    return idx[rank::world]


class WorkerFailed(RuntimeError):
    """Another worker of the run failed; the message holds its traceback."""


def _spin_recv(sock: socket.socket, n: int, spins: int = 200_000) -> bytes:
    """recv, polling first: a peer is usually a few hundred microseconds behind, and a blocked process on these
    virtual machines takes milliseconds to be woken; after `spins` polls, block."""
    for _ in range(spins):
        try:
            return sock.recv(n, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
    return sock.recv(n)


class ControlChannel:
    """Barriers and rank 0's decisions over one socket pair per pair of workers."""

    def __init__(self, rank: int, peers: dict[int, socket.socket]):
        self.rank, self.peers = rank, peers

    def _recv(self, peer: int, n: int) -> bytes:
        data = _spin_recv(self.peers[peer], n)
        if data[:1] == b"E" or not data:  # a failed peer sends E + traceback, a killed one closes its socket
            rest = [data[1:]]
            while data:
                data = self.peers[peer].recv(65536)
                rest.append(data)
            text = b"".join(rest).decode(errors="replace").strip()
            raise WorkerFailed(f"training worker {peer} failed" + (f":\n{text}" if text else
                                                                  " (exited without a message; killed?)"))
        return data

    def _send(self, peer: int, data: bytes) -> None:
        try:
            self.peers[peer].sendall(data)
        except OSError:  # the peer is gone: what it said last (its traceback) is still to be read
            self._recv(peer, 1)
            raise WorkerFailed(f"training worker {peer} failed (its socket closed)") from None

    def barrier(self) -> None:
        for peer in self.peers:
            self._send(peer, b"b")
        for peer in self.peers:
            self._recv(peer, 1)

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag` on every worker (the others' arguments are ignored)."""
        if self.rank == 0:
            for peer in self.peers:
                self._send(peer, b"1" if flag else b"0")
            return flag
        return self._recv(0, 1) == b"1"

    def report_failure(self, text: str) -> None:
        for s in self.peers.values():
            try:
                s.sendall(b"E" + text.encode()[-20000:])
            except OSError:
                pass

    def close(self) -> None:
        for s in self.peers.values():
            s.close()


def _param_plan(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], set[int]]:
    """The parameters in a fixed order and the ids of those with sparse gradients (sparse nn.Embedding)."""
    sparse = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse}
    return list(model.parameters()), sparse


class SharedMemoryGradients:
    """Sums the workers' gradients through files in /dev/shm: per rank a flat float32 region (dense gradients,
    then the loss, then one has-gradient flag per parameter) and, per sparse table, its coalesced row indices and
    values (room for every row of the table; tmpfs allocates only the pages written)."""

    def __init__(self, directory: Path, params: list[torch.nn.Parameter], sparse: set[int], rank: int, world: int):
        self.rank, self.world, self.params = rank, world, params
        self.sparse = [p for p in params if id(p) in sparse]
        self.dense_params = [p for p in params if id(p) not in sparse]
        self.n_dense = sum(p.numel() for p in self.dense_params)
        n_flat = self.n_dense + 1 + len(params)

        def region(name: str, n: int, dtype: torch.dtype) -> torch.Tensor:
            path = directory / name
            if rank == 0:
                with open(path, "wb") as f:
                    f.truncate(n * torch.empty((), dtype=dtype).element_size())
            return torch.from_file(str(path), shared=True, size=n, dtype=dtype)

        self.flat = [region(f"flat{r}", n_flat, torch.float32) for r in range(world)]
        self.rows = [[region(f"rows{r}_{k}", p.shape[0] + 1, torch.int64) for k, p in enumerate(self.sparse)]
                     for r in range(world)]
        self.values = [[region(f"values{r}_{k}", p.numel(), torch.float32).view(p.shape)
                        for k, p in enumerate(self.sparse)] for r in range(world)]

    def write(self, loss: float) -> None:
        flat = self.flat[self.rank]
        grads = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in self.dense_params]
        flags = [loss] + [float(p.grad is not None) for p in self.params]
        if grads:
            torch.cat(grads, out=flat[:self.n_dense])  # one copy for every dense gradient
        flat[self.n_dense:].copy_(torch.tensor(flags))
        for k, p in enumerate(self.sparse):
            rows = self.rows[self.rank][k]
            if p.grad is None:
                rows[0] = 0
                continue
            g = p.grad if p.grad._nnz() <= p.shape[0] else p.grad.coalesce()  # duplicates are summed in read()
            n = g._nnz()
            rows[0] = n
            rows[1:1 + n].copy_(g._indices()[0])
            self.values[self.rank][k][:n].copy_(g._values())

    def read(self) -> float:
        """Sum the regions in rank order (the same on every rank) into the parameters' gradients."""
        total = self.flat[0].clone()
        for r in range(1, self.world):
            total += self.flat[r]
        tail = total[self.n_dense:].tolist()
        loss, has_grad = tail[0], {id(p): f > 0 for p, f in zip(self.params, tail[1:])}
        for p, g in zip(self.dense_params, total[:self.n_dense].split([p.numel() for p in self.dense_params])):
            p.grad = g.view_as(p) if has_grad[id(p)] else None
        for k, p in enumerate(self.sparse):
            if not has_grad[id(p)]:
                p.grad = None
                continue
            counts = [int(self.rows[r][k][0]) for r in range(self.world)]
            idx = torch.cat([self.rows[r][k][1:1 + c] for r, c in enumerate(counts)])
            val = torch.cat([self.values[r][k][:c] for r, c in enumerate(counts)])
            p.grad = torch.sparse_coo_tensor(idx[None], val, p.shape).coalesce()
        return loss


class TorchDistributedGradients:
    """Sums the gradients with torch.distributed all-reduce (gloo, nccl): dense ones and the loss and flags in
    one flat buffer, each sparse table through a sparse all-reduce (gloo)."""

    def __init__(self, params: list[torch.nn.Parameter], sparse: set[int]):
        import torch.distributed as dist

        self.dist, self.params = dist, params
        self.sparse = [p for p in params if id(p) in sparse]
        self.dense_params = [p for p in params if id(p) not in sparse]
        self.n_dense = sum(p.numel() for p in self.dense_params)
        self.position = {id(p): i for i, p in enumerate(params)}
        self.loss = 0.0

    def write(self, loss: float) -> None:
        self.loss = loss

    def read(self) -> float:
        device = self.params[0].device
        parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=device)
                 for p in self.dense_params]
        flags = torch.tensor([float(p.grad is not None) for p in self.params], device=device)
        flat = torch.cat([*parts, torch.tensor([self.loss], device=device), flags])
        self.dist.all_reduce(flat)
        flags, o = flat[self.n_dense + 1:], 0
        for p in self.dense_params:
            n = p.numel()
            p.grad = flat[o:o + n].view_as(p).clone() if flags[self.position[id(p)]] > 0 else None
            o += n
        for p in self.sparse:
            g = p.grad if p.grad is not None else torch.sparse_coo_tensor(
                torch.zeros(1, 0, dtype=torch.long, device=device), torch.zeros(0, *p.shape[1:], device=device),
                p.shape)
            self.dist.all_reduce(g)
            p.grad = g.coalesce() if flags[self.position[id(p)]] > 0 else None
        return float(flat[self.n_dense])


class GradientSync:
    """What the training loop of a worker needs: rank, world size, the gradient sum and rank 0's decisions."""

    def __init__(self, rank: int, world: int, channel: ControlChannel, gradients):
        self.rank, self.world, self.channel, self.gradients = rank, world, channel, gradients

    def reduce(self, loss: float) -> float:
        """Sum every worker's gradients into each parameter's .grad; returns the global batch's loss."""
        self.gradients.write(loss)
        self.channel.barrier()  # every region written
        total = self.gradients.read()
        self.channel.barrier()  # every region read: the next step may overwrite them
        return total

    def agree(self, flag: bool) -> bool:
        return self.channel.agree(flag)


def make_sync(model: torch.nn.Module, backend: str, rank: int, world: int, channel: ControlChannel,
              directory: Path, init_method: str | None) -> GradientSync:
    params, sparse = _param_plan(model)
    if backend == "shm":
        gradients = SharedMemoryGradients(directory, params, sparse, rank, world)
    elif backend in ("gloo", "nccl"):
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
        gradients = TorchDistributedGradients(params, sparse)
    else:
        raise ValueError(f"trainer.dist_backend must be one of {BACKENDS}, not {backend!r}")
    return GradientSync(rank, world, channel, gradients)


# ------------------------------------------------------------------------------------------ process management

@dataclass
class HelperJob:
    """Everything a helper needs, pickled into the run's private folder."""

    model: torch.nn.Module  # the initial model (rank 0's, so every worker starts from the same weights)
    table: object
    split: object
    settings: object  # runners.trainer.TrainSettings
    world: int
    backend: str
    init_method: str | None
    threads: int
    flush_denormal: bool
    program: list[np.ndarray] | None = None  # runners/bench.py: run exactly these global batches, not train()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Helpers:
    """Starts and stops the helper processes of one data-parallel run (a context manager that yields rank 0's
    GradientSync). On leaving, helpers still running are given 10 s to finish, then killed; a helper's failure is
    raised as WorkerFailed."""

    def __init__(self, model, table, split, settings, world: int, backend: str, threads: int, flush_denormal: bool,
                 program: list[np.ndarray] | None = None):
        from runners.trainer import use_sparse_embeddings, wants_sparse_grad

        self.world, self.backend = world, backend
        use_sparse_embeddings(model, wants_sparse_grad(settings))  # as train() will: the gradient plan needs it
        self.dir = Path(tempfile.mkdtemp(prefix=f"seqrec-dp-{os.getpid()}-",
                                         dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        self.init_method = f"tcp://127.0.0.1:{_free_port()}" if backend != "shm" else None
        with open(self.dir / "job.pkl", "wb") as f:
            pickle.dump(HelperJob(model, table, split, settings, world, backend, self.init_method, threads,
                                  flush_denormal, program), f, protocol=pickle.HIGHEST_PROTOCOL)
        pairs = {(a, b): socket.socketpair() for a in range(world) for b in range(a + 1, world)}
        self.procs: list[subprocess.Popen] = []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        for rank in range(1, world):
            fds = {peer: (pair[1] if rank == b else pair[0]).fileno()
                   for (a, b), pair in pairs.items() if rank in (a, b) for peer in (a, b) if peer != rank}
            for fd in fds.values():
                os.set_inheritable(fd, True)
            arg = ",".join(f"{peer}:{fd}" for peer, fd in fds.items())
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "runners.data_parallel", str(self.dir), str(rank), arg, str(os.getpid())],
                env=env, cwd=REPO_ROOT, pass_fds=tuple(fds.values())))
        own = {b: pair[0] for (a, b), pair in pairs.items() if a == 0}
        for (a, b), pair in pairs.items():  # the helpers hold their ends now
            if a == 0:
                pair[1].close()
            else:
                pair[0].close(), pair[1].close()
        self.channel = ControlChannel(0, own)
        self.sync = make_sync(model, backend, 0, world, self.channel, self.dir, self.init_method)
        self.channel.barrier()  # every helper has mapped the shared files
        _remove_dir(self.dir)

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
        _end_process_group()
        failed = [(i + 1, p.returncode) for i, p in enumerate(self.procs) if p.returncode not in (0, -9)]
        if exc is None and failed:
            raise WorkerFailed(f"training worker(s) {failed} exited with an error after rank 0 finished")


def _end_process_group() -> None:
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


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def run_program(model, table, split, settings, program: list[np.ndarray], sync: GradientSync | None) -> None:
    """Training steps on the given global batches (indices into the training rows, as train() builds them), no
    evaluation: runners/bench.py times rank 0's steps while the helpers run the same program."""
    from datasets.batches import BatchMaker, train_rows
    from runners.trainer import prepare_optimizer, train_step, worker_batch

    paired = settings.pair_rows and model.train_format == "pointwise"
    rows = train_rows(table, split, model.train_format, paired=paired)
    maker = BatchMaker(table, max_len=settings.max_len)
    optimizer, params = prepare_optimizer(model, settings)
    model.train()
    for idx in program:
        train_step(model, optimizer, params, worker_batch(maker, rows, idx, 2 if paired else 1, sync),
                   settings.clip_norm, sync=sync)


def helper_main(directory: str, rank: int, peers: str, parent_pid: int) -> int:
    _die_with_parent(parent_pid)
    channel = ControlChannel(rank, {int(p): socket.socket(fileno=int(fd))
                                    for p, fd in (x.split(":") for x in peers.split(","))})
    try:
        from runners.trainer import configure_runtime, train

        with open(Path(directory) / "job.pkl", "rb") as f:
            job: HelperJob = pickle.load(f)
        configure_runtime(job.threads, job.flush_denormal)
        sync = make_sync(job.model, job.backend, rank, job.world, channel, Path(directory), job.init_method)
        channel.barrier()  # mapped: rank 0 may unlink the files
        if job.program is None:
            train(job.model, job.table, job.split, job.settings, test_guard=None, sync=sync)
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
