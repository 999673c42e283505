"""Command line: ``python -m kernels {demo,explain}``."""
from __future__ import annotations

import argparse
import sys

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}


def _parser() -> argparse.ArgumentParser:
    from kernels.explain import ModelShape

    p = argparse.ArgumentParser(prog="python -m kernels", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="kernelize a tiny Qwen3.5 model and check parity")
    demo.add_argument("--device", default=None, help="torch device (default: cpu)")
    demo.add_argument("--sp-size", type=int, default=1, help="sequence-parallel ranks (local gloo processes)")

    ex = sub.add_parser("explain", help="show the implementation chosen per op and every rejection reason")
    ex.add_argument("--device", default="cpu", help="cpu, cuda, npu (a bare accelerator type is simulated when "
                    "absent: cuda -> sm90, npu -> Ascend910B3), or a profile such as npu:Ascend910B3")
    ex.add_argument("--arch", default=None, help="device model for a simulated profile, e.g. Ascend910B3, sm90")
    ex.add_argument("--sp-size", type=int, default=1)
    ex.add_argument("--ub-kib", type=int, default=None, help="simulate another Unified Buffer size (NPU)")
    ex.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    ex.add_argument("--packed", action="store_true", help="packed (varlen) batch")
    ex.add_argument("--inference", action="store_true", help="no backward needed")
    for f in ModelShape.__dataclass_fields__.values():
        ex.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default)
    return p


def _explain(args) -> int:
    from dispatch import resolve_profile
    from dispatch.devices import simulated
    from kernels.explain import ModelShape, explain, render

    device = args.device
    if args.arch:
        device = f"{args.device.split(':')[0]}:{args.arch}"
    elif device in ("cuda", "npu"):
        try:
            resolve_profile(device)
        except RuntimeError:
            device = simulated(device)
    shape = ModelShape(**{f: getattr(args, f) for f in ModelShape.__dataclass_fields__})
    selections = explain(device, sp_size=args.sp_size, ub_kib=args.ub_kib, dtype=_DTYPES[args.dtype], shape=shape, packed=args.packed,
                         mode="inference" if args.inference else "train")
    print(render(selections))
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            if args.sp_size > 1:
                from kernels.demo_sp import main as demo_sp

                return demo_sp(args.sp_size)
            from kernels.demo import main as demo

            return demo(args.device)
        return _explain(args)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
