#!/usr/bin/env bash
# GPU figures of the README ("On a GPU"): the bold accuracy commands of the ground-state table
# with --device cuda, seconds per iteration of `rg` against `autoregressive` at 1024, 8192 and
# 65536 samples, and the Ising 16x16 model chain of `rgdiff sample`.
#
# Usage: benches/gpu.sh [RGDIFF] [OUTDIR] [DEVICE]
#   RGDIFF  a binary built with `--features cuda` (default target/release/rgdiff), e.g. the one
#           ../shared/tools/build-cuda.sh makes; the CUDA 13 libraries (cublas, cublasLt,
#           cudart, curand) must be on LD_LIBRARY_PATH
#   OUTDIR  run directories and table.md (default runs/bench-gpu)
#   DEVICE  default cuda (give cpu to produce the same table on the CPU)
# Prints one Markdown row per run: seconds per iteration are the median over iterations after
# the first (which loads the kernels), from each run's trace.csv.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/rgdiff}
OUT=${2:-runs/bench-gpu}
DEV=${3:-cuda}
H=hamiltonians
mkdir -p "$OUT"
TABLE=$OUT/table.md
echo "| run | samples | iterations | relative error | s / iteration (median) | samples / s | wall s |" | tee "$TABLE"
echo "| --- | ---: | ---: | --- | ---: | ---: | ---: |" | tee -a "$TABLE"
gs() { # name, args...: one ground-state run and its table row
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  if ! "$BIN" ground-state "$@" --device "$DEV" --out "$OUT/$name" >"$OUT/$name.log" 2>&1; then
    echo "| $name | failed: see $OUT/$name.log |" | tee -a "$TABLE"
    return
  fi
  python3 - "$OUT/$name" "$name" <<'PY' | tee -a "$TABLE"
import csv, json, statistics, sys
d, name = sys.argv[1], sys.argv[2]
s = json.load(open(f"{d}/summary.json"))
t = [float(r["seconds"]) for r in csv.DictReader(open(f"{d}/trace.csv"))]
med = statistics.median(t[1:]) if len(t) > 1 else t[0]
b = json.load(open(f"{d}/config.json"))["vmc"]["samples"]
rel = s.get("relative_error")
rel = "" if rel is None else f"{rel:.3e}"
if "trained_energy" in s and s.get("exact_energy"):
    e0 = s["exact_energy"]
    rel += f" (trained {(s['trained_energy'] - e0) / abs(e0):.3e} +- {s['trained_energy_error'] / abs(e0):.1e})"
print(f"| {name} | {b} | {s['iterations']} | {rel} | {med:.4f} | {b / med:.0f} | {s['seconds']:.1f} |")
PY
}
CAUSAL="--scheme autoregressive --network causal --optimizer sr"
gs warmup $H/tfim_chain_16.toml --iters 2 --samples 256 --eval-samples 256
gs tfim_causal $H/tfim_chain_16.toml $CAUSAL --kernel 9 --lr 0.2 --iters 400 --eval-samples 65536
gs heis_chain_causal $H/heisenberg_chain_16.toml $CAUSAL --sz 0 --phase marshall --kernel 9 --lr 0.2 --iters 400 --eval-samples 65536
gs heis_4x4_causal $H/heisenberg_square_4x4.toml $CAUSAL --sz 0 --phase marshall --kernel 3 --lr 0.1 --iters 600 --eval-samples 65536
gs j1j2_causal_sym $H/j1j2_square_4x4.toml $CAUSAL --sz 0 --phase marshall+learned --kernel 3 --lr 0.1 --iters 1350 --eval-samples 32768 --final-symmetry point
gs j1j2_causal_sym_4000 $H/j1j2_square_4x4.toml $CAUSAL --sz 0 --phase marshall+learned --kernel 3 --lr 0.1 --iters 4000 --eval-samples 32768 --final-symmetry point
for b in 1024 8192 65536; do
  it=$(( b == 65536 ? 5 : 20 ))
  gs tfim_rg_$b $H/tfim_chain_16.toml --iters $it --samples $b --eval-samples 1024
  gs tfim_ar_$b $H/tfim_chain_16.toml --scheme autoregressive --iters $it --samples $b --eval-samples 1024
  gs heis_4x4_rg_$b $H/heisenberg_square_4x4.toml --phase marshall --iters $it --samples $b --eval-samples 1024
  gs heis_4x4_ar_$b $H/heisenberg_square_4x4.toml --phase marshall --scheme autoregressive --iters $it --samples $b --eval-samples 1024
done
gs heis_8x8_rg_4096 $H/heisenberg_square_8.toml --phase marshall --iters 10 --samples 4096 --eval-samples 4096
# Ising 16x16 at beta_c: the model chain (training and sampling on DEVICE) and its raw
# generation rate (untrained network, pure independence MH); Metropolis on the host for scale.
for run in "ising16_model_trained model --train-iters 300 --train-samples 1024 --samples 100000 --batch 10000" \
           "ising16_model_untrained_pure model --train-iters 0 --samples 100000 --batch 10000 --local-every 0" \
           "ising16_metropolis metropolis --samples 20000"; do
  set -- $run
  name=$1; shift
  rm -rf "${OUT:?}/$name"
  "$BIN" sample $H/ising_square_16.toml --method "$@" --device "$DEV" --out "$OUT/$name" --json \
    >"$OUT/$name.json" 2>"$OUT/$name.log" || { echo "$name failed: see $OUT/$name.log"; continue; }
  python3 - "$OUT/$name.json" "$name" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
ess = f'{v["ess"]["mean"]:.3f}' if "ess" in v else "-"
print(f'{sys.argv[2]}: acceptance {v["acceptance"]["mean"]:.3f}, ESS {ess}, tau_int {v["tau_int"]["mean"]:.1f}, '
      f'{v["samples_per_second"]:.0f} samples/s, {v["independent_samples_per_second"]:.0f} independent/s, '
      f'training {v["training_seconds"]:.0f} s, E/N {v["energy_density"]["mean"]:.5f} +- {v["energy_density"]["error"]:.5f}')
PY
done
