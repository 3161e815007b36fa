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

Leaving. A process that finishes waits at a barrier for the others (rank 0 writes the last checkpoint while
they wait), and then all leave the process group together. The group must really be gone before Python
shuts down: gloo finishes each collective on a worker thread of its own, which then releases the tensors the
collective used, and releasing a tensor Python holds takes the interpreter's lock; a worker that reaches for it
while the interpreter is shutting down is killed, and the process aborts with "terminate called without an
active exception" (a core dump of such a run showed exactly that: a gloo worker destroying a finished
all-gather during `Py_FinalizeEx`). `destroy_process_group` joins those threads, unless something still holds
the group: with torch 2.13, importing `torch._dynamo` while a group exists (which the first optimizer does) keeps
that group alive for good, so `setup` imports it before it joins the group.

Failing. An error on one process (or a second Ctrl-C that stopped it at once) is published to torchrun's store
before that process leaves the group; the others, whose next collective then fails, read it there and stop with
a message naming the rank and the cause (`RankFailed`), instead of waiting out the timeout.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from rnnlm.device import resolve_device
from rnnlm.errors import AlreadySaid, RnnlmError, first_line, said_once_per_machine
from rnnlm.runtime import termination_handled
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
    local_world_size: int = 1
    """Processes on this machine."""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def sharing_memory(self) -> int:
        """Processes whose training fills this one's device memory: a GPU is a process's own, a machine's RAM is shared
        by its CPU processes."""
        return self.local_world_size if self.device.type == "cpu" else 1

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
    with said_once_per_machine():
        if device_name.startswith("cuda:"):
            raise RnnlmError(f"train.device={device_name}: under torchrun each process uses cuda:LOCAL_RANK; "
                             "set train.device=cuda (or auto)")
        if device_name == "cuda" and not torch.cuda.is_available():
            raise RnnlmError(f"train.device={device_name}: this machine has no CUDA device; use train.device=cpu")
    importlib.import_module("torch._dynamo")  # before the group exists: imported while it does, it keeps it alive
    if device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available()):
        if local >= torch.cuda.device_count():
            raise RnnlmError(f"LOCAL_RANK={local}, but this node has {torch.cuda.device_count()} CUDA device(s); "
                             "start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=TIMEOUT)
    here = Dist(rank, world, local, device, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    logger = logging.getLogger("rnnlm")  # its warnings are the corpus's, which every process reads alike
    level = logger.level
    if rank:
        logger.setLevel(logging.ERROR)  # rank 0 says what it found, once
    try:
        yield here
        dist.barrier()  # every process leaves after rank 0's last write
    except BaseException as e:
        failure = _failed(here, e)
        if failure is e:
            raise
        raise failure from None
    finally:
        logger.setLevel(level)
        dist.destroy_process_group()


class RankFailed(RnnlmError):
    """Another process of the run failed, and this one stopped with it."""


FAILURE_KEY = "rnnlm/failed"


def _failed(here: Dist, error: BaseException) -> BaseException:
    """The error to leave with. A collective that failed because another process is gone becomes `RankFailed`,
    with the cause that process published (the first to fail is the one reported); this process's own error is
    published for the others, then raised as it is; a mistake (`RnnlmError`) this process published first is said
    here and now, and it and one another process published first leave as `AlreadySaid`."""
    if isinstance(error, (RankFailed, SystemExit)):
        return error
    store = _store()
    if isinstance(error, KeyboardInterrupt):  # stopped at once: the others should not guess why this one is gone
        _publish(store, f"rank {here.rank} was interrupted")
        return error
    if _collective_failed(error):  # another process left the group
        with termination_handled(signal.SIG_IGN):  # torchrun terminates the others a tenth of a second after it
            cause = _published(store)           # sees one process die: this one first says why it stops
        return RankFailed(f"{cause or 'another process of this run stopped without saying why (killed?)'}; "
                          f"rank {here.rank} stopped with it")
    said = first_line(error)
    first = _publish(store, f"rank {here.rank} failed: {said}")
    if not isinstance(error, RnnlmError) or first is None:
        return error
    if first.startswith(f"rank {here.rank} "):
        if os.environ.get("RNNLM_DEBUG"):  # the CLI shows its traceback
            return error
        # the first to fail says why now, not after leaving the group: torchrun ends the others the moment one
        # process exits, and those that leave silently below may exit first
        print(f"error: {error}", file=sys.stderr, flush=True)
        return AlreadySaid(str(error))
    if first.endswith(f" failed: {said}"):  # a mistake every process finds (train.batch_size=33 for 2 processes)
        return AlreadySaid(str(error))
    return error


def _publish(store: Any, cause: str) -> str | None:
    """Tells the other processes why this one leaves; the first cause published is the one they report, and the
    one returned (None without a store)."""
    if store is not None:
        with contextlib.suppress(Exception):
            return bytes(store.compare_set(FAILURE_KEY, "", cause)).decode("utf-8", "replace")
    return None


def _collective_failed(error: BaseException) -> bool:
    """Whether a collective failed because a peer is gone: gloo reports a closed or reset connection as a plain
    RuntimeError, NCCL and newer torch as DistBackendError."""
    if isinstance(error, (dist.DistBackendError, dist.DistNetworkError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(k in text for k in ("gloo", "Connection reset", "Connection closed"))


def _published(store: Any, wait: float = 2.0) -> str | None:
    """The failure another process published, waiting a moment for it (it publishes, then leaves the group)."""
    deadline = time.monotonic() + wait
    while store is not None:
        try:
            if store.check([FAILURE_KEY]):
                return store.get(FAILURE_KEY).decode("utf-8", "replace")
        except Exception:  # the store's host is gone too: asking again only logs c10d's stack trace again
            return None
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return None


def _store() -> Any:
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # no default group any more, or a torch without this helper
        return None



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
