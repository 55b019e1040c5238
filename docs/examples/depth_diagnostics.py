"""Where the attention-path error of the depth theory comes from (d = 64, 4 layers, T = 64).

For each layer, the mean over 3000 simulated networks of the residual kernel
``x_m . x_n / d`` and of the LayerNorm kernel ``e_m . e_n / d`` against the recursion's
(`theory.depth`), the LayerNorm cosine map applied to the *simulated* mean kernel, and
the uniform causal average ``U`` at m = T. Run: ``python docs/examples/depth_diagnostics.py``
(about a minute on 2 cores).
"""
import numpy as np, torch
from theory import ModelSpec
from theory.depth import predict
from theory.kernel_maps import layernorm_kernel, uniform_average
import simulate
torch.set_num_threads(2)
spec = ModelSpec(d_model=64, n_heads=4, n_layers=4, seq_len=64)
pred = predict(spec)
N = 3000
acc = {l: 0 for l in range(4)}; accK = {l: 0 for l in range(4)}
for first in range(0, N, 250):
    c = simulate.activations(spec, taps=[f"blocks.{l}.ln1.hook_normalized" for l in range(4)] + [f"blocks.{l}.hook_resid_pre" for l in range(4)], samples=250, seed=100+first, device="cpu")
    for l in range(4):
        e = c[f"blocks.{l}.ln1.hook_normalized"][:, 0].double()   # S,T,d
        acc[l] = acc[l] + (e @ e.transpose(1, 2)).sum(0).numpy() / 64
        x = c[f"blocks.{l}.hook_resid_pre"][:, 0].double()
        accK[l] = accK[l] + (x @ x.transpose(1, 2)).sum(0).numpy() / 64
off = ~np.eye(64, dtype=bool)
for l in range(4):
    Es = acc[l] / N; Ks = accK[l] / N
    K = pred.kernel("hook_resid_pre", l); E, _ = layernorm_kernel(K, 64, 1e-5)
    print(f"layer {l}: kernel offdiag mean theory/sim {K[off].mean()/Ks[off].mean():.4f}, diag {np.diag(K).mean()/np.diag(Ks).mean():.4f}; "
          f"LN offdiag mean theory {E[off].mean():.4f} sim {Es[off].mean():.4f} ratio {E[off].mean()/Es[off].mean():.4f}; "
          f"LN of sim kernel {layernorm_kernel(Ks,64,1e-5)[0][off].mean():.4f}; "
          f"U(64,64) theory {uniform_average(E)[-1,-1]:.4f} sim {uniform_average(Es)[-1,-1]:.4f}")
