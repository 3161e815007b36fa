"""Which device this process trains on, and data parallelism over processes started by torchrun.

    torchrun --standalone --nproc_per_node=N -m rnnlm train config.yaml

torchrun starts N copies of the command with RANK, WORLD_SIZE and LOCAL_RANK (and where to meet) in
their environment. `setup` joins them into one process group, NCCL on CUDA (process LOCAL_RANK of a
node uses cuda:LOCAL_RANK) or gloo on CPU. Without those variables it yields a `Dist` for a single
process, and every collective below is a no-op, so the trainer has one code path.

Every process draws the same global minibatch from the same seeded batcher and trains on its own
rows of it; DistributedDataParallel averages the gradients, so all replicas take the same step:

    global minibatch, B rows           W processes, b = B / W rows each
    ┌ row 0     ... row b-1    ┐  ->   rank 0
    │ row b     ... row 2b-1   │  ->   rank 1
    │ ...                      │
    └ row (W-1)b ... row B-1   ┘  ->   rank W-1

In `sequential` batching row r continues from minibatch to minibatch, so each process carries the
hidden state of its own rows; a checkpoint gathers the rows back into the state a single process
would carry, which is why a run can resume with a different number of processes.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from rnnlm.device import resolve_device
from rnnlm.errors import RnnlmError
from rnnlm.state import State, map_state

TIMEOUT = datetime.timedelta(minutes=30)
"""How long a process waits for the others, e.g. while rank 0 evaluates alone."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; for one process, rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and the progress bar."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This process's rows of a global minibatch."""
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over processes, in place."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj`, on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's `obj` (picklable), in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def gather_rows(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """Every process's rows of a batch tensor, concatenated along `dim` in rank order."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim)


def launched() -> bool:
    """Whether torchrun (or another launcher of torch.distributed) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def setup(device_name: str) -> Iterator[Dist]:
    """This process's `Dist`: joins the process group when torchrun started several, leaves it at exit."""
    if not launched():
        yield Dist(device=resolve_device(device_name))
        return
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device_name.startswith("cuda:"):
        raise RnnlmError(f"train.device={device_name}: under torchrun each process uses cuda:LOCAL_RANK; "
                         "set train.device=cuda (or auto)")
    if device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RnnlmError(f"train.device={device_name}: this machine has no CUDA device; use train.device=cpu")
        if local >= torch.cuda.device_count():
            raise RnnlmError(f"LOCAL_RANK={local}, but this node has {torch.cuda.device_count()} CUDA device(s); "
                             "start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield Dist(rank, world, local, device)
    finally:
        dist.destroy_process_group()


def gather_state(state: State | None, dist: Dist) -> State | None:
    """Every process's rows of the carried state (layers, rows, hidden), as one process would carry it."""
    return map_state(lambda s: dist.gather_rows(s, 1), state)


def rng_states(dist: Dist) -> dict[str, list[torch.Tensor]]:
    """Every process's random generators, in rank order, for a checkpoint."""
    cuda = dist.all_gather(torch.cuda.get_rng_state(dist.device)) if dist.device.type == "cuda" else []
    return {"torch": dist.all_gather(torch.get_rng_state()), "cuda": cuda}


def restore_rng(rng: dict[str, list[torch.Tensor]], dist: Dist) -> None:
    """This process's generators as saved; a process the saving run did not have keeps its fresh seed."""
    if dist.rank < len(rng["torch"]):
        torch.set_rng_state(rng["torch"][dist.rank])
    if dist.device.type == "cuda" and dist.rank < len(rng["cuda"]):
        torch.cuda.set_rng_state(rng["cuda"][dist.rank], dist.device)


def fingerprint(model: torch.nn.Module) -> str:
    """A digest of the parameters: equal on every process while the replicas agree."""
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
