"""``kernels``: the import name of sp-kernels' public API (the package itself is :mod:`sp_kernels`).

huggingface's ``kernels`` package uses the same import name; where it is installed, ``import sp_kernels`` is the
name that always means this package (see the README, "huggingface's kernels installed too").
"""
# sp-kernels alias: dispatch.packages.foreign_kernels() looks for this line to tell this file from another package's
from sp_kernels import *  # noqa: F401,F403
from sp_kernels import __all__, __version__  # noqa: F401
