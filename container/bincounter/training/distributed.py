"""Multi-host / multi-GPU set-up from SageMaker's ``resourceconfig.json``, without a framework.

One process per GPU (or one per host on CPU). Hosts come sorted from the resource config; the
first is the master. On SageMaker a host name may not resolve for a while after the container
starts, so resolution is retried. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import datetime
import logging
import socket
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..errors import ConfigError
from .environment import TrainingEnvironment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_host(name: str, timeout_s: float = 300.0, interval_s: float = 2.0) -> str:
    """The IP of ``name``, retried: SageMaker's DNS for algo-N can lag container start."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return socket.gethostbyname(name)
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"host {name!r} from resourceconfig.json did not resolve within "
                    f"{timeout_s:.0f} s ({exc}); check the cluster network"
                ) from None
            log.info("waiting for host %s to resolve (%s)", name, exc)
            time.sleep(interval_s)


def processes_per_host(env: TrainingEnvironment) -> int:
    """One process per GPU, or one on a host without CUDA."""
    return max(1, env.num_gpus) if torch.cuda.is_available() else 1


def init_process_group(env: TrainingEnvironment, local_rank: int) -> DistContext:
    """Join the job's process group (or return a single-process context)."""
    per_host = processes_per_host(env)
    world_size = len(env.hosts) * per_host
    use_cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size == 1:
        return DistContext(device=device)
    host_index = env.hosts.index(env.current_host)
    rank = host_index * per_host + local_rank
    master = resolve_host(env.hosts[0]) if len(env.hosts) > 1 else "127.0.0.1"
    port = env.master_port
    for peer in env.hosts[1:]:
        resolve_host(peer)
    backend = "nccl" if use_cuda else "gloo"
    log.info(
        "joining %s process group: rank %d of %d (host %s, local rank %d), master %s:%d",
        backend,
        rank,
        world_size,
        env.current_host,
        local_rank,
        master,
        port,
    )
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{master}:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(minutes=30),
    )
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a metrics tensor over ranks (a no-op in a single process)."""
    if ctx.enabled:
        on_device = tensor.to(ctx.device)
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        return on_device.to(tensor.device)
    return tensor


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if it is true on any (used to stop all ranks at the same step)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group, if this process joined one."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
