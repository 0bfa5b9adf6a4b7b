"""NetKet reference timings for the VMC issue's yardstick, on the machine it runs on.

The recipes the issue names, at 1024 samples per iteration, periodic chains of 16 sites:
  tfim     RBM (alpha 2, real parameters) + SR (diag shift 0.01, SGD lr 0.01), Metropolis local
  heis     the same on the Heisenberg chain in the Sz = 0 sector, Metropolis exchange
  tfim-ar  dense autoregressive network (3 layers, 16 features) + Adam (lr 0.01), exact samples
  heis-ar  the same on the Heisenberg chain (full space: NetKet's direct sampler refuses Sz = 0)
Prints one JSON line: seconds per iteration (after 5 iterations of jit warm-up), the final
energy of 65,536 fresh samples (as rgdiff's --eval-samples 65536) with its error, its relative
error and the variance of the local energy, the parameter count.

Conventions: NetKet's Ising is H = -J sum Z Z - h sum X with Pauli matrices (rgdiff's TFIM);
its Heisenberg is sum sigma.sigma (Pauli), 4 times rgdiff's spin-1/2 H = sum S.S.

    python3 -m venv nk && nk/bin/pip install netket==3.23
    nk/bin/python benches/netket_reference.py tfim 600
"""

import json
import sys
import time

import netket as nk

which, iters = sys.argv[1], int(sys.argv[2])
L = 16
graph = nk.graph.Chain(L, pbc=True)
if which.startswith("tfim"):
    hi = nk.hilbert.Spin(0.5, N=L)
    H = nk.operator.Ising(hi, graph, h=1.0, J=-1.0)
    e0 = -20.404594474757  # free fermions
    metropolis = nk.sampler.MetropolisLocal(hi, n_chains=16)
else:
    hi = nk.hilbert.Spin(0.5, N=L, total_sz=None if which.endswith("ar") else 0)
    H = nk.operator.Heisenberg(hi, graph)
    e0 = 4 * -7.142296360617  # ED, spin-1/2 convention times 4
    metropolis = nk.sampler.MetropolisExchange(hi, graph=graph, n_chains=16)

if which.endswith("ar"):
    model = nk.models.ARNNDense(hilbert=hi, layers=3, features=16)
    vs = nk.vqs.MCState(nk.sampler.ARDirectSampler(hi), model, n_samples=1024, seed=1)
    driver = nk.driver.VMC(H, nk.optimizer.Adam(0.01), variational_state=vs)
else:
    model = nk.models.RBM(alpha=2, param_dtype=float)
    vs = nk.vqs.MCState(metropolis, model, n_samples=1024, seed=1)
    driver = nk.driver.VMC(
        H,
        nk.optimizer.Sgd(0.01),
        variational_state=vs,
        preconditioner=nk.optimizer.SR(diag_shift=0.01),
    )

driver.run(n_iter=5, show_progress=False)
start = time.time()
driver.run(n_iter=iters, show_progress=False)
seconds = (time.time() - start) / iters
vs.n_samples = 65536
e = vs.expect(H)
energy = float(e.mean.real)
print(
    json.dumps(
        {
            "which": which,
            "netket": nk.__version__,
            "iterations": iters + 5,
            "s_per_iter": seconds,
            "energy": energy,
            "error": float(e.error_of_mean),
            "relative_error": (energy - e0) / abs(e0),
            "relative_error_bar": float(e.error_of_mean) / abs(e0),
            "variance": float(e.variance),
            "parameters": vs.n_parameters,
        }
    )
)
