#!/usr/bin/env bash
# Cycle estimates of bvae's NEON kernels on Raspberry Pi cores, from llvm-mca
# (README, "Performance", "Raspberry Pi: estimated"). It compiles the
# library for aarch64, then for armv7, to assembly (release optimisation), takes the inner
# loop of each kernel (the loop with the most `fmla` in the convolution
# tile, the small-channel convolution and the dense group), and runs
# llvm-mca on each for a Cortex-A72 (Pi 4) and a Neoverse N1 (the
# Cortex-A76's server twin: LLVM models the A76 itself with the A57's
# tables).
#
#   bash tools/arm_mca.sh [LLVM_MCA]     (default: llvm-mca-19, then llvm-mca)
#
# Needs: rustup targets aarch64-unknown-linux-gnu and
# armv7-unknown-linux-gnueabihf, Debian's gcc-aarch64-linux-gnu and
# gcc-arm-linux-gnueabihf, llvm-19 (or any llvm-mca with a Neoverse N1
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
export CC_armv7_unknown_linux_gnueabihf="${CC_armv7_unknown_linux_gnueabihf:-arm-linux-gnueabihf-gcc}"
mkdir -p "$out"

# estimate TARGET TRIPLE MLA LANES KERNELS CPU...: the inner loops of
# TARGET's NEON kernels (the loop with the most MLA instructions of LANES
# lanes in each kernel's function; KERNELS: a space-separated list of tile,
# small, dense) and their cycles per iteration on each CPU.
estimate() {
    local target=$1 triple=$2 mla=$3 lanes=$4 wanted=$5
    shift 5
    CARGO_TARGET_DIR="$out/build" cargo rustc --quiet --lib --target "$target" -- \
        --emit asm -C codegen-units=1 -C opt-level=3 -C overflow-checks=off -C debug-assertions=off
    local asm
    asm=$(ls -t "$out"/build/"$target"/debug/deps/bvae-*.s | head -n 1)
    mkdir -p "$out/$target"
    python3 - "$asm" "$out/$target" "$mla" "$lanes" "$wanted" <<'PY'
import re
import sys

lines = open(sys.argv[1]).read().split("\n")
out, mla, lanes = sys.argv[2], sys.argv[3], int(sys.argv[4])
# kernel -> a piece of the mangled name of the function its loop is in
kernels = {
    "tile": r"4simd4neon4tile|5arm324tile",
    "small": r"9SmallConv",
    "dense": r"11PackedDense3run",
}
kernels = {k: v for k, v in kernels.items() if k in sys.argv[5].split()}
func = None
labels = {}
best = {}
# a conditional branch back: `b.ne .LBB..` (aarch64), `bne .LBB..` (arm),
# to a compiler's label or one of an `asm!` block (`.Ltmp..`)
label = r"(\.L(?:BB\d+_\d+|tmp\d+))"
branch = re.compile(r"\tb\.?(?:eq|ne|lo|hs|hi|ls|lt|ge|gt|le|mi|pl|cc|cs)\t" + label + "$")


def macs(instr: str) -> int:
    """Multiply-adds of one MLA instruction: its lanes (a Q register: 4, a D: 2)."""
    if instr.split()[0] != mla:
        return 0
    if mla == "vmla.f32":
        return 4 if instr.split()[1].startswith("q") else 2
    return lanes
for i, line in enumerate(lines):
    if re.match(r"^_ZN\w+:", line):
        func, labels = line, {}
    m = re.match("^" + label + ":", line)
    if m:
        labels[m.group(1)] = i
    m = branch.search(line)
    if m and m.group(1) in labels and func:
        body = [x for x in lines[labels[m.group(1)] + 1 : i + 1]
                if x.startswith("\t") and not x.startswith("\t.")]
        n = sum(macs(x) for x in body)
        for name, piece in kernels.items():
            if re.search(piece, func) and n > best.get(name, (0, None))[0]:
                best[name] = (n, body)
for name in kernels:
    if name not in best:
        sys.exit(f"arm_mca.sh: no loop found for the {name} kernel")
    n, body = best[name]
    with open(f"{out}/{name}.s", "w") as f:
        f.write("\n".join(body) + "\n")
    print(f"{name}: {n} multiply-adds per iteration")
PY
    for k in $wanted; do
        for cpu in "$@"; do
            cycles=$("$mca" -mtriple="$triple" -mcpu="$cpu" -iterations=1000 "$out/$target/$k.s" |
                awk '/Total Cycles/ {print $3 / 1000}')
            echo "$k on $cpu: $cycles cycles per iteration"
        done
    done
}

echo "== aarch64 (neon: 4 lanes, fmla)"
estimate aarch64-unknown-linux-gnu aarch64-linux-gnu fmla 4 "tile small dense" cortex-a72 neoverse-n1
# 32-bit ARM: the `neon` variant's tile (its own `asm!` loop on Q
# registers; the convolutions' kernel: 93% of a full pass's multiply-adds),
# on the Cortex-A72 (a Pi 4 on a 32-bit OS; LLVM's ARM back end has no
# model of the A53 or A7). Beside it, the inner loop of a Q-register 8×4
# kernel over packed inputs, of the kind tract runs there (8 `vmla.f32` by
# scalar, 32 multiply-adds, one load for the 4 inputs).
echo "== armv7 (neon: vmla.f32)"
estimate armv7-unknown-linux-gnueabihf armv7-linux-gnueabihf vmla.f32 2 "tile" cortex-a72
q="$out/armv7-unknown-linux-gnueabihf/q8x4.s"
{
    printf 'vld1.32 {d16,d17}, [r0]!\nvld1.32 {d18,d19}, [r0]!\nvld1.32 {d14,d15}, [r1]!\n'
    for acc in 0 1 2 3 4 5 10 11; do
        w=$((16 + 2 * (acc % 2)))
        lane=$(( (acc / 2 % 2) ))
        [ "$acc" -ge 4 ] && x=15 || x=14
        printf 'vmla.f32 q%d, q%d, d%d[%d]\n' "$acc" "$((w / 2))" "$x" "$lane"
    done
    printf 'subs r2, r2, #1\nbne .\n'
} >"$q"
cycles=$("$mca" -mtriple=armv7-linux-gnueabihf -mcpu=cortex-a72 -iterations=1000 "$q" |
    awk '/Total Cycles/ {print $3 / 1000}')
echo "Q-register 8x4 reference: 32 multiply-adds per iteration on cortex-a72: $cycles cycles per iteration"
