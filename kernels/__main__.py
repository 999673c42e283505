"""``python -m kernels``: the same command line as ``python -m sp_kernels``."""
import sys

from sp_kernels.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
