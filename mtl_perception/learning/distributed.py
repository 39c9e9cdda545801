"""Processes and devices for training: one process per GPU with DistributedDataParallel, or the CPU.

Three ways in, one ``DistContext`` out:

* launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment): that process's
  rank; ``--gpus`` (if given) lists the GPUs, local rank i uses ``--gpus[i]``; ``--device cpu`` uses gloo;
* ``--gpus 0 1`` from a plain ``python``: ``spawn`` starts one process per listed GPU (NCCL);
* neither: one process on ``--device`` (default: the CPU).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


class DeviceError(ValueError):
    """The requested GPUs are not on this machine (or the device string is invalid)."""


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_gpus(gpus: Sequence[int]) -> None:
    """Raise DeviceError naming the listed GPUs this machine does not have."""
    if len(set(gpus)) != len(gpus) or any(g < 0 for g in gpus):
        raise DeviceError(f"--gpus {' '.join(map(str, gpus))}: list each GPU index (>= 0) once")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [g for g in gpus if g >= available]
    if missing:
        have = f"GPUs 0..{available - 1}" if available else "no CUDA GPU"
        raise DeviceError(
            f"--gpus {' '.join(map(str, gpus))}: GPU {', '.join(map(str, missing))} not found (this machine "
            f"has {have}); train on the CPU by leaving out --gpus (or --device cpu)"
        )


def check_device(device: str | None, index: int | None = None) -> None:
    """Raise DeviceError unless ``device`` (--device: cpu or cuda[:N]) is on this machine; ``index``: the GPU
    a process will use (torchrun: its local rank when --device names none)."""
    if device is None or device == "cpu":
        return
    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type != "cuda":
        raise DeviceError(f"--device {device!r}: expected 'cpu' or 'cuda[:N]'")
    index = parsed.index if index is None else index
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (index or 0) >= available:
        raise DeviceError(
            f"--device {device}: GPU {index or 0} not found (this machine has "
            f"{available} CUDA GPU{'s' if available != 1 else ''}); use --device cpu"
        )


def check_amp(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> None:
    """Refuse bfloat16 autocast on a GPU without native bfloat16 (before compute capability 8.0, e.g. V100,
    T4), where it is emulated or unsupported, with the card named; float16 runs on every CUDA GPU."""
    if dtype != torch.bfloat16 or device.type != "cuda":
        return
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return
    major, minor = torch.cuda.get_device_capability(device)
    raise DeviceError(
        f"--amp: bfloat16 autocast needs native bfloat16 (compute capability >= 8.0); "
        f"{torch.cuda.get_device_name(device)} (cuda:{device.index or 0}) has {major}.{minor}; "
        "use --amp --amp_dtype float16 (loss scaling) or train without --amp"
    )


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(worker: Callable, args, *, gpus: Sequence[int] | None, device: str | None):
    """Run ``worker(ctx, args)`` in every training process; returns rank 0's result (single process or
    torchrun) or None (spawn: the workers' results stay in their processes)."""
    check_device(device)
    if gpus:
        check_gpus(gpus)
        if device == "cpu":
            raise DeviceError("--device cpu and --gpus exclude each other; leave out one of them")
    if launched_by_torchrun():
        return _run(worker, args, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), gpus, device)
    if gpus and len(gpus) > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        torch.multiprocessing.spawn(_spawned, args=(worker, args, len(gpus), gpus), nprocs=len(gpus))
        return None
    return _run(worker, args, 0, 1, gpus, device)


def _spawned(rank: int, worker: Callable, args, world_size: int, gpus: Sequence[int]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    _run(worker, args, rank, world_size, gpus, None)


def _run(worker: Callable, args, rank: int, world_size: int, gpus, device: str | None):
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if gpus:
        if local_rank >= len(gpus):
            raise DeviceError(f"local rank {local_rank} has no GPU in --gpus {' '.join(map(str, gpus))}")
        torch_device = torch.device("cuda", gpus[local_rank])
    elif device is None or device == "cpu":
        torch_device = torch.device("cpu")
    else:
        torch_device = torch.device(device)
        if torch_device.index is None and world_size > 1:
            torch_device = torch.device("cuda", local_rank)
        check_device(device, torch_device.index)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    ctx = DistContext(rank=rank, world_size=world_size, device=torch_device)
    if world_size > 1:
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        return worker(ctx, args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over processes (a copy); the tensor itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    out = tensor.clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def broadcast_object(value, src: int = 0):
    """Rank ``src``'s Python object on every rank (e.g. whether validation improved)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
