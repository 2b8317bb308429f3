#!/usr/bin/env bash
# Cycle estimates of bvae's NEON kernels on Raspberry Pi cores, from llvm-mca
# (README, "Performance", "Raspberry Pi: estimated"). It compiles the
# library for aarch64 to assembly (release optimisation), takes the inner
# loop of each kernel (the loop with the most `fmla` in the convolution
# tile, the small-channel convolution and the dense group), and runs
# llvm-mca on each for a Cortex-A72 (Pi 4) and a Neoverse N1 (the
# Cortex-A76's server twin: LLVM models the A76 itself with the A57's
# tables).
#
#   bash tools/arm_mca.sh [LLVM_MCA]     (default: llvm-mca-19, then llvm-mca)
#
# Needs: rustup target aarch64-unknown-linux-gnu, Debian's
# gcc-aarch64-linux-gnu, llvm-19 (or any llvm-mca with a Neoverse N1
# model), python3. Writes under
# ${CARGO_TARGET_DIR:-target}/arm-mca.
set -euo pipefail
cd "$(dirname "$0")/.."

mca="${1:-}"
if [ -z "$mca" ]; then
    for c in llvm-mca-19 /usr/lib/llvm-19/bin/llvm-mca llvm-mca; do
        if command -v "$c" >/dev/null 2>&1; then mca="$c"; break; fi
    done
fi
[ -n "$mca" ] || { echo "arm_mca.sh: no llvm-mca found (apt install llvm-19)" >&2; exit 1; }

out="${CARGO_TARGET_DIR:-target}/arm-mca"
# Build scripts of dependencies may compile C for the target.
export CC_aarch64_unknown_linux_gnu="${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}"
mkdir -p "$out"
CARGO_TARGET_DIR="$out/build" cargo rustc --quiet --lib --target aarch64-unknown-linux-gnu -- \
    --emit asm -C codegen-units=1 -C opt-level=3 -C overflow-checks=off -C debug-assertions=off
asm=$(ls -t "$out"/build/aarch64-unknown-linux-gnu/debug/deps/bvae-*.s | head -n 1)

python3 - "$asm" "$out" <<'EOF'
import re
import sys

lines = open(sys.argv[1]).read().split("\n")
out = sys.argv[2]
# kernel -> a piece of the mangled name of the function its loop is in
kernels = {
    "tile": "4simd4neon4tile",
    "small": "9SmallConv3run",
    "dense": "11PackedDense3run",
}
func = None
labels = {}
best = {}
for i, line in enumerate(lines):
    if re.match(r"^_ZN\w+:", line):
        func, labels = line, {}
    m = re.match(r"^(\.LBB\d+_\d+):", line)
    if m:
        labels[m.group(1)] = i
    m = re.search(r"\tb\.\w+\t(\.LBB\d+_\d+)$", line)
    if m and m.group(1) in labels and func:
        body = [x for x in lines[labels[m.group(1)] + 1 : i + 1]
                if x.startswith("\t") and not x.startswith("\t.")]
        fmla = sum("fmla" in x for x in body)
        for name, piece in kernels.items():
            if piece in func and fmla > best.get(name, (0, None))[0]:
                best[name] = (fmla, body)
for name in kernels:
    if name not in best:
        sys.exit(f"arm_mca.sh: no loop found for the {name} kernel")
    fmla, body = best[name]
    with open(f"{out}/{name}.s", "w") as f:
        f.write("\n".join(body) + "\n")
    print(f"{name}: {fmla} fmla (4 lanes) = {4 * fmla} multiply-adds per iteration")
EOF

for k in tile small dense; do
    for cpu in cortex-a72 neoverse-n1; do
        cycles=$("$mca" -mtriple=aarch64-linux-gnu -mcpu="$cpu" -iterations=1000 "$out/$k.s" |
            awk '/Total Cycles/ {print $3 / 1000}')
        echo "$k on $cpu: $cycles cycles per iteration"
    done
done
