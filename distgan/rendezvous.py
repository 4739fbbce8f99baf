"""Joining the process group with bounded waits and named failures.

    info = rendezvous(timeout_s=180, backend="auto", expect_world=2)   # before Accelerate starts
    info.rank, info.world, info.host, info.addr, info.port, info.backend

Every rank of a training run (and of ``python -m distgan.launch --check``)
joins the same way, from the variables the launchers set (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT; :mod:`distgan.launch.env` maps Slurm's):

1. the task count is compared with the world size the launch expects,
2. the rendezvous host must resolve, and rank 0 must be able to listen on the port,
3. every rank announces itself (host, local rank) in rank 0's TCP store and
   waits at most ``timeout_s`` for all the others: the ranks that never came
   are named, with the hosts they were expected on,
4. the process group is built on that store with ``timeout=timeout_s``, so
   every later collective is bounded too (gloo raises; NCCL aborts through
   its asynchronous error handling, switched on here).

torch's own ``env://`` rendezvous waits silently (its default timeout is many
minutes) and, when it gives up, says only how many clients joined. Accelerate
reuses a process group that already exists, so training runs on this one.
Every failure is a :class:`RendezvousError` whose message names the cause and
the setting to change.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist

from distgan.hostlist import expand_hostlist
from distgan.ranks import LaunchEnvError, launch_ranks

_ARRIVED = "distgan/arrived/"
_store: tdist.Store | None = None  # rank 0's TCP store, kept for the failure report of a timed-out collective


class RendezvousError(RuntimeError):
    """The ranks could not form one group; ``kind`` names the cause, the message what to change."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class RendezvousInfo:
    """Where this rank is and how it joined (one row of the preflight table)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    host: str = field(default_factory=lambda: host_name())
    addr: str = ""
    port: int = 0
    backend: str = ""
    timings: dict = field(default_factory=dict)  # stage -> seconds on this rank


def host_name() -> str:
    """This rank's node: Slurm's node name (several slurmd may share one machine), else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise RendezvousError("environment", f"{name}={os.environ[name]!r} is not an integer") from None


def choose_backend(backend: str = "auto") -> str:
    """``auto`` -> nccl when this process sees a GPU, gloo otherwise."""
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return backend


def expected_hosts(world: int) -> list[str]:
    """The host each rank is expected on: Slurm's node list and tasks per node, else this host."""
    nodelist, per_node = os.environ.get("SLURM_JOB_NODELIST", ""), os.environ.get("SLURM_TASKS_PER_NODE", "")
    if nodelist and per_node and "SLURM_PROCID" in os.environ:
        counts: list[int] = []
        for part in per_node.split(","):  # "2(x3),1" = 2,2,2,1 (block distribution, Slurm's default)
            n, _, rep = part.partition("(x")
            counts += [int(n)] * (int(rep.rstrip(")")) if rep else 1)
        hosts = [h for h, c in zip(expand_hostlist(nodelist), counts) for _ in range(c)]
        if len(hosts) >= world:
            return hosts[:world]
    return [host_name()] * world


def _check_port(addr: str, port: int) -> None:
    """Rank 0 must be able to listen on the rendezvous port (another job or a stale run may hold it).

    SO_REUSEADDR as torch's TCPStore sets it: connections of a previous attempt on the
    same port (a requeued Slurm job keeps its job id, hence its port) linger in
    TIME_WAIT and do not stop the store from listening; only a live listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            raise RendezvousError(
                "port in use",
                f"rendezvous port {port} is already in use on {host_name()} (rank 0, "
                f"MASTER_ADDR={addr}): another run or a leftover process holds it. Set MASTER_PORT to a free "
                "port (Slurm: export MASTER_PORT=... in the profile's setup lines; the default is derived from "
                "the job id), or stop the process that holds it (ss -ltnp | grep :%d)" % port) from None


def check_world(world: int, expect_world: int) -> None:
    """Raise the named ``task count`` error when the started ranks differ from the launch's world size."""
    if expect_world and world != expect_world:
        where = (f"Slurm started {os.environ.get('SLURM_NTASKS')} task(s)" if "SLURM_NTASKS" in os.environ
                 else f"WORLD_SIZE={world}")
        raise RendezvousError(
            "task count",
            f"{where} but dist.expect_world_size={expect_world} (set by the launcher to nodes x ranks per "
            "node): the job was started with another task layout. Check "
            "--nodes and --gpus-per-node/--procs-per-node (profile: gpus_per_node, procs_per_node) against "
            "the tasks Slurm started (srun -n / --ntasks-per-node in a hand-written script)")


def rendezvous(timeout_s: float, backend: str = "auto", expect_world: int = 0,
               timeout_key: str = "dist.timeout_s") -> RendezvousInfo:
    """Join the default process group (no-op for one process); raise :class:`RendezvousError` on failure.

    ``timeout_key`` is the setting that holds ``timeout_s``, named in the messages.
    """
    global _store
    try:
        ranks = launch_ranks()
    except LaunchEnvError as e:
        raise RendezvousError("environment", str(e)) from None
    info = RendezvousInfo(rank=ranks.rank, world=ranks.world, local_rank=ranks.local_rank,
                          backend=choose_backend(backend))
    if info.world > 1:  # one process: the trainer's own check names a group that never formed
        check_world(info.world, expect_world)
    if info.world <= 1 or (tdist.is_available() and tdist.is_initialized()):
        return info
    if info.backend == "nccl":
        # a collective that times out aborts the communicator and ends the process instead of waiting on
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    info.addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    info.port = _env_int("MASTER_PORT", 29500)
    timeout = datetime.timedelta(seconds=timeout_s)

    t0 = time.perf_counter()
    try:
        socket.getaddrinfo(info.addr, info.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise RendezvousError(
            "host does not resolve",
            f"rendezvous host MASTER_ADDR={info.addr!r} does not resolve on {info.host} (rank {info.rank}): "
            f"{e.strerror}. Set MASTER_ADDR to rank 0's address, or (Slurm) give the nodes names that resolve "
            "on every node (the first host of the job's node list is used)") from None
    if info.rank == 0:
        _check_port(info.addr, info.port)
    info.timings["resolve"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    if info.rank != 0 and not _wait_for_listener(info.addr, info.port, deadline):
        raise RendezvousError(
            "ranks never arrived",
            f"rank {info.rank} on {info.host} could not reach the rendezvous {info.addr}:{info.port} within "
            f"{timeout_s:g} s ({timeout_key}): rank 0 (expected on {expected_hosts(info.world)[0]}) never "
            "opened it (did not start, or failed first: see its log), or a firewall blocks the port")
    try:
        store = tdist.TCPStore(info.addr, info.port, info.world, info.rank == 0, timeout=timeout,
                               wait_for_workers=False)
    except Exception as e:  # noqa: BLE001 - torch raises several types here; all mean "no store"
        text = str(e)
        if info.rank == 0 and ("EADDRINUSE" in text or "address already in use" in text.lower()):
            _check_port(info.addr, info.port)  # raises the named error
        if info.rank == 0:
            raise RendezvousError("rendezvous", f"rank 0 could not open the rendezvous store on "
                                  f"{info.addr}:{info.port}: {text.strip().splitlines()[0]}") from None
        raise RendezvousError(
            "ranks never arrived",
            f"rank {info.rank} on {info.host} could not reach the rendezvous {info.addr}:{info.port} within "
            f"{timeout_s:g} s ({timeout_key}): rank 0 (expected on {expected_hosts(info.world)[0]}) never "
            "opened it (did not start, or failed first: see its log), or a firewall blocks the port") from None
    store.set(f"{_ARRIVED}{info.rank}", json.dumps({"host": info.host, "local_rank": info.local_rank}))
    keys = [f"{_ARRIVED}{r}" for r in range(info.world)]
    try:
        store.wait(keys, timeout)
    except Exception:  # noqa: BLE001 - a store timeout (DistStoreError) or rank 0's store going away
        _raise_missing(store, keys, info, timeout_s, timeout_key)
    info.timings["rendezvous"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tdist.init_process_group(info.backend, store=tdist.PrefixStore("pg", store), rank=info.rank,
                             world_size=info.world, timeout=timeout)
    _store = store
    info.timings["process group"] = time.perf_counter() - t0
    return info


def _wait_for_listener(addr: str, port: int, deadline: float, every_s: float = 0.25) -> bool:
    """Try to connect until ``deadline``: torch's store client retries past its own timeout, noisily."""
    while True:
        try:
            with socket.create_connection((addr, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return True
        except OSError:
            if time.monotonic() + every_s > deadline:
                return False
            time.sleep(every_s)  # rank 0 may still be importing torch: poll its port


def _raise_missing(store: tdist.Store, keys: list[str], info: RendezvousInfo, timeout_s: float,
                   timeout_key: str) -> None:
    try:
        missing = [r for r, k in enumerate(keys) if not store.check([k])]
    except Exception:  # noqa: BLE001 - rank 0 (the store) is gone
        raise RendezvousError(
            "ranks never arrived",
            f"rank {info.rank} on {info.host} lost the rendezvous store at {info.addr}:{info.port} (rank 0 "
            "ended while waiting for the others: see its log)") from None
    hosts = expected_hosts(info.world)
    where = ", ".join(f"rank {r} (expected on {hosts[r]})" for r in missing)
    raise RendezvousError(
        "ranks never arrived",
        f"{len(missing)} of {info.world} rank(s) never arrived at the rendezvous {info.addr}:{info.port} within "
        f"{timeout_s:g} s ({timeout_key}): {where}. They did not start, crashed before joining, or cannot reach "
        f"{info.addr}:{info.port}; see their logs, and raise {timeout_key} only if they start slowly")


def store() -> tdist.Store | None:
    """The rendezvous store of this process group (None without one)."""
    return _store


def leave() -> None:
    """Destroy the process group joined by :func:`rendezvous` (idempotent)."""
    global _store
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
    _store = None
