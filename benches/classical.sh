#!/usr/bin/env bash
# Figures of merit of `rgdiff sample` (README, "Classical sampling"): Markov-chain baselines
# on the Ising model at beta_c and the phi^4 ensembles, then the masked diffusion on Ising.
# Usage: benches/classical.sh [OUTDIR]   (release build; prints one table row per run;
# BASELINES=0 skips the Markov chains, MODEL=0 the model, MASKED=0 its slow masked row,
# DEPTH1=0 its one-hidden-layer rows, TABLE=0 the lookup-table rows)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench-classical}
BIN=target/release/rgdiff
export RAYON_NUM_THREADS=1
mkdir -p "$OUT"
row() { # name, method, extra args... (LABEL=...: the method column, and the run directory's suffix)
  local file=$1 method=$2; shift 2
  local dir="$OUT/$(basename "$file" .toml)-$method${LABEL:+-${LABEL//[^a-z0-9]/_}}"
  rm -rf "$dir"
  "$BIN" sample "$file" --method "$method" --out "$dir" --json "$@" >"$dir.json"
  python3 - "$dir.json" "$file" "${LABEL:-$method}" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
g = lambda k: v[k]["mean"] if k in v else float("nan")
ess = f'{v["ess"]["mean"]:.3f}' if "ess" in v else "-"
lz = f'{v["log_z"]["mean"]:.4f}({1e4*v["log_z"]["error"]:.0f})' if "log_z" in v else "-"
e = lambda d: f'{d["energy_density"]["mean"]:.4f}({1e4*d["energy_density"]["error"]:.0f})'
rw = v.get("reweighted")
rw_rate = f'{rw["independent_samples_per_second"]:.0f}' if rw else "-"
rw_e = e(rw) if rw else "-"
print(f'| {sys.argv[2].split("/")[-1][:-5]} | {sys.argv[3]} | {v["samples"]} | {g("acceptance"):.3f} | {ess} '
      f'| {v["tau_int"]["mean"]:.1f} | {v["tau_int_energy"]["mean"]:.1f} | {v["samples_per_second"]:.0f} '
      f'| {v["independent_samples_per_second"]:.0f} | {rw_rate} | {v["training_seconds"]:.0f} '
      f'| {e(v)} | {rw_e} | {g("abs_magnetization"):.4f} | {lz} |')
PY
}
echo "| file | method | samples | acceptance | ESS | tau_int abs M | tau_int E | samples/s | indep./s | indep./s reweighted | training s | E/N or S/N (err 1e-4) | reweighted | abs M/N | log Z |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
if [ "${BASELINES:-1}" = 1 ]; then
  for L in 8 16 32; do
    row hamiltonians/ising_square_$L.toml wolff --samples 20000
    row hamiltonians/ising_square_$L.toml metropolis --samples 20000
  done
  for f in phi4_square_8 phi4_square_6_critical phi4_square_8_critical phi4_square_10_critical \
           phi4_square_12_critical phi4_square_14_critical; do
    for m in hmc metropolis wolff; do
      row hamiltonians/$f.toml $m --samples 20000
    done
  done
fi
if [ "${MODEL:-1}" = 1 ]; then
  row hamiltonians/ising_square_8.toml model --samples 20000
  LABEL="model, pure MH" row hamiltonians/ising_square_8.toml model --samples 20000 --local-every 0
  row hamiltonians/ising_square_16.toml model --train-iters 150 --samples 10000
  LABEL="model, pure MH" row hamiltonians/ising_square_16.toml model --train-iters 150 --samples 10000 --local-every 0
  row hamiltonians/ising_square_32.toml model --train-iters 150 --samples 5000
  LABEL="model, pure MH" row hamiltonians/ising_square_32.toml model --train-iters 150 --samples 5000 --local-every 0
  LABEL="model, longer training" row hamiltonians/ising_square_32.toml model --train-iters 400 \
    --samples 5000
  # One hidden layer instead of two (--depth 1): half the work per site.
  if [ "${DEPTH1:-1}" = 1 ]; then
    LABEL="model, depth 1" row hamiltonians/ising_square_8.toml model --samples 20000 --depth 1
    LABEL="model, depth 1" row hamiltonians/ising_square_16.toml model --train-iters 150 \
      --samples 10000 --depth 1
    LABEL="model, depth 1, width 4, 256 per it." row hamiltonians/ising_square_16.toml model \
      --train-iters 150 --train-samples 256 --samples 10000 --depth 1 --width 4
    LABEL="model, depth 1" row hamiltonians/ising_square_32.toml model --train-iters 150 \
      --samples 5000 --depth 1
  fi
  # The pinned Z2 proposal (one network pass per proposal instead of two).
  LABEL="model, z2 pinned" row hamiltonians/ising_square_8.toml model --samples 20000 --z2 pinned
  LABEL="model, z2 pinned" row hamiltonians/ising_square_16.toml model --train-iters 150 \
    --samples 10000 --z2 pinned
  # The last step drawn by the network instead of its heat bath (the default before).
  LABEL="model, last step by the network" row hamiltonians/ising_square_8.toml model \
    --samples 20000 --last-step model
  LABEL="model, last step by the network" row hamiltonians/ising_square_16.toml model \
    --train-iters 150 --samples 10000 --last-step model
  # The network before --dilation levels and the causal default: masked, undilated
  # (MASKED=0 skips it: 150 s of training).
  if [ "${MASKED:-1}" = 1 ]; then
    LABEL="model, masked, undilated" row hamiltonians/ising_square_16.toml model \
      --train-iters 150 --samples 10000 --network masked --dilation none
  fi
fi
# The lookup-table conditionals (--network table: 2000 iterations of 512, a few seconds).
if [ "${TABLE:-1}" = 1 ]; then
  for L in 8 16 32; do
    n=$([ "$L" = 32 ] && echo 50000 || echo 100000)
    LABEL="table, pure MH" row hamiltonians/ising_square_$L.toml model --network table \
      --samples "$n" --local-every 0
    LABEL="table, local sweeps every 2" row hamiltonians/ising_square_$L.toml model \
      --network table --samples "$n"
  done
fi
