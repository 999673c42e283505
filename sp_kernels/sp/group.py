"""The sequence-parallel group a kernelized model runs in."""
from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class SPGroup:
    """``group`` (``None``: the default group), its ``size`` and this process's ``rank`` in it."""

    group: object
    size: int
    rank: int

    def __deepcopy__(self, memo):  # a copy of a kernelized model runs in the same process group
        return self

    def __reduce__(self):
        raise TypeError("a model kernelized with sp_size > 1 is bound to this process's rank and process group "
                        "and cannot be pickled: save its state_dict, or sp_kernels.unkernelize(model) first")


def resolve_group(sp_size: int, group=None) -> SPGroup:
    """Check that an initialized process group of exactly ``sp_size`` ranks exists; errors name the argument."""
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            f"sp_size: {sp_size} needs an initialized torch.distributed process group "
            "(torch.distributed.init_process_group) on every rank of the sequence-parallel group"
        )
    size = dist.get_world_size(group)
    if size != sp_size:
        which = "the default process group" if group is None else "group"
        raise ValueError(f"group: {which} has {size} ranks but sp_size={sp_size}; they must be equal")
    return SPGroup(group, size, dist.get_rank(group))
