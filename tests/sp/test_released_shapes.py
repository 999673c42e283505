"""The released Qwen3.5 / Qwen3-Next head counts and the sequence-parallel degrees each supports: derived by the
code (the checks kernelize makes), and the table in docs/sequence-parallel.md is exactly what the code derives."""
from pathlib import Path

from sp_kernels._contexts import sp_sizes

#: attention heads / KV heads / linear key heads / linear value heads, from the models' published configs
RELEASED = {
    "Qwen3.5-0.8B": (8, 2, 16, 16),
    "Qwen3.5-2B": (8, 2, 16, 16),
    "Qwen3.5-4B": (16, 4, 16, 32),
    "Qwen3.5-9B": (16, 4, 16, 32),
    "Qwen3.5-27B": (24, 4, 16, 48),
    "Qwen3.5-35B-A3B": (16, 2, 16, 32),
    "Qwen3.5-122B-A10B": (32, 2, 16, 64),
    "Qwen3.5-397B-A17B": (32, 2, 16, 64),
    "Qwen3-Next-80B-A3B": (16, 2, 16, 32),
}
DOC = Path(__file__).resolve().parents[2] / "docs" / "sequence-parallel.md"


def table() -> str:
    rows = ["| model | attention heads / KV heads | linear key / value heads | sp_size |", "|---|---|---|---|"]
    for name, (h, kv, lk, lv) in RELEASED.items():
        fits = sp_sizes(num_heads=h, num_kv_heads=kv, linear_num_key_heads=lk, linear_num_value_heads=lv)
        rows.append(f"| {name} | {h} / {kv} | {lk} / {lv} | {', '.join(map(str, fits))} |")
    return "\n".join(rows)


def test_sp_4_and_8_fit_every_released_model_whose_attention_heads_divide():
    """KV heads are copied where they divide sp_size; GatedDeltaNet runs context parallel where its heads do not:
    only the attention heads limit sp_size."""
    for name, (h, kv, lk, lv) in RELEASED.items():
        fits = sp_sizes(num_heads=h, num_kv_heads=kv, linear_num_key_heads=lk, linear_num_value_heads=lv)
        assert fits == tuple(n for n in (2, 4, 8, 16) if h % n == 0), name
        assert 4 in fits and (8 in fits) == (h % 8 == 0), name


def test_linear_heads_that_do_not_divide_run_context_parallel():
    assert sp_sizes(num_heads=16, num_kv_heads=2, linear_num_key_heads=2, linear_num_value_heads=6) == (2, 4, 8, 16)


def test_the_documented_table_is_what_the_code_derives():
    assert table() in DOC.read_text(), "docs/sequence-parallel.md: paste the table this test's table() renders:\n" + table()
