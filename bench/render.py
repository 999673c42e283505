"""Render pytest-benchmark JSON as a comparison table (Markdown) and a PNG plot.

    python bench/render.py bench/results/latest.json   # writes latest.md and latest.png beside it
    python bench/render.py bench/results/sp.json --sp-table   # also stores the GatedDeltaNet SP modes' times
                                                              # the SP mode rule reads (sp_kernels/_contexts.py)
"""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path


def load(path: Path):
    data = json.loads(path.read_text())
    ceil = data["machine_info"].get("sp_kernels_ceilings", {})
    rows, paired = [], []
    for b in data["benchmarks"]:
        extra = b.get("extra_info", {})
        if "sp" in extra:  # bench_sp: one case per sp_size, its numbers per rank
            paired.append(extra["sp"])
            continue
        if "sp_mode" in extra:  # bench_sp: GatedDeltaNet under SP, one case per (mode, sp_size, T)
            paired.append(extra["sp_mode"])
            continue
        if "compile" in extra:  # bench_compile: eager and compiled steps, paired
            paired.append({"kind": "compile", **extra["compile"]})
            continue
        if "model" in extra:  # bench_decode / bench_step: the model as users run it, ours and transformers'
            paired.append(extra["model"])
            continue
        if "paired" in extra or "paired_scaling" in extra:
            paired.append(extra.get("paired") or extra["paired_scaling"])
            continue
        params = b.get("params") or {}
        size = params.get("T") or (params.get("shape") or {}).get("T") or 0
        impl = params.get("impl") or params.get("how")
        best = b["stats"]["min"]  # best of the rounds: this machine's noise only ever adds time
        extra = b.get("extra_info", {})
        rows.append(dict(group=b["group"], impl=impl, T=size, seconds=best, peak=extra.get("peak_bytes"),
                         flops=extra.get("flops") or 0, bytes=extra.get("bytes") or 0,
                         first=extra.get("first_call_seconds")))
    return rows, paired, ceil, data["machine_info"].get("sp_kernels_device", "")


def _ratio(x: float) -> str:
    """``x`` = baseline time / our time."""
    return f"{x:.2f}x faster" if x >= 1 else f"{1 / x:.2f}x slower"


def model_table(models) -> list[str]:
    """Decode ms/token and the training step: ours vs transformers, alternated in one run, against the target."""
    out = []
    decode = [m for m in models if m["kind"] == "decode"]
    if decode:
        out += [f"### decoding: greedy generate with a cache, {decode[0]['T']}-token prompt, {decode[0]['new_tokens']} "
                f"new tokens (fp32; {decode[0]['rounds']} paired rounds, medians)", "",
                "| hidden | ours (ms/token) | transformers (ms/token) | ours / transformers | target | our ops free "
                "(/ transformers) | weights' floor (ms/token) | same tokens |", "|---|---|---|---|---|---|---|---|"]
        for m in decode:
            ratio = m["ratio"]
            out.append(f"| {m['hidden']} | {1e3 * m['ours_s']:.2f} | {1e3 * m['transformers_s']:.2f} | {ratio:.2f}x | "
                       f"<= {m['target']}x {'(met)' if ratio <= m['target'] else '(not met)'} | "
                       f"{m['ops_free_ratio']:.2f}x | "
                       f"{1e3 * m['weights_floor_s']:.2f} ({m['weights_bytes'] / 2**20:.0f} MB) | "
                       f"{'yes' if m['same_tokens'] else 'NO'} |")
        out.append("")
    compiled = [m for m in models if m["kind"] == "compile"]
    if compiled:
        out += [f"### torch.compile: training step fp32 fwd+bwd, Qwen3.5 4 layers hidden 256, fast decays "
                f"({compiled[0]['rounds']} paired rounds, medians; inductor, fullgraph=True)", "",
                "| T | ours eager (ms) | ours compiled (ms) | transformers eager (ms) | transformers compiled (ms) | "
                "ours compiled / ours eager | ours compiled / transformers compiled | first call, ours / "
                "transformers compiled (s) | forward runs per op in a compiled step (layers) |",
                "|---|---|---|---|---|---|---|---|---|"]
        for m in compiled:
            sec, first, t = m["seconds"], m["first_call_seconds"], m["targets"] or {}

            def against(key):
                verdict = "" if key not in t else f" (target <= {t[key]}x: {'met' if m[key] <= t[key] else 'not met'})"
                return f"{m[key]:.2f}x{verdict}"

            runs = ", ".join(f"{op} {n}" for op, n in sorted(m["forward_runs"].items()))
            out.append(f"| {m['T']} | {1e3 * sec['ours eager']:.0f} | {1e3 * sec['ours compiled']:.0f} | "
                       f"{1e3 * sec['transformers eager']:.0f} | {1e3 * sec['transformers compiled']:.0f} | "
                       f"{against('vs_eager')} | {against('vs_transformers_compiled')} | "
                       f"{first['ours compiled']:.1f} / {first['transformers compiled']:.1f} | {runs} "
                       f"({m['layers']}) |")
        out.append("")
    for m in (m for m in models if m["kind"] == "step"):
        ratio = m["speedup"]
        prof = m["profile"]
        out += [f"### training step: forward+backward with labels, hidden {m['hidden']}, T={m['T']} (fp32; "
                f"{m['rounds']} paired rounds, medians)", "", "| ours (s) | transformers (s) | speed-up | target |", "|---|---|---|---|",
                f"| {m['ours_s']:.2f} | {m['transformers_s']:.2f} | {ratio:.2f}x | >= {m['target']}x "
                f"{'(met)' if ratio >= m['target'] else '(not met)'} |", "",
                f"Split of one more kernelized step ({prof['total_s']:.2f} s): inside our autograd nodes "
                f"{prof['ours_s']:.2f} s, the rest (common to both) {prof['common_s']:.2f} s.", "",
                "| node | seconds |", "|---|---|"]
        out += [f"| {name} | {s:.3f} |" for name, s in sorted(prof["ours_by_node_s"].items())]
        out.append("")
    return out


def table(rows, paired, ceil) -> str:
    by_group = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    out = [f"Ceilings measured in the same run: {ceil.get('matmul_gflops')} GFLOP/s fp32 matmul, "
           f"{ceil.get('copy_gbps')} GB/s copy. Times are the best of each case's rounds.", ""]
    ratios = [p for p in paired if "ours_s" in p and "kind" not in p]
    scaling = [p for p in paired if "long_s" in p]
    sp = sorted((p for p in paired if "sp_size" in p and "mode" not in p), key=lambda p: p["sp_size"])
    modes = sorted((p for p in paired if "mode" in p), key=lambda p: (p["sp_size"], p["T"], p["mode"]))
    out += model_table([p for p in paired if "kind" in p])
    if modes:
        out += ["### GatedDeltaNet under sequence parallelism: Ulysses (heads) vs context parallelism (state passing)",
                "", "fp32, GatedDeltaNet layers only, gloo ranks on this machine; the largest rank's numbers.", "",
                "| sp_size | T | mode | bytes sent per rank per layer, forward (MB) | fwd+bwd (s) | "
                "peak memory growth per rank (MB) |", "|---|---|---|---|---|---|"]
        out += [f"| {p['sp_size']} | {p['T']} | {p['mode']} | {p['bytes_per_layer'] / 2**20:.2f} | "
                f"{p['seconds']:.2f} | {p['growth_bytes'] / 2**20:.0f} |" for p in modes]
        out.append("")
    if sp:
        one = next((p for p in sp if p["sp_size"] == 1), None)
        out += [f"### sequence parallel, fp32 forward+backward with labels, V={sp[0]['V']} T={sp[0]['T']} "
                "(gloo ranks on this machine; the largest rank's numbers)", "",
                "| sp_size | peak memory growth per rank (MB) | vs sp_size=1 | step time (s) | logits per rank | "
                "bytes sent per rank per forward: GatedDeltaNet layer / attention layer (MB) |",
                "|---|---|---|---|---|---|"]
        for p in sp:
            ratio = f"{p['growth_bytes'] / one['growth_bytes']:.2f}x" if one else ""
            per_layer = p["bytes_per_layer"]
            out.append(f"| {p['sp_size']} | {p['growth_bytes'] / 2**20:.0f} | {ratio} | {p['seconds']:.2f} | "
                       f"{p['logits']} | {per_layer['gated_deltanet'] / 2**20:.1f} / "
                       f"{per_layer['attention'] / 2**20:.1f} |")
        out.append("")
    if ratios:
        out += ["### paired fp32 fwd+bwd (ours and transformers alternated in one case, best of each)", "",
                "| op | impl | T | ours (ms) | transformers (ms) | ratio |", "|---|---|---|---|---|---|"]
        for p in ratios:
            out.append(f"| {p['op']} | {p['impl']} | {p['T']} | {1e3 * p['ours_s']:.2f} | "
                       f"{1e3 * p['transformers_s']:.2f} | {_ratio(p['transformers_s'] / p['ours_s'])} |")
        out.append("")
    if scaling:
        out += ["### paired scaling, fp32 fwd+bwd (both lengths alternated in one case, best of each)", "",
                "| op | impl | short T (ms) | long T (ms) | long / short |", "|---|---|---|---|---|"]
        for p in scaling:
            out.append(f"| {p['op']} | {p['impl']} | {p['short']}: {1e3 * p['short_s']:.2f} | {p['long']}: "
                       f"{1e3 * p['long_s']:.2f} | {p['long_s'] / p['short_s']:.2f}x for {p['long'] // p['short']}x "
                       f"the length |")
        out.append("")
    for group, items in by_group.items():
        base = {r["T"]: r["seconds"] for r in items if r["impl"] == "transformers"}
        first = any(r["first"] is not None for r in items)  # bench_compile: the first call compiles
        out += [f"### {group}", "", "| impl | T | time (ms) | vs transformers | roofline | peak memory (MB) |"
                + (" first call (s) |" if first else ""), "|---|---|---|---|---|---|" + ("---|" if first else "")]
        for r in sorted(items, key=lambda r: (r["impl"], r["T"])):
            ratio = _ratio(base[r["T"]] / r["seconds"]) if r["T"] in base and r["impl"] != "transformers" else ""
            roof = ""
            memory_bound = r["bytes"] and ceil.get("copy_gbps") and (
                not r["flops"] or r["flops"] / r["bytes"] * ceil["copy_gbps"] < ceil.get("matmul_gflops", 0))
            if r["flops"] and ceil.get("matmul_gflops") and not memory_bound:
                g = r["flops"] / r["seconds"] / 1e9
                roof = f"{g:.1f} GFLOP/s ({100 * g / ceil['matmul_gflops']:.0f}% of matmul)"
            elif r["bytes"] and ceil.get("copy_gbps"):
                g = r["bytes"] / r["seconds"] / 1e9
                roof = f"{g:.2f} GB/s ({100 * g / ceil['copy_gbps']:.0f}% of copy)"
            peak = f"{r['peak'] / 2**20:.1f}" if r["peak"] is not None else ""
            out.append(f"| {r['impl']} | {r['T']} | {1e3 * r['seconds']:.2f} | {ratio} | {roof} | {peak} |"
                       + (f" {r['first']:.1f} |" if first else ""))
        out.append("")
    return "\n".join(out)


def plot(rows, paired, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["group"] for r in rows})
    sp = sorted((p for p in paired if "sp_size" in p and "mode" not in p), key=lambda p: p["sp_size"])
    models = [p for p in paired if "kind" in p]
    paired = [p for p in paired if "ours_s" in p and "kind" not in p]
    panels = len(groups) + bool(paired) + bool(sp) + bool(models)
    cols = 2
    fig, axes = plt.subplots((panels + cols - 1) // cols, cols, figsize=(12, 3.2 * ((panels + 1) // 2)),
                             squeeze=False)
    if paired:  # first panel: the paired ratios
        ax = axes.flat[0]
        ratios = [p["transformers_s"] / p["ours_s"] for p in paired]
        ax.barh([f"{p['op']} ({p['impl']})" for p in paired], ratios)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("transformers time / our time (paired, fp32 fwd+bwd)")
        ax.set_title("speed-up over transformers' torch fallback", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3, axis="x")
    if sp:  # next panel: per-rank memory against sp_size
        ax = axes.flat[int(bool(paired))]
        ax.bar([str(p["sp_size"]) for p in sp], [p["growth_bytes"] / 2**20 for p in sp])
        ax.set_xlabel("sp_size")
        ax.set_ylabel("peak memory growth per rank (MB)")
        ax.set_title(f"sequence parallel fwd+bwd, V={sp[0]['V']} T={sp[0]['T']}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    if models:  # next panel: the model-level ratios against their targets
        ax = axes.flat[int(bool(paired)) + int(bool(sp))]
        labels = {"decode": lambda m: f"decode hidden {m['hidden']}", "step": lambda m: f"step T={m['T']}",
                  "compile": lambda m: f"compiled vs eager T={m['T']}"}
        speedups = {"decode": lambda m: 1 / m["ratio"], "step": lambda m: m["speedup"],
                    "compile": lambda m: 1 / m["vs_eager"]}
        targets = {"decode": lambda m: 1 / m["target"], "step": lambda m: m["target"],
                   "compile": lambda m: 1 / m["targets"]["vs_eager"] if m["targets"] else None}
        ax.barh([labels[m["kind"]](m) for m in models], [speedups[m["kind"]](m) for m in models])
        for i, m in enumerate(models):  # the target, as a speed-up
            target = targets[m["kind"]](m)
            if target is not None:
                ax.plot([target, target], [i - 0.4, i + 0.4], color="r", lw=1.5)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("baseline time / our time (transformers; compiled: ours eager) (red: target)")
        ax.set_title("model level: decode ms/token, training step", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    for ax, group in zip(list(axes.flat)[bool(paired) + bool(sp) + bool(models):], groups):
        series = defaultdict(list)
        for r in rows:
            if r["group"] == group:
                series[r["impl"]].append((r["T"], 1e3 * r["seconds"]))
        for impl, points in sorted(series.items()):
            points.sort()
            xs = [p[0] for p in points]
            ax.plot(xs if any(xs) else range(len(points)), [p[1] for p in points], marker="o", label=impl)
        ax.set_title(re.sub(r"\s+", " ", group), fontsize=9)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("ms")
        if all(p[0] for pts in series.values() for p in pts):
            ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def sp_table(path: Path, paired) -> Path:
    """Store the fwd+bwd seconds of both GatedDeltaNet SP modes of this run under its device type, beside the other
    device types' (``sp_kernels/dispatch/data/gated_deltanet_sp.json``)."""
    from sp_kernels import _contexts

    data = json.loads(path.read_text())
    info = data["machine_info"]
    device_type = info.get("sp_kernels_device_type") or info["sp_kernels_device"].split()[0]
    times = defaultdict(dict)
    for case in paired:
        if "mode" in case:
            times[case["sp_size"], case["T"]][case["mode"]] = case["seconds"]
    cases = [dict(sp_size=n, T=T, ulysses_s=round(t["ulysses"], 4), context_s=round(t["context"], 4))
             for (n, T), t in sorted(times.items()) if {"ulysses", "context"} <= t.keys()]
    if not cases:
        raise SystemExit(f"error: {path} has no case of both GatedDeltaNet SP modes (bench --op sp)")
    table = json.loads(_contexts.GDN_SP_MEASURED.read_text()) if _contexts.GDN_SP_MEASURED.exists() else {}
    commit = (data.get("commit_info") or {}).get("id", "")[:7]
    table[device_type] = dict(source=f"{path.name} of {data['datetime'][:10]} (commit {commit}): "
                                     f"{info.get('sp_kernels_device', device_type)}, gloo ranks", cases=cases)
    _contexts.GDN_SP_MEASURED.write_text(json.dumps(table, indent=1) + "\n")
    return _contexts.GDN_SP_MEASURED


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0])
    rows, paired, ceil, device = load(path)
    if "--sp-table" in argv[1:]:
        print(f"wrote {sp_table(path, paired)}")
    md = table(rows, paired, ceil)
    path.with_suffix(".md").write_text(md + "\n")
    plot(rows, paired, path.with_suffix(".png"), f"sp-kernels microbenchmarks on {device}")
    print(md)
    print(f"wrote {path.with_suffix('.md')} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
