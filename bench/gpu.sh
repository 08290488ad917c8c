#!/usr/bin/env bash
# The device session's one script (see the README's "CUDA" section): nothing is built on the GPU
# machine. Build here first (`cargo build --release`), then run this there with the binary
# carried (target/release/stagewise). Prints the card, the CPU/GPU parity table, the timing
# table next to PyTorch (eager and torch.compile) on the same card, and a short end-to-end run;
# everything is also written under $OUT (or bench-out/) for the notes. Each part has its own
# time limit and the whole stays under the device tool's 10 minutes per command.
#
#   bench/gpu.sh               # every part (~7 min, most of it torch.compile)
#   bench/gpu.sh check bench   # chosen parts: check, check-tf32, bench, paper, nosplit, bench-tf32,
#                              # susceptibility, e2e
#   NO_COMPILE=1 bench/gpu.sh  # without torch.compile
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/stagewise}
OUT=${OUT:-bench-out}
PARTS=${*:-check check-tf32 bench paper nosplit bench-tf32 susceptibility e2e}
mkdir -p "$OUT"
# cuBLAS and NVRTC: the CUDA toolkit's folders, or the pip wheels next to PyTorch.
for lib in libcublas.so libnvrtc.so; do
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
           $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null); do
    if ls "$d"/$lib* >/dev/null 2>&1; then
      export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      break
    fi
  done
done
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/card.txt"
for part in $PARTS; do
  case $part in
    check) echo "== parity (float32 GEMMs)"
      timeout 55 "$BIN" check-device --device cuda 2>&1 | tee "$OUT/check.txt" ;;
    check-tf32) echo "== parity (TF32 GEMMs)"
      timeout 40 "$BIN" --tf32 check-device --device cuda 2>&1 | tee "$OUT/check-tf32.txt" ;;
    bench) echo "== timing (float32 GEMMs, with PyTorch)"
      timeout 270 "$BIN" bench gpu --device cuda --torch python3 ${NO_COMPILE:+--no-compile} 2>&1 | tee "$OUT/bench.txt" ;;
    paper) echo "== the paper's K = 8: training at batch 256 and 10 chains, paper-scale minutes"
      timeout 40 "$BIN" bench gpu --device cuda --examples 8 --batches 256 --chains 10 2>&1 | tee "$OUT/paper.txt" ;;
    nosplit) echo "== SGLD without split reductions (compare with the bench part's 2 and 10 chains)"
      STAGEWISE_SPLIT_REDUCTIONS=0 timeout 35 "$BIN" bench gpu --device cuda --batches 256 --chains 2,10 2>&1 | tee "$OUT/nosplit.txt" ;;
    bench-tf32) echo "== timing (TF32 GEMMs)"
      timeout 45 "$BIN" --tf32 bench gpu --device cuda 2>&1 | tee "$OUT/bench-tf32.txt" ;;
    susceptibility) echo "== per-head susceptibility scan (9 restrictions x 4 chains batched; PyTorch: devinterp's sequential runs on the GPU)"
      timeout 90 "$BIN" bench susceptibility --device cuda --torch python3 2>&1 | tee "$OUT/susceptibility.txt" ;;
    e2e) echo "== end to end: reproduce --quick on the GPU"
      rm -rf /tmp/rq-gpu
      ( time timeout 70 "$BIN" reproduce --quick --device cuda --out /tmp/rq-gpu ) 2>&1 | tail -n 25 | tee "$OUT/reproduce.txt"
      cp /tmp/rq-gpu/stages/sampler-tiny/stages.csv "$OUT/" 2>/dev/null || true ;;
    *) echo "unknown part '$part' (check, check-tf32, bench, paper, nosplit, bench-tf32, susceptibility, e2e)" >&2 ;;
  esac
done
