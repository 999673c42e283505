"""The sequence-parallel group a kernelized model runs in, and the data-parallel position of that group."""
from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

#: the name of the sequence-parallel dimension of a DeviceMesh (the one kernelize builds, or the caller's)
SP_DIM = "sp"


@dataclass(frozen=True)
class SPGroup:
    """``group`` (``None``: the default group), its ``size`` and this process's ``rank`` in it; ``dp_rank`` /
    ``dp_size``: which of the world's SP groups this one is and how many there are (what a data sampler needs),
    ``None`` when the caller gave a bare group whose siblings kernelize cannot see."""

    group: object
    size: int
    rank: int
    dp_rank: int | None = 0
    dp_size: int | None = 1

    def __deepcopy__(self, memo):  # a copy of a kernelized model runs in the same process group
        return self

    def __reduce__(self):
        raise TypeError("a model kernelized with sp_size > 1 is bound to this process's rank and process group "
                        "and cannot be pickled: save its state_dict, or sp_kernels.unkernelize(model) first")


def resolve_group(sp_size: int, group=None, device_type: str = "cpu") -> SPGroup:
    """The SP group of this rank; errors name the argument.

    ``group=None``: the default group when it has ``sp_size`` ranks, else contiguous groups of ``sp_size`` ranks
    (``[g * sp_size, (g + 1) * sp_size)``: a ``("dp", "sp")`` DeviceMesh over the world, built on ``device_type``).
    A DeviceMesh with a dimension named ``"sp"``: that dimension, the others data-parallel. A one-dimensional
    DeviceMesh or a process group: that group, of exactly ``sp_size`` ranks.
    """
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            f"sp_size: {sp_size} needs an initialized torch.distributed process group "
            "(torch.distributed.init_process_group) on every rank of the sequence-parallel group"
        )
    if group is None:
        world = dist.get_world_size()
        if world == sp_size:
            return SPGroup(None, sp_size, dist.get_rank())
        if world % sp_size:
            raise ValueError(f"sp_size: the default process group has {world} ranks, not a multiple of "
                             f"sp_size={sp_size} (pass group= for another layout)")
        group = init_device_mesh(device_type, (world // sp_size, sp_size), mesh_dim_names=("dp", SP_DIM))
    if isinstance(group, DeviceMesh):
        return _from_mesh(group, sp_size)
    size = dist.get_world_size(group)
    if size != sp_size:
        raise ValueError(f"group: it has {size} ranks but sp_size={sp_size}; they must be equal")
    return SPGroup(group, size, dist.get_rank(group), None, None)


def _from_mesh(mesh, sp_size: int) -> SPGroup:
    names = mesh.mesh_dim_names or ()
    if mesh.ndim == 1:
        dim = 0
    elif SP_DIM in names:
        dim = names.index(SP_DIM)
    else:
        raise ValueError(f"group: a DeviceMesh of {mesh.ndim} dimensions needs one named {SP_DIM!r} (got "
                         f"{names or 'no names'}); or pass its sequence-parallel dimension, mesh[name]")
    if mesh.shape[dim] != sp_size:
        raise ValueError(f"group: the mesh's sequence-parallel dimension has {mesh.shape[dim]} ranks but "
                         f"sp_size={sp_size}; they must be equal")
    rank = mesh.get_local_rank(dim)
    if mesh.ndim == 1:  # a dimension cut from a larger mesh: its siblings are not visible here
        return SPGroup(mesh.get_group(0), sp_size, rank, None, None)
    coordinate = mesh.get_coordinate()
    dp_rank, dp_size = 0, 1
    for d, extent in enumerate(mesh.shape):
        if d != dim:
            dp_rank, dp_size = dp_rank * extent + coordinate[d], dp_size * extent
    return SPGroup(mesh.get_group(dim), sp_size, rank, dp_rank, dp_size)
