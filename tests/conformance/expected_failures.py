"""The reviewed list of onnx backend node tests hetpart is expected to fail, and why.

Each entry: test name -> (category, reason).  A listed test must fail with a typed
:class:`hetpart.HetpartError` (hetpart says it cannot run the model), or for category
``precision`` with a result just outside the test's tolerance; a listed test
that passes fails the run ("unexpected pass": take it off the list), and a listed
test that fails any other way (wrong result, internal error) fails the run too.

Categories: :data:`CATEGORIES`.  Only ``precision`` and ``nan`` entries may end as
wrong results; they are open bugs, listed so that a new one still fails the run.
"""

from __future__ import annotations

CATEGORIES = {
    "tvm-op": "TVM's importer has no converter for the op, and ONNX defines no function for it",
    "tvm-attr": "the importer has the op but not this attribute, mode or input form",
    "dtype": "an element type TVM does not support",
    "dynamic": "a shape that depends on input values, or an input that must be a constant",
    "type": "non-tensor values (sequences, optionals, maps)",
    "constant": "an output that is a constant once the input shapes are fixed",
    "training": "training-mode behaviour",
    "control-flow": "If/Loop/Scan: hetpart's kernel graph has no branches or loops",
    "tvm-compile": "TVM imports the op but fails to compile it (a typed CompileError)",
    "shape": "an input with a zero-size dim (an empty tensor) is read as a symbolic dim (a typed ShapeError)",
    "onnx-inference": "onnx's own strict shape inference rejects the model",
    "precision": "runs, but a result is just outside the test's tolerance (may be 'wrong')",
    "nan": "runs, but NaN handling differs from onnx's definition (may be 'wrong'; an open bug)",
}

EXPECTED_FAILURES: dict[str, tuple[str, str]] = {
    'test_adagrad': ('training', 'ai.onnx.preview.training.Adagrad: a training op TVM does not import'),
    'test_adam': ('training', 'ai.onnx.preview.training.Adam: a training op TVM does not import'),
    'test_affine_grid_2d': ('tvm-attr', "TVM's importer does not handle this form: Dynamic size of type <class 'tvm.ir.expr.Var'> is not supported"),
    'test_ai_onnx_ml_array_feature_extractor': ('tvm-op', "TVM's importer has no converter for ai.onnx.ml.ArrayFeatureExtractor"),
    'test_ai_onnx_ml_binarizer': ('tvm-op', "TVM's importer has no converter for ai.onnx.ml.Binarizer"),
    'test_ai_onnx_ml_label_encoder_string_int': ('tvm-op', "TVM's importer has no converter for ai.onnx.ml.LabelEncoder"),
    'test_ai_onnx_ml_tree_ensemble_set_membership': ('tvm-op', "TVM's importer has no converter for ai.onnx.ml.TreeEnsemble"),
    'test_attention_23_boolmask_fullymasked_row_nan_robustness': ('nan', "a fully masked row: onnx's function body gives 0 (checked with onnx.reference on the expanded model), hetpart's build gives NaN"),
    'test_basic_deform_conv_with_padding': ('tvm-op', "TVM's importer has no converter for DeformConv"),
    'test_bernoulli': ('tvm-op', "TVM's importer has no converter for RandomUniformLike"),
    'test_bitcast_2d_float32_to_int32': ('tvm-op', "TVM's importer has no converter for BitCast"),
    'test_blackmanwindow': ('dynamic', "a shape-deciding input is a graph input, not a constant (value-dependent shape): Range '#13': input 1 ('Periodic_Size_FP__1') is not a constant; the output's shape would depend on input value"),
    'test_cast_BFLOAT16_to_FLOAT': ('dtype', "an element type TVM does not support: BFLOAT16 'input': 'input' is bfloat16, an element type TVM does not support"),
    'test_castlike_BFLOAT16_to_FLOAT': ('shape', "a zero-size input dim is read as symbolic: input(s) with symbolic dims need a fixed shape: {'like': [0]}; pass e.g. --shape like=?"),
    'test_center_crop_pad_crop': ('dynamic', "a shape-deciding input is a graph input, not a constant (value-dependent shape): Slice '#11': input 1 ('start_dims__1') is not a constant; the output's shape would depend on input values, whi"),
    'test_col2im': ('tvm-op', "TVM's importer has no converter for Col2Im"),
    'test_compress_0': ('tvm-compile', "TVM fails to compile this form: partition 'p0_cpu' (cpu): TVM failed to compile the module for llvm: Check failed: (inp_ty->shape.has_value() "),
    'test_constant': ('constant', "the output is a constant once input shapes are fixed: Constant 'values': output 'values' is a constant once the input shapes are fixed; hetpart compiles only output"),
    'test_constant_pad': ('tvm-attr', "TVM's importer does not handle this form: 'Var' object has no attribute 'value'"),
    'test_convinteger_with_padding': ('tvm-op', "TVM's importer has no converter for ConvInteger"),
    'test_cosh': ('tvm-compile', "TVM 0.27's LLVM codegen has no intrinsic for cosh (CompileError naming tir_cosh)"),
    'test_cumprod_1d': ('tvm-op', "TVM's importer has no converter for CumProd"),
    'test_cumsum_1d': ('tvm-attr', "TVM's importer does not handle this form: CumSum with non-constant axis input is not supported yet. ONNX permits runtime axis tensors, but Relax/TE curr"),
    'test_det_2d': ('tvm-op', "TVM's importer has no converter for Det"),
    'test_dft': ('tvm-op', "TVM's importer has no converter for DFT"),
    'test_expand_dim_changed': ('dynamic', "a shape-deciding input is a graph input, not a constant (value-dependent shape): Expand '#0': input 1 ('new_shape') is not a constant; the output's shape would depend on input values, which h"),
    'test_eyelike_populate_off_main_diagonal': ('tvm-attr', "TVM's importer does not handle this form: dtype mismatch between input (int32) and attribute (1)"),
    'test_flexattention': ('tvm-op', "TVM's importer has no converter for ai.onnx.preview.FlexAttention"),
    'test_gru_batchwise': ('tvm-op', "TVM's importer has no converter for GRU"),
    'test_hammingwindow': ('dynamic', "a shape-deciding input is a graph input, not a constant (value-dependent shape): Range '#13': input 1 ('Periodic_Size_FP__1') is not a constant; the output's shape would depend on input value"),
    'test_hannwindow': ('dynamic', "a shape-deciding input is a graph input, not a constant (value-dependent shape): Range '#13': input 1 ('Periodic_Size_FP__1') is not a constant; the output's shape would depend on input value"),
    'test_if': ('control-flow', "control flow (If/Loop/Scan): If '#0': control flow; hetpart's kernel graph has no branches or loops"),
    'test_image_decoder_decode_bmp_rgb': ('tvm-op', "TVM's importer has no converter for ImageDecoder"),
    'test_l1normalization_axis_0': ('tvm-op', "TVM's importer has no converter for LpNormalization"),
    'test_linear_attention_decode_step': ('tvm-op', "TVM's importer has no converter for Scan"),
    'test_loop11': ('tvm-op', "TVM's importer has no converter for Loop"),
    'test_lstm_batchwise': ('tvm-op', "TVM's importer has no converter for LSTM"),
    'test_maxunpool_export_with_output_shape': ('tvm-attr', "TVM's importer does not handle this form: 'Var' object has no attribute 'tolist'"),
    'test_melweightmatrix': ('tvm-op', "TVM's importer has no converter for MelWeightMatrix"),
    'test_mish': ('precision', '1 of 10000 elements off by 5.8e-7 absolute (1.3e-3 relative, tolerance 1e-3 + 1e-7) near x = 0'),
    'test_momentum': ('training', 'ai.onnx.preview.training.Momentum: a training op TVM does not import'),
    'test_mvn': ('onnx-inference', "onnx's strict shape inference rejects MeanVarianceNormalization's own function body (a Constant with no value) at opset 13"),
    'test_nonmaxsuppression_center_point_box_format': ('dynamic', "a shape-deciding input is a graph input, not a constant (value-dependent shape): NonMaxSuppression '#0': input 2 ('max_output_boxes_per_class') is not a constant; the output's shape would dep"),
    'test_onehot_negative_indices': ('tvm-attr', "TVM's importer does not handle this form: Only constant depth currently supported."),
    'test_optional_get_element_optional_sequence': ('type', "non-tensor inputs/outputs (sequence/optional/map): optional_type 'optional_input': 'optional_input' is a optional_type; hetpart runs tensors only; sequence_type "),
    'test_optional_has_element_empty_no_input_name_optional_input': ('constant', "the output is a constant once input shapes are fixed: OptionalHasElement 'output': output 'output' is a constant once the input shapes are fixed; hetpart compiles o"),
    'test_qlinearconv': ('tvm-op', "TVM's importer has no converter for QLinearConv"),
    'test_qlinearmatmul_2D_int8_float16': ('tvm-op', "TVM's importer has no converter for QLinearMatMul"),
    'test_range_bfloat16_type_positive_delta': ('dtype', "an element type TVM does not support: BFLOAT16 'start': 'start' is bfloat16, an element type TVM does not support; BFLOAT16 'limit': 'limit' is bflo"),
    'test_reduce_l1_default_axes_keepdims_example': ('shape', "a zero-size input dim is read as symbolic: input(s) with symbolic dims need a fixed shape: {'axes': [0]}; pass e.g. --shape axes=?"),
    'test_reduce_l2_default_axes_keepdims_example': ('shape', "a zero-size input dim is read as symbolic: input(s) with symbolic dims need a fixed shape: {'axes': [0]}; pass e.g. --shape axes=?"),
    'test_reduce_log_sum_asc_axes': ('tvm-attr', "TVM's importer does not handle this form: Only constant axes currently supported"),
    'test_reduce_log_sum_exp_default_axes_keepdims_example': ('shape', "a zero-size input dim is read as symbolic: input(s) with symbolic dims need a fixed shape: {'axes': [0]}; pass e.g. --shape axes=?"),
    'test_reduce_max_bool_inputs': ('tvm-attr', "TVM's importer does not handle this form: Only constant axes currently supported"),
    'test_reduce_mean_default_axes_keepdims_example': ('shape', "a zero-size input dim is read as symbolic: input(s) with symbolic dims need a fixed shape: {'axes': [0]}; pass e.g. --shape axes=?"),
    'test_reduce_min_bool_inputs': ('tvm-attr', "TVM's importer does not handle this form: Only constant axes currently supported"),
    'test_reduce_sum_default_axes_keepdims_example': ('shape', "a zero-size input dim is read as symbolic: input(s) with symbolic dims need a fixed shape: {'axes': [0]}; pass e.g. --shape axes=?"),
    'test_reduce_sum_square_default_axes_keepdims_example': ('shape', "a zero-size input dim is read as symbolic: input(s) with symbolic dims need a fixed shape: {'axes': [0]}; pass e.g. --shape axes=?"),
    'test_regex_full_match_basic': ('tvm-op', "TVM's importer has no converter for RegexFullMatch"),
    'test_reshape_allowzero_reordered': ('shape', "a zero-size input dim is read as symbolic: input(s) with symbolic dims need a fixed shape: {'data': [0, 3, 4]}; pass e.g. --shape data=?,3,4"),
    'test_resize_downsample_scales_cubic': ('tvm-attr', "TVM's importer does not handle this form: Type <class 'tvm.ir.expr.Var'> for scale is currently unsupported."),
    'test_reversesequence_batch': ('tvm-op', "TVM's importer has no converter for ReverseSequence"),
    'test_rnn_seq_length': ('tvm-op', "TVM's importer has no converter for RNN"),
    'test_scan9_multi_state': ('tvm-op', "TVM's importer has no converter for Scan"),
    'test_sequence_insert_at_back': ('type', "non-tensor inputs/outputs (sequence/optional/map): sequence_type 'sequence': 'sequence' is a sequence_type; hetpart runs tensors only; sequence_type 'output_sequ"),
    'test_sequence_map_add_1_sequence_1_tensor': ('type', 'sequence inputs (SequenceMap); hetpart runs tensors only'),
    'test_shape': ('constant', "the output is a constant once input shapes are fixed: Shape 'y': output 'y' is a constant once the input shapes are fixed; hetpart compiles only outputs computed fr"),
    'test_sinh': ('tvm-compile', "TVM 0.27's LLVM codegen has no intrinsic for sinh (CompileError naming tir_sinh)"),
    'test_size': ('constant', "the output is a constant once input shapes are fixed: Size 'y': output 'y' is a constant once the input shapes are fixed; hetpart compiles only outputs computed fro"),
    'test_slice': ('dynamic', "a shape-deciding input is a graph input, not a constant (value-dependent shape): Slice '#0': input 1 ('starts') is not a constant; the output's shape would depend on input values, which hetpa"),
    'test_split_to_sequence_1': ('type', "non-tensor inputs/outputs (sequence/optional/map): sequence_type 'seq': 'seq' is a sequence_type; hetpart runs tensors only"),
    'test_squeeze': ('tvm-compile', "TVM fails to compile this form: partition 'p0_cpu' (cpu): TVM failed to compile the module for llvm: Check failed: (inp_ty->shape.has_value() "),
    'test_stft': ('tvm-op', "TVM's importer has no converter for STFT"),
    'test_string_concat': ('tvm-op', "TVM's importer has no converter for StringConcat"),
    'test_string_split_basic': ('tvm-op', "TVM's importer has no converter for StringSplit"),
    'test_strnormalizer_export_monday_casesensintive_lower': ('tvm-op', "TVM's importer has no converter for StringNormalizer"),
    'test_tensorscatter': ('tvm-op', "TVM's importer has no converter for TensorScatter"),
    'test_tfidfvectorizer_tf_batch_onlybigrams_skip0': ('tvm-op', "TVM's importer has no converter for TfIdfVectorizer"),
    'test_top_k': ('tvm-attr', "TVM's importer does not handle this form: TopK k must be a constant"),
    'test_unique_bfloat16_sorted_without_axis': ('dtype', "an element type TVM does not support: BFLOAT16 'X': 'X' is bfloat16, an element type TVM does not support; BFLOAT16 'Y': 'Y' is bfloat16, an element"),
    'test_upsample_nearest': ('tvm-attr', "TVM's importer does not handle this form: object of type 'NoneType' has no len()"),
}

EXPECTED_FAILURES_CUDA: dict[str, tuple[str, str]] = {}
"""Extra entries for the CUDA path only (kernels the GPU build cannot handle)."""


def expected_for(device: str) -> dict[str, tuple[str, str]]:
    """The table for an ONNX backend device (``"CPU"`` or ``"CUDA"``)."""
    table = dict(EXPECTED_FAILURES)
    if device.upper().startswith("CUDA"):
        table.update(EXPECTED_FAILURES_CUDA)
    return table
