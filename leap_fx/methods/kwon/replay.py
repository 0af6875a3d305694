"""Block replay for mask tuning: forwards that start at block l, the blocks before it answered from a cache.

Mask tuning needs, for every family in forward order, a forward of the sample data through the pruned
model up to that family (the earlier families already tuned). Run from the embeddings each time, that
is ``L + 1/2`` forwards for ``L`` layers. ``Replay`` keeps, per batch, the output of the last block
whose families are all tuned, and makes every earlier block return it (an instance ``forward``,
removed afterwards): the forward then runs the embeddings and the current block only, about three block
passes per layer in all (one per family, one to record the block's output).

Generic and checked: blocks come from ``Plan.blocks()`` in the order a forward calls them; before it
is used, a forward with all but the last block answered from the cache must give the model's own
outputs (``ok``), else every forward runs in full (a block with side effects a later block reads).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from leap_fx.data.batches import model_inputs
from leap_fx.methods.kwon.capture import StopForward, output_tensors


def _first_tensor(out):
    """The first tensor of a forward's output (tensor, HF ModelOutput, nested tuple), or None."""
    return next(iter(output_tensors(out)), None)


class Replay:
    """Per-batch cache of the last finished block's output; ``patched(i)`` answers blocks from it."""

    def __init__(self, model, plan, batches: list[dict]):
        self.model, self.batches = model, batches
        self.blocks = self._call_order(plan.blocks()) if batches else []
        self.cache: list = [None] * len(batches)
        self.done = 0  # blocks whose output is cached (the cache holds block done-1's)
        self.ok = len(self.blocks) > 1 and self._verify()

    def _module(self, name: str):
        return self.model.get_submodule(name)

    def _call_order(self, names: list[str]) -> list[str]:
        seen: list[str] = []
        hooks = [self._module(n).register_forward_pre_hook(lambda m, a, n=n: seen.append(n)) for n in names if n]
        try:
            with torch.no_grad():
                self.model(**model_inputs(self.batches[0]))
        finally:
            for h in hooks:
                h.remove()
        return list(dict.fromkeys(seen)) if sorted(set(seen)) == sorted(n for n in names if n) else []

    def block_of(self, fqn: str) -> int:
        """Index of the block holding the module ``fqn`` (-1 if none)."""
        return next((i for i, b in enumerate(self.blocks) if fqn == b or fqn.startswith(b + ".")), -1)

    @contextmanager
    def _answering(self, upto: int, value):
        mods = [self._module(n) for n in self.blocks[:upto]]
        try:
            for m in mods:
                m.forward = lambda *a, **k: value  # noqa: E731 - an instance forward, removed below
            yield
        finally:
            for m in mods:
                del m.forward

    def patched(self, i: int):
        """Context: blocks before the current one return batch ``i``'s cached output."""
        if not self.ok or self.done == 0:
            return nullcontext()
        return self._answering(self.done, self.cache[i])

    def _record(self, i: int, index: int, answer: bool = True):
        """Output of block ``index`` on batch ``i`` (``answer``: blocks before it from the cache)."""
        got = []

        def stop(mod, args, out):
            got.append(out)
            raise StopForward(self.blocks[index])
        hook = self._module(self.blocks[index]).register_forward_hook(stop)
        try:
            with torch.no_grad(), (self._answering(index, self.cache[i]) if answer and index else nullcontext()):
                self.model(**model_inputs(self.batches[i]))
        except StopForward:
            pass
        finally:
            hook.remove()
        return got[0]

    def advance(self, upto: int) -> None:
        """Cache outputs until blocks ``0 .. upto-1`` are answered (their families are final)."""
        while self.ok and self.done < upto:
            self.cache = [self._record(i, self.done) for i in range(len(self.batches))]
            self.done += 1

    @torch.no_grad()
    def _verify(self) -> bool:
        batch = model_inputs(self.batches[0])
        last = len(self.blocks) - 1
        want = _first_tensor(self.model(**batch))
        with self._answering(last, self._record(0, last - 1, answer=False)):
            got = _first_tensor(self.model(**batch))
        return want is not None and got is not None and want.shape == got.shape and \
            bool(torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max().clamp_min(1))))
