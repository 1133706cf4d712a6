"""What the predictor derives from a kernel's FLOPs and bytes (hetpart.costmodel.kernel_shape)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hetpart.costmodel.kernel_shape import (
    one_thread, output_width, reduction_length, rows, scalar_flops, sort_work, streamed_bytes, weight_bytes,
)
from hetpart.costmodel.predictor import DEFAULT_FORM, FORMS, DeviceFacts, model_groups
from hetpart.costmodel.profile_db import KernelFeatures

F32 = 4


def dense(m: int, k: int, n: int, bias: bool, epilogue_flops: int = 0) -> KernelFeatures:
    """``[m, k] @ [k, n] (+ bias)`` with its weights bound as constants, as the importer reports it."""
    params = (k * n + (n if bias else 0)) * F32
    flops = 2 * m * k * n + (m * n if bias else 0) + epilogue_flops * m * n
    return KernelFeatures("matmul", ("relax.matmul",), "fused_matmul", flops, m * k * F32 + params, m * n * F32, params)


@settings(max_examples=200, deadline=None)
@given(m=st.integers(1, 512), k=st.integers(8, 2048), n=st.integers(1, 1024), bias=st.booleans(),
       epilogue=st.integers(0, 2))
def test_a_dense_layer_s_dims_are_recovered_from_its_counts(m, k, n, bias, epilogue):
    f = dense(m, k, n, bias, epilogue)
    assert k <= reduction_length(f) <= k + 2  # a fused epilogue adds a few FLOPs per output
    width = output_width(f)
    if epilogue == 0:  # a plain or biased dense layer: its counts determine N
        assert (width, rows(f)) == (n, m)
    else:
        # Counts alone can be ambiguous here (N*K = N'*(K+1)); whatever N is returned
        # must explain them: it divides the outputs and the weights hold N*K' values.
        assert width is not None and (m * n) % width == 0
        assert any((f.param_bytes // F32) % width == 0 and (f.param_bytes // F32) // width in (kk, kk + 1)
                   for kk in range(k - 65, k + 3))


def test_conv_output_channels_and_pixels():
    # 3x3 conv, 256 -> 256 channels on a 14x14 map, with bias: K = 256 * 9
    k, n, m = 256 * 9, 256, 14 * 14
    params = (n * k + n) * F32
    f = KernelFeatures("conv2d", ("relax.nn.conv2d",), "fused_conv2d", 2 * m * k * n + m * n,
                       256 * 16 * 16 * F32 + params, m * n * F32, params)
    assert (output_width(f), rows(f)) == (n, m)
    assert weight_bytes(f) == params and streamed_bytes(f) == f.bytes - params


def test_activation_by_activation_matmul_width():
    # Q @ K^T of one head: [128, 64] @ [64, 128] -> [128, 128]; both operands equal size
    f = KernelFeatures("matmul", ("relax.matmul",), "fused_matmul", 2 * 128 * 64 * 128, 2 * 128 * 64 * F32,
                       128 * 128 * F32, 0)
    assert output_width(f) == 128 and weight_bytes(f) == 0


def test_a_gather_streams_only_the_rows_it_reads():
    table = 1_000_000 * 64 * F32
    f = KernelFeatures("gather", ("relax.take",), "fused_take", 0, table + 32 * 8, 32 * 64 * F32, table)
    assert streamed_bytes(f) == 2 * 32 * 64 * F32
    assert weight_bytes(f) == 0 and reduction_length(f) == 0


def test_scalar_flops_only_where_the_lanes_do_not_divide_the_width():
    assert scalar_flops(dense(1, 2048, 1001, True), 16) > 0   # no power-of-two width divides 1001
    assert scalar_flops(dense(1, 2048, 1000, True), 16) == 0  # a 1000-class head: 8-lane vectors
    assert scalar_flops(dense(1, 2048, 1024, True), 16) == 0
    assert scalar_flops(dense(1, 2048, 1001, True), 0) == 0   # lanes unknown: no term


def test_small_kernels_stay_on_one_thread():
    assert one_thread(dense(1, 16, 16, False))
    assert not one_thread(dense(64, 512, 512, False))
    tiny = KernelFeatures("injective", ("relax.add",), "fused_add", 100, 800, 400, 0)
    assert one_thread(tiny)


def test_only_a_sort_has_sort_work_and_it_grows_as_n_log_n():
    def topk(n: int) -> KernelFeatures:
        return KernelFeatures("sort", ("topk",), "relax.topk", 0, n * F32, n // 4 * F32, 0)

    where = KernelFeatures("sort", ("less", "add", "where"), "fused_less_add_where", 256, 2048, 2048, 0)
    assert sort_work(where) == 0.0  # an index fix-up filed with the sorts: element-wise work only
    assert sort_work(topk(1024)) == 1024 * 10
    assert 8 < sort_work(topk(8192)) / sort_work(topk(1024)) < 8 * 14 / 10 + 1e-9
    cpu = FORMS[DEFAULT_FORM](topk(1024), DeviceFacts(simd_lanes=16))
    assert cpu[-1] == sort_work(topk(1024))  # the CPU form prices it in its own column


def test_device_facts_change_the_form_s_columns():
    f = dense(49, 4608, 512, True)
    gpu, cpu = FORMS[DEFAULT_FORM](f, DeviceFacts(gpu=True)), FORMS[DEFAULT_FORM](f, DeviceFacts(simd_lanes=16))
    assert gpu[-1] == reduction_length(f)  # the GPU's serial dot-product length
    assert len(cpu) != len(gpu)


def test_model_held_out_groups_partition_the_measured_kernels(tmp_path):
    from hetpart.costmodel import Profile, recorded_profiles

    paths = recorded_profiles()
    if not paths:
        import pytest

        pytest.skip("no recorded profile shipped")
    prof = Profile.load(paths[0])
    groups = model_groups(prof, "cuda")
    seen = [s for sigs in groups.values() for s in sigs]
    measured = {r.signature for r in prof.kernels["cuda"].values() if r.ok}
    assert set(seen) == measured
    assert "resnet50" in groups and not any(":" in g for g in groups)
