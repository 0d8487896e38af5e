"""What a computation allocates, op by op: the kit's memory evidence, immune to timing and RSS noise."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@dataclass(frozen=True)
class Allocation:
    op: str
    shape: tuple[int, ...]
    elements: int  # of the new storage (not the view's numel)
    nbytes: int


class AllocationRecorder(TorchDispatchMode):
    """Records every new tensor storage an aten op creates, forward and backward.

    Unlike timings or RSS this cannot be fooled by noise: it is the list of buffers the computation asked
    for. An output that shares storage with one of the op's inputs (a view) is not an allocation.

        with AllocationRecorder() as rec:
            attn(q, k, v, causal=True).sum().backward()
        assert rec.largest.elements < n * n // 2
    """

    def __init__(self) -> None:
        super().__init__()
        self.allocations: list[Allocation] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_storage_ptr(t) for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and _storage_ptr(t) not in inputs:
                nbytes = t.untyped_storage().nbytes()
                self.allocations.append(Allocation(str(func), tuple(t.shape), nbytes // t.element_size(), nbytes))
        return out

    @property
    def total_elements(self) -> int:
        """Elements of every storage allocated: work that scales like n² shows here even in small pieces."""
        return sum(a.elements for a in self.allocations)

    @property
    def largest(self) -> Allocation:
        if not self.allocations:
            raise ValueError("nothing was recorded")
        return max(self.allocations, key=lambda a: a.elements)


def _storage_ptr(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()
