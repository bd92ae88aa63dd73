"""How the workers of a data-parallel run (runners/parallel/data_parallel.py) talk: each worker's share of a
global batch, the control channel between workers, and the gradient sums.

Gradient sums (`backend`):
- "shm" (the default on CPU): same-host workers write their gradients (dense ones flat, sparse embedding
  gradients as coalesced rows) into shared-memory files and meet at a barrier of one byte per peer over
  socket pairs (~10 us round trip here). The files are unlinked once every worker has mapped them.
- "gloo" / "nccl": torch.distributed all-reduce (multi-host, GPUs). Measured on the 2-core machines here, a gloo
  all-reduce of 4 KB on loopback costs 1.3 ms and of ATRank's 135 k dense floats 2.6 ms, more than the step
  itself, hence shm on one host.
Both pack the dense gradients the same way (`FlatGradients`: dense gradients, the loss, one has-gradient flag per
parameter); they differ in how the packed vectors and the sparse tables are summed.

Replicated steps: a batch at most `replicate_width` positions wide (`replicate_limit`) is computed whole by every
worker, with no gradient sum: each applies the same update to its own identical copy of the model. On narrow
batches a step is mostly fixed per-step work that sharding does not divide, and the sum costs ~0.3-0.9 ms, so one
thread on the whole batch is faster. It needs every worker to compute bit for bit the same step: the same host
(shm), no random draws in training (dropout 0); `check_replicas` compares the workers' parameters at every
evaluation point and stops the run if they differ.

Control channel: a socket pair between every two workers carries the barriers, rank 0's decisions at evaluation
points (early stop) and, when a helper fails, its traceback; a worker that exits is seen by its peers as a
closed socket at their next barrier, so a failure anywhere ends the run with that worker's error.
"""
from __future__ import annotations

import socket
import struct
from pathlib import Path

import numpy as np
import torch

BACKENDS = ("shm", "gloo", "nccl")


def shard(idx: np.ndarray, world: int, rank: int) -> np.ndarray:
    """This rank's part of a global batch's row indices: every world-th one, so that in a length-bucketed batch
    (sorted by history length) every worker gets the same mix of lengths (sizes differ by at most one)."""
    return idx[rank::world]


AUTO_REPLICATE_WIDTH = 4  # measured (docs/performance.md, "Replicated narrow steps"): one thread on the whole
# batch of at most 4 positions beat two half-batch workers and their gradient sum for 5 of the 6 models


def has_random_draws(model: torch.nn.Module) -> bool:
    """Whether a training step draws random numbers (dropout), so that workers computing the same batch would not
    compute the same step (every worker is seeded alike, but sharded steps consume different draws)."""
    return any((isinstance(m, torch.nn.Dropout) and m.p > 0) or (isinstance(m, torch.nn.RNNBase) and m.dropout > 0)
               for m in model.modules())


def replicate_limit(setting: str | int, model: torch.nn.Module, same_host: bool) -> int:
    """The widest batch every worker computes whole (0: every batch is split). auto: AUTO_REPLICATE_WIDTH on one
    host (shm) for a model without random draws, else 0. An explicit width on a model with dropout is refused."""
    if setting == "auto":
        return AUTO_REPLICATE_WIDTH if same_host and not has_random_draws(model) else 0
    width = int(setting)
    if width > 0 and has_random_draws(model):
        raise ValueError(f"trainer.replicate_width={width} needs a training step without random draws, and "
                         f"{type(model).__name__} has dropout: the workers' copies would diverge. Use 0 or auto.")
    return width


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

    def gather(self, payload: bytes) -> list[bytes] | None:
        """Every worker's `payload` (all of one length) on rank 0, in rank order; None on the other ranks."""
        if self.rank != 0:
            self._send(0, payload)
            return None
        out = [payload]
        for peer in sorted(self.peers):
            data = b""
            while len(data) < len(payload):
                data += self._recv(peer, len(payload) - len(data))
            out.append(data)
        return out

    def report_failure(self, text: str) -> None:
        for s in self.peers.values():
            try:
                s.sendall(b"E" + text.encode()[-20000:])
            except OSError:
                pass

    def close(self) -> None:
        for s in self.peers.values():
            s.close()


class FlatGradients:
    """The packing both backends share: the dense gradients flat (zeros where a parameter has none), then the
    loss, then one has-gradient flag per parameter, so that one sum of the packed vectors sums all of them."""

    def __init__(self, params: list[torch.nn.Parameter], sparse: set[int]):
        self.params = params
        self.sparse = [p for p in params if id(p) in sparse]
        self.dense_params = [p for p in params if id(p) not in sparse]
        self.n_dense = sum(p.numel() for p in self.dense_params)
        self.n_flat = self.n_dense + 1 + len(params)

    def pack(self, loss: float, out: torch.Tensor | None = None) -> torch.Tensor:
        device = self.params[0].device
        grads = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in self.dense_params]
        tail = torch.tensor([loss] + [float(p.grad is not None) for p in self.params], device=device)
        return torch.cat([*grads, tail], out=out)  # one copy for every dense gradient

    def unpack(self, total: torch.Tensor) -> tuple[float, dict[int, bool]]:
        """Set the dense parameters' gradients from the summed vector `total` (views of it); returns the summed
        loss and, per parameter id, whether any worker had a gradient for it."""
        tail = total[self.n_dense:].tolist()
        has_grad = {id(p): f > 0 for p, f in zip(self.params, tail[1:])}
        for p, g in zip(self.dense_params, total[:self.n_dense].split([p.numel() for p in self.dense_params])):
            p.grad = g.view_as(p) if has_grad[id(p)] else None
        return tail[0], has_grad


class SharedMemoryGradients(FlatGradients):
    """Sums the workers' gradients through files in /dev/shm: per rank one packed float32 region and, per sparse
    table, its coalesced row indices and values (room for every row of the table; tmpfs allocates only the pages
    written)."""

    def __init__(self, directory: Path, params: list[torch.nn.Parameter], sparse: set[int], rank: int, world: int):
        super().__init__(params, sparse)
        self.rank, self.world = rank, world

        def region(name: str, n: int, dtype: torch.dtype) -> torch.Tensor:
            path = directory / name
            if rank == 0:
                with open(path, "wb") as f:
                    f.truncate(n * torch.empty((), dtype=dtype).element_size())
            return torch.from_file(str(path), shared=True, size=n, dtype=dtype)

        self.flat = [region(f"flat{r}", self.n_flat, torch.float32) for r in range(world)]
        self.rows = [[region(f"rows{r}_{k}", p.shape[0] + 1, torch.int64) for k, p in enumerate(self.sparse)]
                     for r in range(world)]
        self.values = [[region(f"values{r}_{k}", p.numel(), torch.float32).view(p.shape)
                        for k, p in enumerate(self.sparse)] for r in range(world)]

    def write(self, loss: float) -> None:
        self.pack(loss, out=self.flat[self.rank])
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
        loss, has_grad = self.unpack(total)
        for k, p in enumerate(self.sparse):
            if not has_grad[id(p)]:
                p.grad = None
                continue
            counts = [int(self.rows[r][k][0]) for r in range(self.world)]
            idx = torch.cat([self.rows[r][k][1:1 + c] for r, c in enumerate(counts)])
            val = torch.cat([self.values[r][k][:c] for r, c in enumerate(counts)])
            p.grad = torch.sparse_coo_tensor(idx[None], val, p.shape).coalesce()
        return loss


class TorchDistributedGradients(FlatGradients):
    """Sums the gradients with torch.distributed all-reduce (gloo, nccl): the packed vector in one all-reduce,
    each sparse table through a sparse all-reduce (gloo)."""

    def __init__(self, params: list[torch.nn.Parameter], sparse: set[int]):
        import torch.distributed as dist

        super().__init__(params, sparse)
        self.dist = dist
        self.loss = 0.0

    def write(self, loss: float) -> None:
        self.loss = loss

    def read(self) -> float:
        flat = self.pack(self.loss)
        self.dist.all_reduce(flat)
        loss, has_grad = self.unpack(flat)
        device = self.params[0].device
        for p in self.sparse:
            g = p.grad if p.grad is not None else torch.sparse_coo_tensor(
                torch.zeros(1, 0, dtype=torch.long, device=device), torch.zeros(0, *p.shape[1:], device=device),
                p.shape)
            self.dist.all_reduce(g)
            p.grad = g.coalesce() if has_grad[id(p)] else None
        return loss


class ReplicasDiverged(RuntimeError):
    """The workers' copies of the model differ (replicated steps on workers that do not compute alike)."""


class GradientSync:
    """What the training loop of a worker needs: rank, world size, the gradient sum and rank 0's decisions."""

    def __init__(self, rank: int, world: int, channel: ControlChannel, gradients: FlatGradients):
        self.rank, self.world, self.channel, self.gradients = rank, world, channel, gradients
        self.same_host = isinstance(gradients, SharedMemoryGradients)

    def reduce(self, loss: float) -> float:
        """Sum every worker's gradients into each parameter's .grad; returns the global batch's loss. The hook
        optim.train_step is handed (`reduce`): it runs after backward, before the clip."""
        self.gradients.write(loss)
        self.channel.barrier()  # every region written
        total = self.gradients.read()
        self.channel.barrier()  # every region read: the next step may overwrite them
        return total

    def agree(self, flag: bool) -> bool:
        return self.channel.agree(flag)

    def check_replicas(self, model: torch.nn.Module, step: int) -> None:
        """Rank 0 compares every worker's per-parameter sums (float64) with its own; raises ReplicasDiverged there
        if any differ (the other workers then see rank 0 gone)."""
        names = [n for n, _ in model.named_parameters()]
        sums = [float(torch.sum(p.detach(), dtype=torch.float64)) for p in model.parameters()]
        gathered = self.channel.gather(struct.pack(f"{len(sums)}d", *sums))
        if gathered is None:
            return
        for rank, data in enumerate(gathered[1:], start=1):
            theirs = struct.unpack(f"{len(sums)}d", data)
            bad = [f"{n} ({a!r} vs {b!r})" for n, a, b in zip(names, sums, theirs) if a != b]
            if bad:
                raise ReplicasDiverged(
                    f"data-parallel worker {rank}'s copy of the model differs from rank 0's at step {step}: "
                    f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}. Replicated steps need workers that "
                    "compute alike (one host, same threads); set trainer.replicate_width=0 to split every batch.")


def make_sync(model: torch.nn.Module, backend: str, rank: int, world: int, channel: ControlChannel,
              directory: Path, init_method: str | None) -> GradientSync:
    """This worker's GradientSync; the parameters go in a fixed order, sparse ones are the sparse nn.Embedding
    tables (the trainer has switched them already)."""
    params = [p for p in model.parameters() if p.requires_grad]  # the same list as optim.prepare_optimizer's
    sparse = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse}
    if backend == "shm":
        gradients: FlatGradients = SharedMemoryGradients(directory, params, sparse, rank, world)
    elif backend in ("gloo", "nccl"):
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
        gradients = TorchDistributedGradients(params, sparse)
    else:
        raise ValueError(f"trainer.dist_backend must be one of {BACKENDS}, not {backend!r}")
    return GradientSync(rank, world, channel, gradients)
