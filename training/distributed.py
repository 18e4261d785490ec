"""The process group: joining it under any launcher (or none), summing over ranks, and
printing once (rank 0)."""

from __future__ import annotations

import logging
import os
import socket
import warnings

import torch
import torch.distributed as dist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(verbose: bool = False) -> tuple[int, int, torch.device]:
    """Join the process group (gloo on CPU, nccl on GPU) → (rank, world, device).

    Launchers (deepspeed, torchrun, srun+torchrun) set RANK, WORLD_SIZE, LOCAL_RANK and
    MASTER_ADDR/PORT; a plain `python train_ds.py` gets a one-process group here, else
    DeepSpeed would go looking for MPI."""
    import deepspeed

    if not verbose:
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.* is deprecated")
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    on_gpu = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if on_gpu:
        torch.cuda.set_device(local_rank)
    if "OMP_NUM_THREADS" not in os.environ:
        # Ranks on one host share its cores, and a core is left to the decode workers:
        # oversubscribed OpenMP threads spin-wait, which made 2-core CPU steps 4x slower.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world - 1))
    # The shared-memory all-reduce is a JIT C++ build (30-60 s) that buys nothing here.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    device = torch.device("cuda", local_rank) if on_gpu else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a float64 tensor over ranks (on the collective's device) and return it on CPU."""
    if dist.get_world_size() == 1:
        return values
    on_gpu = dist.get_backend() == "nccl"
    reduced = values.to(torch.device("cuda", torch.cuda.current_device()) if on_gpu else "cpu")
    dist.all_reduce(reduced)
    return reduced.cpu()


def print0(*a, **k) -> None:
    """print() on rank 0 only, flushed: a run says each thing once, not once per rank."""
    if dist.get_rank() == 0:
        print(*a, **k, flush=True)
