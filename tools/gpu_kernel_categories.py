"""Kernel categories shared by the GPU kernel tools (``gpu_static_kernels.py``,
``gpu_kernel_profile.py``): one vocabulary for hetpart's fused kernels and for
PyTorch's modules, so per-category times of the two can stand side by side.

Categories (:data:`CATEGORIES`): ``depthwise conv`` (kxk, one input channel per
group), ``pointwise conv`` (1x1 on an image), ``conv`` (any other convolution: stems,
grouped, downsampling), ``squeeze-excite`` (everything of an SE block: its global
pool, its two FCs on a 1x1 image, its gate), ``pool`` (other pooling / global means),
``norm`` (batch/layer norms), ``matmul`` (linear layers, attention products),
``softmax``, ``elementwise`` (everything else: activations, adds, transposes,
copies).

hetpart's side is read from the fused kernel's ops, its convolution weight's shape
and its input image's shape; PyTorch's side from the module a kernel was launched in
(:func:`torch_category`): a conv-norm-activation group (torchvision's
``Conv2dNormActivation``) counts its norm and activation with its convolution, as
hetpart fuses them (the ONNX export folds the batch norm into the weights), and an
SE block counts everything inside it.
"""

from __future__ import annotations

import re

CATEGORIES = ("depthwise conv", "pointwise conv", "conv", "squeeze-excite", "pool", "norm",
              "matmul", "softmax", "elementwise")

_POOL_OPS = ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mean")
_NORM_OPS = ("layer_norm", "batch_norm", "group_norm", "rms_norm", "instance_norm")
_MATMUL_OPS = ("matmul", "dense", "linear")


def conv_category(weight_shape, in_shape) -> str:
    """``depthwise conv``, ``squeeze-excite`` (a 1x1 conv of a 1x1 image: an SE FC),
    ``pointwise conv`` or ``conv`` for an NCHW convolution with OIHW ``weight_shape``
    reading an input of ``in_shape``."""
    oc, icg, kh, kw = (int(d) for d in weight_shape)
    if icg == 1 and kh * kw > 1:
        return "depthwise conv"
    if kh == kw == 1:
        return "squeeze-excite" if tuple(int(d) for d in in_shape[2:]) == (1, 1) else "pointwise conv"
    return "conv"


def is_se_gate(ops, input_shapes) -> bool:
    """An element-wise kernel that multiplies an image by a per-channel ``[N, C, 1, 1]``
    tensor: squeeze-excite's gate (a ``multiply`` with one 4-d input whose image is 1x1
    and another whose image is larger)."""
    if "multiply" not in ops:
        return False
    four = [tuple(int(d) for d in s) for s in input_shapes if len(s) == 4]
    return any(s[2:] == (1, 1) for s in four) and any(s[2] * s[3] > 1 for s in four)


def hetpart_category(ops, op_class: str, input_shapes, weight_shapes, se_pool: bool = False) -> str:
    """The category of one of hetpart's fused kernels.

    ``ops``: its TVM op names (anchor first); ``op_class``: the op graph's class;
    ``input_shapes``: the shapes of its tensor inputs (activations, in order);
    ``weight_shapes``: the shapes of its constant arguments; ``se_pool``: the kernel
    is a global mean whose result feeds a squeeze-excite FC (the caller knows the
    graph).  A convolution's category wins over what is fused after it (a 1x1 SE FC
    fused with its sigmoid and gate multiply is ``squeeze-excite``)."""
    ops = tuple(ops)
    weights4 = [w for w in weight_shapes if len(w) == 4]
    if "conv2d" in ops and weights4 and input_shapes:
        return conv_category(weights4[0], input_shapes[0])
    if "conv2d" in ops:
        return "conv"
    if se_pool:
        return "squeeze-excite"
    if any(o in ops for o in _NORM_OPS) or op_class == "norm":
        return "norm"
    if op_class == "softmax" or "softmax" in ops:
        return "softmax"
    if op_class == "matmul" or any(o in ops for o in _MATMUL_OPS):
        return "matmul"
    if op_class in ("pool", "reduce") or any(o in ops for o in _POOL_OPS):
        return "pool"
    if is_se_gate(ops, input_shapes):
        return "squeeze-excite"
    return "elementwise"


# --- PyTorch modules ------------------------------------------------------------------------
STICKY = ("SqueezeExcitation", "Conv2dNormActivation", "ConvNormActivation", "ConvBNActivation")
"""Module classes whose every kernel takes the group's category (outermost wins)."""

_TORCH_NORMS = ("BatchNorm2d", "BatchNorm1d", "LayerNorm", "LayerNorm2d", "GroupNorm")
_TORCH_POOLS = ("AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d", "AdaptiveMaxPool2d")


def feeds_se(graph, kernel) -> bool:
    """A global mean of ``kernel`` (a fused kernel of hetpart's ``OpGraph``) whose output
    feeds a 1x1 convolution of a 1x1 image: squeeze-excite's pool (``se_pool`` of
    :func:`hetpart_category`)."""
    if "mean" not in kernel.ops:
        return False
    outs = [graph.tensors[t].shape for t in kernel.outputs]
    if not outs or len(outs[0]) != 4 or tuple(outs[0][2:]) != (1, 1):
        return False
    return any("conv2d" in graph.kernel(s).ops for s in graph.successors(kernel.id))


def torch_module_category(cls_name: str, conv_weight_shape=None, conv_in_shape=None) -> str:
    """The category of a kernel launched directly in a module of class ``cls_name``;
    for a ``Conv2d`` (or a conv-norm-activation group) pass its weight's and input's
    shapes."""
    if cls_name == "SqueezeExcitation":
        return "squeeze-excite"
    if cls_name in ("Conv2d",) + STICKY[1:]:
        if conv_weight_shape is None or conv_in_shape is None:
            return "conv"
        return conv_category(conv_weight_shape, conv_in_shape)
    if cls_name in _TORCH_NORMS:
        return "norm"
    if cls_name in _TORCH_POOLS:
        return "pool"
    if cls_name in ("Linear", "NonDynamicallyQuantizableLinear"):
        return "matmul"
    if cls_name == "Softmax":
        return "softmax"
    if "Attention" in cls_name:  # torch's MultiheadAttention, transformers' *Attention: the products
        return "matmul"
    return "elementwise"


def torch_category(chain) -> str:
    """The category of a kernel launched inside the module ``chain`` (outermost first;
    each entry ``(class name, category)`` as :func:`torch_module_category` gave it):
    the outermost sticky group's (:data:`STICKY`), else the innermost module's, else
    ``elementwise`` (a kernel outside every labelled module)."""
    for cls_name, category in chain:
        if cls_name in STICKY:
            return category
    return chain[-1][1] if chain else "elementwise"


def torch_kernel_category(kernel_name: str) -> str | None:
    """A category read from a CUDA kernel's own name where it says it unambiguously
    (cuDNN/PyTorch depthwise, softmax, layer-norm kernels), else None: used only for
    kernels no labelled module encloses."""
    name = kernel_name.lower()
    if "depthwise" in name or "dwconv" in name:
        return "depthwise conv"
    if "softmax" in name:
        return "softmax"
    if "layer_norm" in name or "layernorm" in name or "batch_norm" in name or "bn_fw" in name:
        return "norm"
    if "gemm" in name or "gemv" in name or "sgemm" in name or "cutlass" in name:
        return "matmul"
    return None


# --- CUDA kernel names --------------------------------------------------------------------------
def kernel_name_pattern(func: str) -> str:
    """The regular expression of the CUDA kernels TVM names after PrimFunc ``func``:
    ``<func>_kernel``, ``<func>_kernel_1`` / ``<func>_kernel1`` for a function of several
    kernels, ``<func>_prepacked_kernel*`` once :mod:`hetpart.kernels.weight_prepack` has
    split the weight packing off (``extern "C"``: CUPTI reports them unmangled)."""
    return re.escape(func) + r"(_prepacked)?_kernel(_?\d+)?"


def function_of_kernel(kernel_name: str, funcs) -> str | None:
    """The PrimFunc of ``funcs`` a CUDA kernel named ``kernel_name`` belongs to, else
    None (a kernel of another library, or a TVM builtin).  Exact: ``mean1_kernel`` is
    ``mean1``'s, never ``mean``'s; where two names match (``f`` and ``f_kernel``), the
    longer function wins."""
    found = [f for f in funcs if kernel_name == f or re.fullmatch(kernel_name_pattern(f), kernel_name)]
    return max(found, key=len) if found else None
