#!/usr/bin/env bash
# The GPU measurements of issue 6, prepared as one command for a lent GPU machine.
#
# A lent machine gives a session about 15 minutes in all, starting it included, and cannot
# reach the package index. So: one command, stages in order of importance, each with its own
# time limit inside the whole budget, every result written under $OUT as soon as it exists
# (bench.py rewrites its JSON after every row), and nothing installed from the network.
#
# Before the run, on this machine: the wheels of what the scripts need beyond jax and numpy, in
# case the GPU image lacks them (15 MB; .gpu_wheels/ is ignored by git, so it must be carried):
#     pip download --no-deps -d .gpu_wheels "optax>=0.2.4,<0.3" absl-py "tqdm>=4.66,<5"
#     for v in 311 312 313; do pip download --no-deps -d .gpu_wheels "h5py>=3.11,<4" \
#       --only-binary=:all: --python-version $v --platform manylinux_2_17_x86_64; done
# Then, with the device tool, from the repository root:
#     run(command="bash scripts/gpu_session.sh", carry=[".gpu_wheels"], timeout_s=360)
# (the default budget, 300 s, leaves time in a 15-minute loan to start the machine and to run
# it once more; GPU_SESSION_SECONDS=N changes it)
# Dry run on a CPU (tiny sizes, a few minutes; checks the plumbing, not the GPU):
#     GPU_SESSION_DRY=1 OUT=/tmp/gpu-dry bash scripts/gpu_session.sh
#
# Stages, in order (each has a limit of its own; the run stops at the budget):
#   env       versions, nvidia-smi, jax.devices(); then whether this jax takes the XLA:CPU flags
#             that the scripts add (mortal.xla_cpu.tune), else MORTAL_XLA_TUNE=0
#   deps      installs optax, tqdm, h5py from .gpu_wheels, only those the image lacks
#   digits    ff_benchmarks.py digits-ideal: a 3.5-s CPU run whose accuracy target (>= 96.5 %)
#             says that the code still learns on this jax and backend
#   ff1000    bench.py ff section, 3x1000, P = 1 4 16 64 256, map and vmap, float32, with the
#             paired P = 16 / P = 1 scaling row: the issue's GPU table and the 3-s epoch target
#   bf16      the same at P = 1 64 256 with bfloat16 matmuls (their accuracy effect is measured
#             on CPUs, BENCHMARKS.md: the rounding is explicit, so it is the same on a GPU)
#   costs     rram / ideal (paired), distillation and evaluation costs, 3x1000
#   widths    3x500 and 3x2000 at P = 1 16 64 256, float32
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
BUDGET=${GPU_SESSION_SECONDS:-300}
START=$(date +%s)
PY=$(command -v python || command -v python3)
export PY

left() { echo $((BUDGET - ($(date +%s) - START))); }

stage() {  # stage NAME SECONDS COMMAND...: at most SECONDS (or what is left of the budget)
  local name=$1 want=$2
  shift 2
  local limit
  limit=$(left)
  ((limit > want)) && limit=$want
  if ((limit < 20)); then
    echo "[$name] skipped: $(left) s of the budget left" | tee -a "$OUT/stages.txt"
    return
  fi
  local t0 rc
  t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "[$name] exit $rc after $(($(date +%s) - t0)) s (limit $limit s)" | tee -a "$OUT/stages.txt"
  tail -n 30 "$OUT/$name.log"
}

if [ -n "${GPU_SESSION_DRY:-}" ]; then
  POPS=(1 4) POPS_BF16=(1 4) POPS_W=(1 4) WIDE=(500) PAIRS=2 EXTRA=(--quick)
else
  POPS=(1 4 16 64 256) POPS_BF16=(1 64 256) POPS_W=(1 16 64 256) WIDE=(500 2000) PAIRS=5
  EXTRA=()
fi
BENCH=("$PY" scripts/bench.py --max-gb 60 "${EXTRA[@]}")

stage env 30 bash -c 'nvidia-smi || true; "$PY" --version; "$PY" -c "import jax, numpy; \
print(\"jax\", jax.__version__, \"numpy\", numpy.__version__, jax.devices())"; \
"$PY" -m pip list 2>/dev/null | grep -iE "^(jax|jaxlib|jax-cuda|nvidia-|numpy|optax|tqdm|absl)" || true'
# the scripts add XLA:CPU flags (mortal.xla_cpu.tune); an XLA that does not know one stops the
# process at its start, so where this image's jax refuses them, the stages run without them
if ! XLA_FLAGS="--xla_cpu_prefer_vector_width=512 --xla_cpu_copy_insertion_use_region_analysis=true" \
  timeout 60 "$PY" -c "import jax; jax.numpy.zeros(1).block_until_ready()" >/dev/null 2>&1; then
  export MORTAL_XLA_TUNE=0
  echo "[flags] this jax refuses mortal.xla_cpu's flags: MORTAL_XLA_TUNE=0" | tee -a "$OUT/stages.txt"
fi
stage deps 30 bash -c 'missing=(); for m in optax tqdm h5py; do "$PY" -c "import $m" 2>/dev/null \
|| missing+=("$m"); done; echo "missing: ${missing[*]:-none}"; [ ${#missing[@]} -eq 0 ] \
|| "$PY" -m pip install --no-index --find-links .gpu_wheels "${missing[@]}"'
stage digits 60 "$PY" scripts/ff_benchmarks.py digits-ideal --out "$OUT/digits"
stage ff1000 100 "${BENCH[@]}" --only ff --widths 1000 --populations "${POPS[@]}" \
  --pairs "$PAIRS" --out "$OUT/bench_gpu_ff_w1000.json"
stage bf16 45 "${BENCH[@]}" --only ff --widths 1000 --populations "${POPS_BF16[@]}" --pairs 0 \
  --matmul-dtype bfloat16 --out "$OUT/bench_gpu_ff_w1000_bf16.json"
stage costs 45 "${BENCH[@]}" --only rram --only distill --only eval --pairs "$PAIRS" \
  --out "$OUT/bench_gpu_costs.json"
stage widths 60 "${BENCH[@]}" --only ff --widths "${WIDE[@]}" --populations "${POPS_W[@]}" \
  --pairs 0 --out "$OUT/bench_gpu_ff_widths.json"
echo "done in $(($(date +%s) - START)) s; results in $OUT:"
ls -l "$OUT"
