"""torch.compile: a kernelized model compiles with fullgraph=True (training and inference), packed batches too."""
import copy
import inspect

import pytest
import torch

import sp_kernels
from tests.kernelize.models import build

FAMILIES = [("qwen3_5", torch.float64), ("qwen3_5_moe", torch.float32), ("qwen3_next", torch.float32)]
# inductor fuses transformers' float32 RMSNorm differently from eager: float32 roundings, even in a float64 model
TOL = {torch.float64: 5e-5, torch.float32: 2e-4}


def graph_breaks(model, **batch) -> tuple[int, list[str]]:
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(**batch)
    return explained.graph_break_count, [str(r.reason).splitlines()[0] for r in explained.break_reasons]


def skip_if_transformers_itself_does_not_compile(family, dtype, ids):
    """Older transformers' MoE experts (their grouped-mm fallback backward) do not compile on CPU, patched or not."""
    import transformers

    unpatched = build(family, dtype)
    torch._dynamo.reset()
    try:
        torch.compile(unpatched, fullgraph=True)(input_ids=ids, labels=ids).loss.backward()
    except torch._dynamo.exc.BackendCompilerFailed as exc:
        pytest.skip(f"transformers {transformers.__version__}'s own {family} does not compile here either: "
                    f"{str(exc).splitlines()[1][:120]}")


def packed_batch(flash_kwargs: bool) -> dict:
    lengths = [9, 1, 30, 5]
    ids = torch.randint(0, 96, (1, sum(lengths)))
    batch = dict(input_ids=ids, labels=ids, position_ids=torch.cat([torch.arange(n) for n in lengths])[None])
    if flash_kwargs:  # DataCollatorWithFlattening(return_flash_attn_kwargs=True)
        cu = torch.tensor([0, 9, 10, 40, 45], dtype=torch.int32)
        batch.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=30, max_length_k=30)
    return batch


@pytest.mark.parametrize("family,dtype", FAMILIES)
def test_a_kernelized_model_compiles_fullgraph_and_trains_as_eager(family, dtype):
    eager = build(family, dtype)
    sp_kernels.kernelize(eager)
    compiled = copy.deepcopy(eager)
    ids = torch.randint(0, 96, (2, 45))
    assert graph_breaks(compiled, input_ids=ids, labels=ids) == (0, [])
    torch._dynamo.reset()
    fn = torch.compile(compiled, fullgraph=True)
    try:
        out = fn(input_ids=ids, labels=ids)
        out.loss.backward()
    except torch._dynamo.exc.BackendCompilerFailed:
        skip_if_transformers_itself_does_not_compile(family, dtype, ids)
        raise
    ref = eager(input_ids=ids, labels=ids)
    ref.loss.backward()
    tol = TOL[dtype]
    torch.testing.assert_close(out.logits, ref.logits, rtol=tol, atol=tol)
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")
    with torch.no_grad():  # inference through the same compiled module
        torch.testing.assert_close(fn(input_ids=ids).logits, eager(input_ids=ids).logits, rtol=tol, atol=tol)


def test_a_compiled_step_runs_each_forward_once_and_a_packed_one_recomputes():
    """Ordinary batches: each op's node returns its implementation's residuals and its backward runs on them
    (``<op>_saving``). Packed ones: the shapes follow the boundaries, the backward recomputes the forward (rotary,
    per token, takes no boundaries)."""
    from sp_kernels._library import FORWARD_RUNS
    from sp_kernels.dispatch import OPS

    model = build("qwen3_5")
    sp_kernels.kernelize(model)
    fn = torch.compile(model, fullgraph=True, backend="aot_eager")
    ids = torch.randint(0, 96, (2, 45))
    for batch, packed in ((dict(input_ids=ids, labels=ids), False), (packed_batch(flash_kwargs=True), True)):
        torch._dynamo.reset()
        fn(**batch).loss.backward()  # compiles
        FORWARD_RUNS.clear()
        fn(**batch).loss.backward()
        runs = {op: 2 * (2 if packed and op != "apply_rotary_pos_emb" else 1) for op in OPS}  # 2 layers each
        assert dict(FORWARD_RUNS) == runs, dict(FORWARD_RUNS)


def test_an_attention_mask_of_ones_compiles_fullgraph():
    model = build("qwen3_5", torch.float32)
    sp_kernels.kernelize(model)
    ids = torch.randint(0, 96, (2, 21))
    mask = torch.ones_like(ids)
    assert graph_breaks(model, input_ids=ids, attention_mask=mask, labels=ids) == (0, [])
    mask[1, 15:] = 0  # padding: transformers' masked attention, as in eager
    torch._dynamo.reset()
    out = torch.compile(model, fullgraph=True)(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(out, model(input_ids=ids, attention_mask=mask).logits, rtol=2e-4, atol=2e-4)


def test_packed_with_flash_kwargs_compiles_without_a_break_and_equals_eager():
    model = build("qwen3_5")
    sp_kernels.kernelize(model)
    batch = packed_batch(flash_kwargs=True)
    assert graph_breaks(model, **batch) == (0, [])
    torch._dynamo.reset()
    out = torch.compile(model, fullgraph=True)(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = model(**batch)
    ref.loss.backward()
    torch.testing.assert_close(out.logits, ref.logits, rtol=5e-5, atol=5e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=5e-5, atol=5e-5, msg=name)


def test_packed_detection_from_position_ids_costs_one_break_point():
    model = build("qwen3_5")
    sp_kernels.kernelize(model)
    count, reasons = graph_breaks(model, **packed_batch(flash_kwargs=False))
    # one point (the detection, torch.compiler.disable'd), inside the text model called by the causal LM: dynamo
    # counts it in both frames
    assert count == 2 and reasons == [], reasons


def test_the_public_ops_compile_fullgraph_with_cu_seqlens():
    gen = torch.Generator().manual_seed(0)
    cu = torch.tensor([0, 3, 4, 11])
    q, k = (torch.randn(1, 11, 2, 8, generator=gen).requires_grad_() for _ in range(2))
    v = torch.randn(1, 11, 2, 8, generator=gen).requires_grad_()
    g = -torch.rand(1, 11, 2, generator=gen)
    beta = torch.rand(1, 11, 2, generator=gen)
    x, w = torch.randn(1, 11, 6, generator=gen).requires_grad_(), torch.randn(6, 4, generator=gen)

    def step(q, k, v, x):
        o, state = sp_kernels.chunk_gated_delta_rule(q, k, v, g, beta, output_final_state=True, cu_seqlens=cu,
                                                  use_qk_l2norm_in_kernel=True)
        y, _ = sp_kernels.causal_conv1d(x, w, activation="silu", cu_seqlens=cu)
        a = sp_kernels.fusion_attention(q, k, v, cu_seqlens=cu)
        return o.sum() + state.sum() + y.sum() + a.sum()

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(q, k, v, x), (q, k, v, x))
    want = torch.autograd.grad(step(q, k, v, x), (q, k, v, x))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_decode_steps_compile_and_equal_eager():
    """Decoding through a cache under torch.compile (as transformers' generate compiles a forward): the decode
    step's in-place eager path and the compiled graph (the ops' custom ops, no in-place state) give the same logits
    and leave the same states in their caches."""
    model = build("qwen3_5", torch.float32, use_cache=True)
    sp_kernels.kernelize(model, mode="inference")
    ids, nxt = torch.randint(0, 96, (2, 6)), torch.randint(0, 96, (2, 1))
    cache = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with torch.no_grad():
        eager_cache = getattr(model(input_ids=ids, use_cache=True), cache)
        compiled_cache = copy.deepcopy(eager_cache)
        for _ in range(3):  # the second step recompiles (the attention cache grows), then the graph is dynamic
            want = model(input_ids=nxt, use_cache=True, **{cache: eager_cache}).logits
            got = compiled(input_ids=nxt, use_cache=True, **{cache: compiled_cache}).logits
            torch.testing.assert_close(got, want, rtol=TOL[torch.float32], atol=TOL[torch.float32])
            nxt = want[:, -1:].argmax(-1)
    for i, layer in enumerate(model.model.layers):
        if hasattr(layer, "linear_attn"):
            torch.testing.assert_close(compiled_cache.get_recurrent_state(i), eager_cache.get_recurrent_state(i),
                                       rtol=TOL[torch.float32], atol=TOL[torch.float32])
