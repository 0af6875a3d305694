"""Multi-process training: ``torchrun --nproc_per_node N`` with ``DistributedDataParallel``.

S and σ (``LeapScores``) are ordinary parameters, so DDP all-reduces their gradients with the
weights'. The *global* batch size stays ``TrainConfig.batch_size``: every rank takes its contiguous
share of each global batch (``torch.tensor_split``) and scales its task loss by
``world * n_rank / n_batch``, so DDP's gradient average is exactly the full-batch gradient, also for
a short last batch. ``λ·L_reg`` (Eq. 5-7) depends on σ only, which is identical on every rank, so
every rank sees the same R and adds the same unscaled penalty. Only rank 0 writes files.

``Dist`` is the single-process no-op when ``torch.distributed`` is not initialised, so the loop
has one code path.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as tdist
from torch import nn


def backend_for(device: Optional[torch.device] = None) -> str:
    """``nccl`` when CUDA is used, else ``gloo`` (CPU)."""
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    return "nccl" if cuda else "gloo"


def init_from_env(backend: Optional[str] = None, timeout_s: float = 1800.0) -> "Dist":
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1 in the environment).

    Returns the ``Dist`` of this process; outside torchrun (no ``WORLD_SIZE``) it is rank 0 of 1
    and nothing is initialised. Under CUDA each rank uses ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not tdist.is_initialized():
        backend = backend or backend_for()
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Dist.current()


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


@dataclass
class Dist:
    """This process's place in the job: ``rank`` of ``world`` (``world == 1``: plain training)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Dist":
        if tdist.is_available() and tdist.is_initialized():
            return cls(tdist.get_rank(), tdist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise ValueError(f"batch_size={batch_size} (the global batch) is not divisible by the "
                             f"{self.world} processes: choose a multiple of {self.world}")

    def shard(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
        """This rank's rows of a global batch and its loss scale ``world * n_rank / n_batch``.

        A rank left without rows (a last batch smaller than ``world``) runs the first row with
        scale 0, so every rank still takes part in DDP's gradient all-reduce.
        """
        if not self.active:
            return batch, 1.0
        n = int(batch["labels"].shape[0])
        idx = torch.tensor_split(torch.arange(n), self.world)[self.rank]
        scale = self.world * len(idx) / n
        if len(idx) == 0:
            idx = torch.arange(1)
        return {k: v[idx] for k, v in batch.items()}, scale

    def wrap(self, model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """``DistributedDataParallel(model)`` (rank 0's parameters are broadcast), or ``model``."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        import inspect
        # buffers (position ids, ...) are not trained: no per-forward broadcast
        sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers")
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters,
                                       **{sync: False})

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """All-reduce sum of a small tensor (identity on one process)."""
        if not self.active:
            return values
        device = values.device
        if tdist.get_backend() == "nccl":
            values = values.cuda()
        values = values.clone()
        tdist.all_reduce(values)
        return values.to(device)

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on some rank (so all ranks stop together)."""
        if not self.active:
            return bool(flag)
        return bool(self.sum(torch.tensor([1.0 if flag else 0.0])).item() > 0)

    def gather(self, obj: Any) -> Optional[list]:
        """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, None elsewhere."""
        if not self.active:
            return [obj]
        out = [None] * self.world if self.is_main else None
        tdist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn, *args, **kwargs):
        """Run ``fn`` on rank 0 only; every rank returns its result or raises its exception, so a
        bad-input error stops all ranks alike instead of leaving them waiting in a collective."""
        if not self.active:
            return fn(*args, **kwargs)
        result = error = None
        if self.is_main:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:  # re-raised on every rank below
                error = exc
        result, error = self.broadcast((result, error))
        if error is not None:
            raise error
        return result

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()


def unused_parameters(model: nn.Module, inputs: dict, logits_of) -> list[str]:
    """Trainable parameters one forward on ``inputs`` leaves without a gradient path (e.g. σ of an
    owner with ``fixed_k``, a skipped head). DDP needs ``find_unused_parameters`` only when there are
    any. Runs under ``fork_rng`` and clears the gradients, so training is unaffected."""
    was_training = model.training
    model.eval()  # no dropout draws, no running-statistics updates
    try:
        with torch.random.fork_rng(devices=[]):
            logits_of(model(**inputs)).float().sum().backward()
    finally:
        model.train(was_training)
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    return names


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (checkpoints store its state_dict: no ``module.`` prefix)."""
    return getattr(model, "module", model)
