"""TF32 tensor-core tiles compared on single GEMMs and convolutions (GPU machine).

    PYTHONPATH=. python3 bench/tensor_core_tiles.py

For each tile (warps_m,warps_n,frags_m,frags_n,k_frags of
:class:`hetpart.kernels.rules.gpu_tensor_core.Tile`), in its own process with the
rule's tile lists replaced by that one tile, builds BERT-base batch-32 matmuls and
ResNet-50 batch-32 convolutions (+ bias/relu epilogue) with hetpart's CUDA rules
and prints median ms and TFLOP/s; then PyTorch's matmuls (float32 and TF32) and
TF32 convolutions of the same shapes.  A shape whose grid the tile cannot fill is
left to the other rules (the CUDA-core implicit GEMM), as in a real build.  The
results of 2026-11-30 are in bench/results/nvidia-h200.md (section 0c).
"""
import json
import subprocess
import sys
import time
CFGS = ["2,4,2,2,4", "2,2,4,4,4", "2,4,4,2,4", "2,4,2,2,8", "2,2,2,2,4"]
if len(sys.argv) > 2 and sys.argv[1] == "one":
    import numpy as np, tvm
    from hetpart.kernels.rules import gpu_tensor_core as gtc
    gtc.MATMUL_TILES = gtc.CONV_TILES = (gtc.Tile(*(int(v) for v in sys.argv[2].split(","))),)
    from tvm import relax
    from hetpart import kernels, targets
    from hetpart.importer.fusion import fuse
    op = relax.op
    def mm(m, k, n):
        rng = np.random.default_rng(0); w = (rng.standard_normal((k, n))*0.05).astype("float32")
        x = relax.Var("x", relax.TensorType((m, k), "float32")); bb = relax.BlockBuilder()
        with bb.function("main", [x]):
            with bb.dataflow():
                out = bb.emit_output(bb.emit(op.add(bb.emit(op.matmul(x, relax.const(w))), relax.const(np.ones(n, "float32")))))
            bb.emit_func_output(out)
        return fuse(bb.get()), [(m, k)], 2*m*k*n
    def conv(b, c, s, o, k, st=1):
        rng = np.random.default_rng(0); w = (rng.standard_normal((o, c, k, k))*0.05).astype("float32")
        x = relax.Var("x", relax.TensorType((b, c, s, s), "float32")); bb = relax.BlockBuilder()
        with bb.function("main", [x]):
            with bb.dataflow():
                out = bb.emit_output(bb.emit(op.nn.relu(bb.emit(op.nn.conv2d(x, relax.const(w), strides=st, padding=k//2)))))
            bb.emit_func_output(out)
        so = (s + 2*(k//2) - k)//st + 1
        return fuse(bb.get()), [(b, c, s, s)], 2*b*o*so*so*c*k*k
    shapes = {"qkv": mm(4096, 768, 768), "ffn_up": mm(4096, 768, 3072), "ffn_down": mm(4096, 3072, 768),
              "c3x3_64_56": conv(32, 64, 56, 64, 3), "c1x1_256_64_56": conv(32, 256, 56, 64, 1),
              "c3x3_512_7": conv(32, 512, 7, 512, 3)}
    dev = tvm.cuda(0); res = {}
    for name, (mod, ins, flops) in shapes.items():
        ex = kernels.build(mod, targets.cuda_tvm_target(), cuda_graph=False)
        vm = relax.VirtualMachine(ex, dev)
        args = [tvm.runtime.tensor(np.random.rand(*s).astype("float32"), dev) for s in ins]
        t = vm.time_evaluator("main", dev, number=20, repeat=5)(*args).median
        res[name] = (t*1e3, flops/t/1e12)
    print(json.dumps({"cfg": sys.argv[2], "res": res}), flush=True)
    sys.exit(0)
for cfg in CFGS:
    r = subprocess.run([sys.executable, __file__, "one", cfg], capture_output=True, text=True, timeout=300)
    line = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not line:
        print(cfg, "FAILED", r.stderr[-600:]); continue
    d = json.loads(line[0])
    print(cfg, " ".join(f"{k}={v[0]:.3f}ms/{v[1]:.0f}TF" for k, v in d["res"].items()), flush=True)
import torch
torch.backends.cudnn.allow_tf32 = True
for tf in (False, True):
    torch.backends.cuda.matmul.allow_tf32 = tf
    out = []
    for (m, k, n) in [(4096, 768, 768), (4096, 768, 3072), (4096, 3072, 768)]:
        a = torch.randn(m, k, device="cuda"); b = torch.randn(k, n, device="cuda")
        for _ in range(3): a @ b
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(50): a @ b
        torch.cuda.synchronize(); dt = (time.perf_counter()-t)/50
        out.append(f"{m}x{k}x{n}={dt*1e3:.3f}ms/{2*m*k*n/dt/1e12:.0f}TF")
    print("torch matmul tf32" if tf else "torch matmul fp32", " ".join(out))
for (b, c, s, o, k, st) in [(32, 64, 56, 64, 3, 1), (32, 256, 56, 64, 1, 1), (32, 256, 14, 256, 3, 1), (32, 1024, 14, 2048, 1, 2)]:
    x = torch.randn(b, c, s, s, device="cuda"); w = torch.randn(o, c, k, k, device="cuda")
    f = lambda: torch.relu(torch.nn.functional.conv2d(x, w, stride=st, padding=k//2))
    for _ in range(3): f()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(50): f()
    torch.cuda.synchronize(); dt = (time.perf_counter()-t)/50
    print(f"torch conv tf32 {b}x{c}x{s}->{o} k{k}s{st}: {dt*1e3:.3f} ms")
