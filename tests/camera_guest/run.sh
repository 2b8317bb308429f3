#!/usr/bin/env bash
# Camera test in a qemu guest: boots the host's newest installed Linux
# kernel under TCG with an initramfs holding busybox, Linux's vivid V4L2
# test driver (and its dependencies), v4l2-ctl and the given bvae binary,
# then runs tests/camera_guest/guest-init.sh as /init, which checks
# `bvae cameras`, `record`, `watch`, camera disconnect and module reload,
# a stalled stream and a missing camera against /dev/video0. The frames
# bvae records come back over the serial console and are checked against
# vivid's colour bars (check_frames.py).
#
# Usage: tests/camera_guest/run.sh BVAE_BIN [WORKDIR]
#
# Prints "skipped: <why>" and exits 0 when qemu-system-x86_64, a kernel
# in /boot with its modules, a static busybox or the vivid module is
# missing (Debian: apt-get install linux-image-amd64 qemu-system-x86
# busybox-static v4l-utils kmod cpio). Ends with "N passed, M failed" and
# exits 1 if a check failed or the guest never finished.
#
# A run takes 2-4 minutes on 2 cores: the boot ~5 s, the 200-frame
# watch 100-170 s (the emulated CPU runs the model at 2-3 frames/s; less
# when the host is busy), the rest ~30 s.
#
# Environment: CAMERA_GUEST_TIMEOUT (seconds for the whole guest, default
# 720), CAMERA_GUEST_WATCH_FRAMES (frames the watch check processes,
# default 200), CAMERA_GUEST_WATCH_LIMIT (seconds for it, default 420; the
# emulated CPU runs the model at 1-3 frames/s, less on a busy host),
# CAMERA_GUEST_WATCH_SOURCE (its source, default camera:0),
# CAMERA_GUEST_CPU (qemu -cpu, default max; an empty value gives qemu's own model, which has no
# AVX, so bvae takes its non-AVX code paths; "max" gives AVX2 under TCG and
# made the watch ~20% faster here),
# CAMERA_GUEST_VERBOSE=1 (print the guest's console even when all passed).
# WORKDIR keeps the console log (console.log.txt), the frames that came
# back (files/) and the initramfs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
t_start=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 BVAE_BIN [WORKDIR]" >&2
    exit 2
fi
bvae_bin=$1
if [ ! -x "$bvae_bin" ]; then
    echo "error: $bvae_bin is not an executable (build it: cargo build, or cargo build --release)" >&2
    exit 2
fi
bvae_bin=$(cd "$(dirname "$bvae_bin")" && pwd)/$(basename "$bvae_bin")

skip() {
    echo "skipped: $*"
    exit 0
}

# ------------------------------------------------------------ prerequisites

command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
command -v cpio >/dev/null || skip "cpio not installed"
command -v gzip >/dev/null || skip "gzip not installed"
command -v python3 >/dev/null || skip "python3 not installed"

kernel=""
for k in /boot/vmlinuz-*; do
    [ -f "$k" ] || continue
    v=${k#/boot/vmlinuz-}
    [ -d "/lib/modules/$v" ] || continue
    if [ -z "$kernel" ] || [ "$(printf '%s\n%s\n' "${kernel#/boot/vmlinuz-}" "$v" | sort -V | tail -n 1)" = "$v" ]; then
        kernel=$k
    fi
done
[ -n "$kernel" ] || skip "no kernel in /boot with modules in /lib/modules (apt-get install linux-image-amd64)"
[ -r "$kernel" ] || skip "$kernel is not readable"
kver=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$kver

busybox=""
for b in /bin/busybox /usr/bin/busybox /sbin/busybox /usr/lib/busybox/busybox-static; do
    if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then
        busybox=$b
        break
    fi
done
[ -n "$busybox" ] || skip "no statically linked busybox (apt-get install busybox-static)"

command -v v4l2-ctl >/dev/null || skip "v4l2-ctl not installed (apt-get install v4l-utils)"

# vivid and what it depends on, in load order (paths relative to $moddir).
modules=()
if command -v modprobe >/dev/null && deps=$(modprobe -S "$kver" --show-depends vivid 2>/dev/null); then
    while read -r cmd path _; do
        [ "$cmd" = insmod ] && modules+=("${path#"$moddir"/}")
    done <<<"$deps"
elif [ -f "$moddir/modules.dep" ]; then
    # modules.dep lists every dependency (transitively); they load in
    # reverse order, the module itself last.
    line=$(grep -E '(^|/)vivid\.ko(\.xz|\.zst|\.gz)?:' "$moddir/modules.dep" || true)
    if [ -n "$line" ]; then
        read -r -a rest <<<"${line#*:}"
        for ((i = ${#rest[@]} - 1; i >= 0; i--)); do modules+=("${rest[$i]}"); done
        modules+=("${line%%:*}")
    fi
fi
[ ${#modules[@]} -gt 0 ] && [ -f "$moddir/${modules[-1]}" ] || skip "the vivid module is not in $moddir (kernel built without CONFIG_VIDEO_VIVID?)"

for m in "${modules[@]}"; do
    case "$m" in
        *.ko.xz) command -v xz >/dev/null || skip "xz needed to decompress $m" ;;
        *.ko.zst) command -v zstd >/dev/null || skip "zstd needed to decompress $m" ;;
    esac
done

for f in models/synthetic.onnx models/synthetic.calibration.json; do
    [ -f "$repo/$f" ] || { echo "error: $repo/$f missing" >&2; exit 2; }
done

workdir=${2:-$(mktemp -d "${TMPDIR:-/tmp}/camera_guest.XXXXXX")}
mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
root=$workdir/root
rm -rf "$root" "$workdir/files"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,models,lib/modules/vivid} "$workdir/files"

echo "camera guest: kernel $kernel, bvae $bvae_bin, work folder $workdir"

# ------------------------------------------------------------ initramfs

# busybox with its applets as symlinks
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done

# modules, decompressed so that busybox insmod loads them; "order" lists
# them dependencies first.
: >"$root/lib/modules/vivid/order"
for m in "${modules[@]}"; do
    src=$moddir/$m
    base=$(basename "$m")
    case "$m" in
        *.ko.xz) xz -dc "$src" >"$root/lib/modules/vivid/${base%.xz}"; base=${base%.xz} ;;
        *.ko.zst) zstd -qdc "$src" >"$root/lib/modules/vivid/${base%.zst}"; base=${base%.zst} ;;
        *.ko.gz) gzip -dc "$src" >"$root/lib/modules/vivid/${base%.gz}"; base=${base%.gz} ;;
        *) cp "$src" "$root/lib/modules/vivid/$base" ;;
    esac
    echo "$base" >>"$root/lib/modules/vivid/order"
done

# A dynamically linked program and the shared libraries ldd names (the
# dynamic loader included), at the same paths as on the host.
add_program() {
    local src=$1 dest=$2 lib
    cp "$src" "$root$dest"
    chmod 755 "$root$dest"
    while read -r lib; do
        [ -n "$lib" ] || continue
        mkdir -p "$root$(dirname "$lib")"
        [ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
    done < <(ldd "$src" 2>/dev/null | grep -oE '/[^ ]+' | grep -v '^/[^ ]*:$' || true)
}
add_program "$(command -v v4l2-ctl)" /bin/v4l2-ctl
add_program "$bvae_bin" /bin/bvae
# A test build carries debug info: keep it out of the guest's memory.
if command -v strip >/dev/null; then strip "$root/bin/bvae" 2>/dev/null || true; fi
# The dynamic loader is named in the binaries as /lib64/ld-linux-x86-64.so.2
if [ ! -e "$root/lib64/ld-linux-x86-64.so.2" ] && [ -e /lib64/ld-linux-x86-64.so.2 ]; then
    mkdir -p "$root/lib64"
    cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
fi

cp "$repo/models/synthetic.onnx" "$repo/models/synthetic.calibration.json" "$root/models/"
cp "$here/guest-init.sh" "$root/init"
chmod 755 "$root/init"
{
    echo "WATCH_SOURCE='${CAMERA_GUEST_WATCH_SOURCE:-camera:0}'"
    echo "WATCH_FRAMES=${CAMERA_GUEST_WATCH_FRAMES:-200}"
    echo "WATCH_LIMIT=${CAMERA_GUEST_WATCH_LIMIT:-420}"
} >"$root/etc/camera_guest.conf"

initrd=$workdir/initramfs.cpio.gz
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) | gzip -1 >"$initrd"
echo "initramfs: $initrd, $(du -h "$initrd" | cut -f1) ($(du -sh "$root" | cut -f1) unpacked; modules: $(tr '\n' ' ' <"$root/lib/modules/vivid/order")), built in $(since "$t_start") s"
rm -rf "$root"

# ------------------------------------------------------------ boot

log=$workdir/console.log
limit=${CAMERA_GUEST_TIMEOUT:-720}
cpu_args=()
[ -n "${CAMERA_GUEST_CPU-max}" ] && cpu_args=(-cpu "${CAMERA_GUEST_CPU-max}")
t_boot=$(date +%s.%N)
echo "booting the guest (qemu TCG, 2 CPUs, 1536 MB; up to $limit s; console: $log) ..."
set +e
timeout -k 10 "$limit" qemu-system-x86_64 -accel tcg "${cpu_args[@]}" -m 1536 -smp 2 -nographic -no-reboot \
    -kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 panic=-1 quiet" \
    </dev/null >"$log" 2>&1
qemu_rc=$?
set -e
t_guest=$(since "$t_boot")
tr -d '\r' <"$log" >"$log.txt"

# ------------------------------------------------------------ parse

# Files between BEGIN-FILE/END-FILE: only base64 lines count, so a kernel
# message that lands between them does no harm.
python3 - "$log.txt" "$workdir/files" <<'EOF'
import base64, gzip, re, sys, os
log, out = sys.argv[1], sys.argv[2]
name, buf = None, []
for line in open(log, errors="replace"):
    line = line.rstrip("\n")
    if name is None:
        m = re.match(r"^BEGIN-FILE (\S+)$", line)
        if m:
            name, buf = os.path.basename(m.group(1)), []
    elif line == "END-FILE":
        data = base64.b64decode("".join(buf))
        if name.endswith(".gz"):
            data, name = gzip.decompress(data), name[:-3]
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        name = None
    elif re.fullmatch(r"[A-Za-z0-9+/=]+", line):
        buf.append(line)
EOF

results=$workdir/results.txt
grep -E '^CHECK [A-Za-z0-9_]+ (PASS|FAIL)' "$log.txt" >"$results" || true

boot_s=$(awk '/^NOTE userspace up at/ { print $5 }' "$log.txt" | head -n 1)
done_ok=0
grep -q '^GUEST-DONE' "$log.txt" && done_ok=1

# Host-side checks of the frames that came back.
host_check() { # NAME PASS|FAIL DETAIL
    echo "CHECK $1 $2 $3" >>"$results"
}
selftest=$(python3 "$here/check_frames.py" --self-test 2>&1) && r=PASS || r=FAIL
host_check frame_checker "$r" "$selftest"
if [ -f "$workdir/files/ref_640x480.rgb24" ]; then
    out=$(python3 "$here/check_frames.py" --raw-rgb24 640x480 "$workdir/files/ref_640x480.rgb24" \
        "$workdir/files/ref_640x480.png" 2>&1) && r=PASS || r=FAIL
    host_check reference_frame "$r" "v4l2-ctl RGB3 frame (no bvae): ${out#* }"
elif [ $done_ok -eq 1 ]; then
    host_check reference_frame FAIL "the guest sent no reference frame"
fi
for f in yuyv nv12 rgb gray; do
    png=$workdir/files/rec_$f.png
    [ -f "$png" ] || continue
    out=$(python3 "$here/check_frames.py" "$png" 2>&1) && r=PASS || r=FAIL
    host_check "frame_$f" "$r" "${out#* }"
done
if [ $done_ok -eq 1 ]; then
    host_check guest_done PASS "the guest reached GUEST-DONE (qemu exit $qemu_rc)"
else
    why="qemu exit $qemu_rc"
    [ $qemu_rc -eq 124 ] && why="killed after $limit s"
    host_check guest_done FAIL "the guest never reached GUEST-DONE ($why); last console lines: $(grep -v '^[A-Za-z0-9+/=]*$' "$log.txt" | tail -n 5 | tr '\n' ' ')"
fi

# ------------------------------------------------------------ report

passed=$(grep -c '^CHECK [^ ]* PASS' "$results" || true)
failed=$(grep -c '^CHECK [^ ]* FAIL' "$results" || true)

if [ "$failed" -gt 0 ] || [ "${CAMERA_GUEST_VERBOSE:-0}" = 1 ]; then
    echo
    echo "---------------- guest console (file contents and the format/control listings left out; all of it: $log.txt)"
    awk '
        /^BEGIN-FILE / { print "guest| " $0 " (base64 left out)"; skip = 1; next }
        /^END-FILE$/ { skip = 0; next }
        /^=== v4l2-ctl .*(list-formats-ext|-L)$/ { print "guest| " $0 " (left out)"; lst = 1; next }
        /^=== / { lst = 0 }
        skip || lst { next }
        { print "guest| " $0 }
    ' "$log.txt"
fi

echo
echo "---------------- camera guest results"
grep '^NOTE record_' "$log.txt" | sed 's/^NOTE /  note: /' || true
while read -r _ name res detail; do
    printf '%-4s %-20s %s\n' "$res" "$name" "$detail"
done <"$results"
echo
echo "kernel $kver; guest boot to userspace ${boot_s:-?} s (uptime); guest run $t_guest s; total $(since "$t_start") s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
