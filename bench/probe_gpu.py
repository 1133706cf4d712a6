"""Check the GPU machine: packed TVM loads, sees the GPU, compiles and runs a CUDA kernel."""
import os, platform, subprocess, sys, time

import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

print("python", sys.version.split()[0], "tvm", tvm.__version__, "cores", os.cpu_count())
from tvm.target import codegen
print("llvm cpu", codegen.llvm_get_system_cpu())
print("cuda exist", tvm.cuda(0).exist, "compute", tvm.cuda(0).compute_version if tvm.cuda(0).exist else None,
      "name", tvm.cuda(0).device_name if tvm.cuda(0).exist else None, "sms", tvm.cuda(0).multi_processor_count if tvm.cuda(0).exist else None)
try:
    import cuda.bindings, cuda.bindings.runtime as cudart
    print("cuda-bindings", cuda.bindings.__version__, cudart.cudaDriverGetVersion())
except Exception as e:
    print("cuda-bindings missing", e)
for m in ("tqdm", "torch", "onnxruntime", "torchvision", "transformers", "networkx", "onnx", "hypothesis"):
    try:
        mod = __import__(m); print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", e)

@tvm.script.ir_module
class Mod:
    @R.function
    def main(x: R.Tensor((1024, 1024), "float32"), y: R.Tensor((1024, 1024), "float32")):
        with R.dataflow():
            z = R.matmul(x, y)
            w = R.nn.relu(z)
            R.output(w)
        return w

sys.path.insert(0, os.getcwd())
from hetpart.targets import cpu_tvm_target, cuda_tvm_target
t0 = time.time()
ex = tvm.compile(Mod, cuda_tvm_target())
print("cuda compile s", round(time.time() - t0, 2))
dev = tvm.cuda(0)
vm = relax.VirtualMachine(ex, dev)
a = np.random.rand(1024, 1024).astype("float32"); b = np.random.rand(1024, 1024).astype("float32")
ta, tb = tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev)
out = vm["main"](ta, tb).numpy()
print("max err", float(np.abs(out - np.maximum(a @ b, 0)).max()))
r = vm.time_evaluator("main", dev, number=20, repeat=3)(ta, tb)
print("cuda matmul ms", r.median * 1e3)
print("cpu target", cpu_tvm_target())
