"""Command line: ``python -m sp_kernels {demo,explain,ub,bench,compile-check,selftest} ...`` (``python -m sp_kernels
COMMAND -h`` lists a command's options). A bad option is one ``error:`` line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import sys

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}


class _Parser(argparse.ArgumentParser):
    """argparse's errors (unknown option, bad int, ...) as one line, exit code 2 (subcommand parsers too)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    from sp_kernels.dispatch import OPS
    from sp_kernels.bench import OPS as BENCH_OPS
    from sp_kernels.explain import ModelShape

    p = _Parser(prog="python -m sp_kernels", description=__doc__)
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
    ub = sub.add_parser("ub", help="Unified Buffer estimate of a Triton kernel configuration on an Ascend arch",
                        description="e.g. python -m sp_kernels ub --kernel fla.causal_conv1d_bwd_coregrid "
                                    "--arch Ascend910B3 --dtype bf16 --BT 64 --BD 64 --W 4")
    ub.add_argument("--list", action="store_true", help="list the kernels with a UB model")
    ub.add_argument("--kernel")
    ub.add_argument("--arch", default="Ascend910B3")
    ub.add_argument("--dtype", default="bf16")

    bench = sub.add_parser("bench", help="run the microbenchmarks (source checkout) and render table + plot")
    bench.add_argument("--op", choices=BENCH_OPS, default=None, help="one benchmark (default: all)")
    bench.add_argument("--quick", action="store_true", help="tiny shapes, one round: checks the benchmarks run")
    bench.add_argument("--out", default=None, help="JSON path (default bench/results/latest.json)")
    bench.add_argument("--targets", action="store_true",
                       help="only the cases of the README's table (fp32 fwd+bwd, T=2048 and the scaling sweep)")

    cc = sub.add_parser("compile-check", help="compile the kernel configurations the dispatcher can choose")
    cc.add_argument("--target", choices=("cuda", "ascend", "all"), default="all")
    cc.add_argument("--full", action="store_true", help="every chosen configuration (default: a bounded subset)")
    cc.add_argument("--calibration", action="store_true", help="also the fla UB calibration grid (Ascend)")
    cc.add_argument("--write", action="store_true", help="store the results in sp_kernels/dispatch/data/compile_table.json")
    cc.add_argument("--ascend-python", default=None, help="interpreter with triton-ascend + ascendnpu-ir")
    cc.add_argument("--arch", default="Ascend910B3")

    st = sub.add_parser("selftest", help="run every implementation this device can run against the float64 "
                        "references (forward, backward), with times vs the torch path; exit 1 on a mismatch")
    st.add_argument("--json", default=None, metavar="FILE", help="also write the report (device, rows, verdict)")
    st.add_argument("--device", default=None, help="a device that is here: cpu, cuda, cuda:1, npu, ... (default: the "
                    "GPU or NPU if there is one, else the CPU)")
    st.add_argument("--op", action="append", choices=OPS, default=None, help="only this op (repeatable)")
    st.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    return p


def _ub(args, extra: list[str]) -> int:
    from sp_kernels.dispatch import ub

    if args.list:
        print("\n".join(ub.kernels()))
        return 0
    if not args.kernel:
        raise ValueError("kernel: give --kernel NAME (see --list)")
    tile = {}
    it = iter(extra)
    for flag in it:
        value = next(it, None)
        if not flag.startswith("--") or value is None:
            raise ValueError(f"tile: expected --NAME INT pairs, got {flag!r}")
        try:
            tile[flag[2:]] = int(value)
        except ValueError:
            raise ValueError(f"{flag[2:]}: expected an int, got {value!r}") from None
    print(ub.estimate(args.kernel, arch=args.arch, dtype=args.dtype, **tile))
    return 0


def _profile(device: str):
    """``resolve_profile``, with a device that is not here (or that torch does not know) as a ValueError."""
    from sp_kernels.dispatch import resolve_profile

    try:
        return resolve_profile(device)
    except RuntimeError as exc:  # "device: ... requested but no ... is available", or torch cannot parse it
        msg = str(exc)
        if not msg.startswith("device:"):
            why = "the npu device type needs torch_npu" if device.startswith("npu") else msg
            msg = f"device: torch does not know {device!r} here ({why})"
        raise ValueError(msg) from None


def _demo(args) -> int:
    from sp_kernels._checks import positive_int

    if positive_int("sp_size", args.sp_size) > 1:
        if args.device not in (None, "cpu"):
            raise ValueError(f"device: the sequence-parallel demo runs on CPU processes (gloo), not {args.device!r}")
        from sp_kernels.demo_sp import main as demo_sp

        return demo_sp(args.sp_size)
    if args.device is not None and _profile(args.device).simulated:
        raise ValueError(f"device: {args.device!r} is a simulated profile (for explain); the demo needs a real device")
    from sp_kernels.demo import main as demo

    return demo(args.device)


def _explain(args) -> int:
    from sp_kernels.dispatch.devices import simulated
    from sp_kernels.explain import ModelShape, explain, render

    if args.arch:
        device = _profile(f"{args.device.split(':')[0]}:{args.arch}")
    elif args.device in ("cuda", "npu"):  # a bare accelerator type that is not here is simulated
        try:
            device = _profile(args.device)
        except ValueError:
            device = simulated(args.device)
    else:
        device = _profile(args.device)
    shape = ModelShape(**{f: getattr(args, f) for f in ModelShape.__dataclass_fields__})
    selections = explain(device, sp_size=args.sp_size, ub_kib=args.ub_kib, dtype=_DTYPES[args.dtype], shape=shape, packed=args.packed,
                         mode="inference" if args.inference else "train")
    print(render(selections))
    return 0


def _selftest(args) -> int:
    import os

    from sp_kernels import selftest

    device = None
    if args.device is not None:
        profile = _profile(args.device)
        if profile.simulated:
            raise ValueError(f"device: {args.device!r} is a simulated profile (for explain); the self-test needs a "
                             "real device")
        device = args.device
    if args.json is not None:
        folder = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json) or not os.path.isdir(folder):
            raise ValueError(f"json: cannot write {args.json!r} (not a file in an existing directory)")
    return selftest.run(device, ops=args.op, json_path=args.json, seed=args.seed)


def main(argv=None) -> int:
    args, extra = _parser().parse_known_args(argv)
    if extra and args.command != "ub":
        _parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "ub":
            return _ub(args, extra)
        if args.command == "bench":
            from sp_kernels.bench import main as bench

            return bench(args.op, quick=args.quick, out=args.out, targets=args.targets)
        if args.command == "compile-check":
            from sp_kernels.compile_check.run import main as compile_check

            return compile_check(args.target, full=args.full, write=args.write, ascend_python=args.ascend_python,
                                 arch=args.arch, calibration=args.calibration)
        if args.command == "demo":
            return _demo(args)
        if args.command == "selftest":
            return _selftest(args)
        return _explain(args)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
