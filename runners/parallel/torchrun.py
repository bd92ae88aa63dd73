"""torchrun as the launcher of a data-parallel run:
`torchrun --standalone --nproc-per-node N runners/run.py ... trainer.processes=N`.

torchrun starts N copies of runners/run.py. Rank 0 is the job, exactly as without torchrun (config, data, MLflow,
evaluation, checkpoints). Ranks 1..N-1 never read the config: each serves rank 0's data-parallel runs as a helper
(runners/parallel/data_parallel.serve_job), the same helper that `trainer.processes=N` otherwise starts itself. They meet
through torchrun's rendezvous store (env://):
- rank 0 numbers the runs it trains (a sequential sweep's jobs in turn), writes each one's helper job (initial
  model, data, settings) into a private folder and publishes the folder under `job/<k>`;
- every rank of run k listens on a loopback port and publishes it; each pair of ranks connects once, which gives
  the control channel one socket per pair of workers, as the socket pairs of spawned helpers do;
- when rank 0's command ends (finished, skipped or failed) it publishes `end` as the next job and the helpers
  exit 0, so torchrun's exit status is rank 0's. A helper that fails sends its traceback to rank 0 (the run is
  FAILED with it) and waits for the next job. torchrun's agent stops every rank when one dies.
One host only: the shared-memory gradients and the job's folder are local, so torchrun across nodes is refused.
"""
from __future__ import annotations

import socket
import struct
import sys
from datetime import timedelta
from typing import Callable

from runners.parallel.data_parallel import Helpers, end_process_group, serve_job
from runners.parallel.lifeline import torchrun_rank_dies_with_parent
from runners.parallel.world import TorchrunWorld, torchrun_world
from runners.step.gradient_sync import ControlChannel
from runners.train.runtime import tune_malloc

END = "end"  # published as the next job when rank 0's command is over
STORE_TIMEOUT = timedelta(days=7)  # helpers wait on the store while rank 0 loads data, evaluates, logs
CONNECT_TIMEOUT_S = 600.0  # a rank that has not connected by then is not coming

_store = None  # this process's client of the rendezvous store (rank 0 keeps one for all its runs)


def rendezvous_store():
    """The rendezvous store torchrun set up (env://), under our own key prefix."""
    global _store
    if _store is None:
        import torch.distributed as dist

        store, _, _ = next(dist.rendezvous("env://", timeout=STORE_TIMEOUT))
        _store = dist.PrefixStore("seqrec", store)
    return _store


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("a torchrun rank closed its connection while the ranks were connecting")
        data += chunk
    return data


def connect_mesh(store, key: str, rank: int, world: int) -> dict[int, socket.socket]:
    """One loopback TCP connection between every two ranks of run `key`: each rank publishes its listening port,
    connects to every lower rank (saying who it is) and accepts every higher one. Returns {peer rank: socket}."""
    server = socket.create_server(("127.0.0.1", 0), backlog=world)
    server.settimeout(CONNECT_TIMEOUT_S)
    store.set(f"{key}/port/{rank}", str(server.getsockname()[1]))
    peers: dict[int, socket.socket] = {}
    try:
        for lower in range(rank):
            port = int(store.get(f"{key}/port/{lower}"))  # blocks until that rank has published it
            sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S)
            sock.sendall(struct.pack("!i", rank))
            peers[lower] = sock
        for _ in range(world - 1 - rank):
            try:
                sock, _ = server.accept()
            except TimeoutError:
                missing = sorted(set(range(rank + 1, world)) - set(peers))
                raise ConnectionError(f"torchrun rank(s) {missing} did not connect within {CONNECT_TIMEOUT_S:.0f} s"
                                      ) from None
            sock.settimeout(CONNECT_TIMEOUT_S)
            (peer,) = struct.unpack("!i", _recv_exact(sock, 4))
            peers[peer] = sock
    finally:
        server.close()
    for sock in peers.values():
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one-byte barriers go out at once
    return peers


def publish_job(directory: str, world: int) -> dict[int, socket.socket]:
    """Rank 0: hand the helper job in `directory` to the other ranks; returns rank 0's control sockets."""
    store = rendezvous_store()
    k = store.add("jobs", 1)
    store.set(f"job/{k}", directory)
    return connect_mesh(store, f"run{k}", 0, world)


class TorchrunHelpers(Helpers):
    """Rank 0's side of a run whose helpers torchrun started: the job goes to them through the rendezvous store
    instead of a command line, and each pair of workers connects over loopback TCP."""

    def _start(self) -> dict[int, socket.socket]:
        return publish_job(str(self.dir), self.world)


def helpers_class() -> type[Helpers]:
    """Who starts a data-parallel run's helpers: torchrun, when it launched this process; else rank 0 itself."""
    return TorchrunHelpers if torchrun_world() is not None else Helpers


def publish_end() -> None:
    """Rank 0, when its command is over: the helpers' next job is `end`."""
    store = rendezvous_store()
    store.set(f"job/{store.add('jobs', 1)}", END)


def serve(world: TorchrunWorld) -> int:
    """Ranks 1..N-1: serve rank 0's runs one after the other until it publishes `end`."""
    tune_malloc()  # as runners/run.py does for rank 0
    store = rendezvous_store()
    k = 1
    while True:
        store.wait([f"job/{k}"])
        directory = store.get(f"job/{k}").decode()
        if directory == END:
            return 0
        channel = ControlChannel(world.rank, connect_mesh(store, f"run{k}", world.rank, world.world))
        serve_job(directory, world.rank, channel)  # a failure went to rank 0, which fails the run with it
        end_process_group()  # a gloo run's group: the next run starts its own
        k += 1


def run_rank(main: Callable[[], object]) -> None:
    """runners/run.py's entry: `main` outside torchrun and on its rank 0 (then the helpers are told it is over,
    however it ends); the helpers' loop on the other ranks."""
    world = torchrun_world()
    if world is None:
        main()
        return
    torchrun_rank_dies_with_parent()  # runners/run.py did so before its imports; a no-op then
    if world.rank > 0:
        sys.exit(serve(world))
    try:
        main()
    finally:
        publish_end()
