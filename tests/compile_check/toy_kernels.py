"""A tiny kernel for the compile harness tests (its shared memory grows with BLOCK through a tl.dot)."""
import triton
import triton.language as tl


@triton.jit
def toy_matmul(a, b, c, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs[:, None] < n
    x = tl.load(a + offs[:, None] * BLOCK + offs[None, :], mask=mask, other=0.0)
    y = tl.load(b + offs[:, None] * BLOCK + offs[None, :], mask=mask, other=0.0)
    tl.store(c + offs[:, None] * BLOCK + offs[None, :], tl.dot(x, y), mask=mask)
