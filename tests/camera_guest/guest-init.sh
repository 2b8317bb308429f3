#!/bin/sh
# /init of the camera test guest (busybox sh; tests/camera_guest/run.sh
# builds the initramfs and parses what this prints on the serial console).
#
# It loads Linux's vivid V4L2 test driver (/dev/video0, a webcam-like
# capture device showing 75% colour bars) and runs the real `bvae` binary
# against it. Every result is one line
#     CHECK <name> PASS|FAIL <detail>
# (NOTE lines are information and are not counted); files for the host go
# base64-encoded between "BEGIN-FILE <name>" and "END-FILE". A failing
# step is a FAIL line, never the end of the script: it always ends with
# GUEST-DONE and powers the guest off.

export PATH=/bin:/usr/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64
export HOME=/tmp
export RUST_BACKTRACE=1

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
# Kernel messages of level warning and above only (quiet already does this);
# they would otherwise interleave with the base64 blocks.
echo 4 >/proc/sys/kernel/printk 2>/dev/null

# Settings from run.sh (defaults for a run by hand).
BVAE=/bin/bvae
MODEL=/models/synthetic.onnx
PROFILE=/models/synthetic.calibration.json
WATCH_SOURCE=camera:0
WATCH_FRAMES=300
WATCH_LIMIT=300
# shellcheck disable=SC1091
[ -f /etc/camera_guest.conf ] && . /etc/camera_guest.conf

# ---------------------------------------------------------------- helpers

now() { read -r up _ </proc/uptime; echo "$up"; }
# Seconds from $1 to $2 (uptime stamps, 10 ms resolution).
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# True when $1 <= $2 (floats).
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

PASSED=0
FAILED=0
check() {
    # check NAME PASS|FAIL DETAIL...
    name=$1 res=$2
    shift 2
    echo "CHECK $name $res $*"
    if [ "$res" = PASS ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
}
note() { echo "NOTE $*"; }

# One line of a file's text for a CHECK detail: first and last lines of
# stderr, say, without newlines, at most 400 characters.
oneline() {
    [ -s "$1" ] || { echo "(empty)"; return; }
    { head -n 3 "$1"; [ "$(wc -l <"$1")" -gt 6 ] && echo "..."; [ "$(wc -l <"$1")" -gt 3 ] && tail -n 3 "$1"; } |
        tr '\n\r\t' '   ' | cut -c1-400
}

# Prints a file into the log, each line indented (for stderr of a step).
show() {
    label=$1 file=$2
    [ -s "$file" ] || return 0
    echo "--- $label ($(wc -l <"$file") lines; last 15):"
    tail -n 15 "$file" | cut -c1-300 | sed 's/^/    /'
}

send_file() {
    # send_file NAME PATH: base64 between markers, decoded by run.sh.
    if [ -f "$2" ]; then
        echo "BEGIN-FILE $1"
        base64 "$2"
        echo "END-FILE"
    fi
}

alive() {
    [ -d "/proc/$1" ] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# utime + stime of a process, in clock ticks.
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'
}

# wait_for FILE REGEX SECONDS [PID]: polls until FILE has a line matching
# REGEX (0) or the time is up or PID exited (1).
wait_for() {
    end=$(awk -v t="$(now)" -v s="$3" 'BEGIN { print t + s }')
    while :; do
        grep -Eq "$2" "$1" 2>/dev/null && return 0
        if [ -n "$4" ] && ! alive "$4"; then
            grep -Eq "$2" "$1" 2>/dev/null && return 0
            return 1
        fi
        le "$end" "$(now)" && return 1
        sleep 0.1
    done
}

# stop_within PID SECONDS: sends SIGTERM, waits up to 5 s; prints the
# seconds it took and returns 0 when that is <= SECONDS; kills it with
# SIGKILL after 5 s.
stop_within() {
    t0=$(now)
    kill -TERM "$1" 2>/dev/null
    while alive "$1"; do
        if le 5 "$(elapsed "$t0" "$(now)")"; then
            kill -KILL "$1" 2>/dev/null
            echo "still running after 5 s (killed)"
            return 1
        fi
        sleep 0.05
    done
    took=$(elapsed "$t0" "$(now)")
    echo "$took"
    le "$took" "$2"
}

# run_limited SECONDS CMD...: runs CMD (stdin from /dev/null; redirect its
# output on the call) with a time limit: SIGTERM when the time is up, SIGKILL
# 5 s later. Returns CMD's exit code (143 or 137 after a signal); sets
# TIMED_OUT=1 when the limit was hit.
run_limited() {
    lim=$1
    shift
    TIMED_OUT=0
    "$@" </dev/null &
    rl_pid=$!
    rl_t0=$(now)
    rl_term=0
    while alive "$rl_pid"; do
        rl_el=$(elapsed "$rl_t0" "$(now)")
        if [ $rl_term -eq 0 ] && le "$lim" "$rl_el"; then
            TIMED_OUT=1
            rl_term=1
            kill -TERM "$rl_pid" 2>/dev/null
        elif [ $rl_term -eq 1 ] && le "$((lim + 5))" "$rl_el"; then
            rl_term=2
            kill -KILL "$rl_pid" 2>/dev/null
        fi
        sleep 0.1
    done
    wait "$rl_pid"
}

EV_TYPE='"(type|event)":'
last_is_summary() {
    # the last non-empty line of $1 is a summary event
    tail -n 1 "$1" 2>/dev/null | grep -Eq "^\{.*${EV_TYPE}\"summary\""
}
json_field() {
    # json_field NAME LINE: a number field of a flat JSON object
    echo "$2" | sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" | head -n 1
}

VIVID_DIR=/lib/modules/vivid
load_vivid() {
    # Dependencies first (once), then vivid itself.
    while read -r mod; do
        name=$(basename "$mod" .ko | tr - _)
        grep -q "^$name " /proc/modules && continue
        if [ "$name" = vivid ]; then
            insmod "$VIVID_DIR/$mod" n_devs=1 || return 1
        else
            insmod "$VIVID_DIR/$mod" || return 1
        fi
    done <"$VIVID_DIR/order"
}
wait_video0() {
    i=0
    while [ ! -e /dev/video0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    [ -e /dev/video0 ] || return 1
    # vivid starts at 640x360 YUYV, 5 fps; a webcam usually runs at 30.
    v4l2-ctl -d /dev/video0 --set-parm=30 >/dev/null 2>&1
}
# rmmod_vivid SECONDS: retries while the module is busy.
rmmod_vivid() {
    t0=$(now)
    while ! rmmod vivid 2>/tmp/rmmod.err; do
        le "$1" "$(elapsed "$t0" "$(now)")" && return 1
        sleep 0.2
    done
    return 0
}

# Starts `bvae watch` on the camera in the background; $1 = events file.
start_watch() {
    "$BVAE" watch "$MODEL" -c "$PROFILE" --source camera:0 --headless \
        --stall-timeout 1 --stats-interval 1 >"$1" 2>"$1.err" &
    WATCH_PID=$!
    WATCH_T0=$(now)
}

# Waits for the watch of start_watch to deliver (a stats event, or any
# frame-bearing event), up to $2 s. Sets ST to what happened; returns 0
# when it streams.
wait_streaming() {
    if wait_for "$1" "${EV_TYPE}\"(stats|anomaly_start|anomaly_update)\"" "$2" "$WATCH_PID"; then
        ST="streaming after $(elapsed "$WATCH_T0" "$(now)") s"
        return 0
    fi
    if alive "$WATCH_PID"; then
        ST="no stats event after $2 s"
    else
        wait "$WATCH_PID"
        ST="bvae exited early (exit $?): $(oneline "$1.err")"
    fi
    return 1
}

# ---------------------------------------------------------------- start

echo "GUEST-START kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ { print $2 / 1024 " MB" }' /proc/meminfo)"
note "bvae: $("$BVAE" --version 2>&1 | head -n 1)"
T_BOOT=$(now)
note "userspace up at ${T_BOOT} s uptime"

# ---------------------------------------------------------------- vivid

if load_vivid && wait_video0; then
    check vivid_load PASS "vivid and its $(($(wc -l <"$VIVID_DIR/order") - 1)) dependencies loaded, /dev/video0 present ($(v4l2-ctl -d /dev/video0 --info 2>/dev/null | sed -n 's/.*Card type *: *//p'))"
else
    check vivid_load FAIL "insmod failed or no /dev/video0: $(dmesg | tail -n 3 | tr '\n' ' ')"
fi

note "vivid frame rate set to 30 fps after each load (its default is 5)"
echo "=== v4l2-ctl -d /dev/video0 --list-formats-ext"
v4l2-ctl -d /dev/video0 --list-formats-ext 2>&1
echo "=== v4l2-ctl -d /dev/video0 --get-fmt-video --get-parm"
v4l2-ctl -d /dev/video0 --get-fmt-video --get-parm 2>&1
echo "=== v4l2-ctl -d /dev/video0 -L"
v4l2-ctl -d /dev/video0 -L >/tmp/controls.txt 2>&1
cat /tmp/controls.txt
echo "=== end of listings"
missing=""
for c in disconnect percentage_of_dropped_buffers; do
    grep -Eq "^ *$c 0x" /tmp/controls.txt || missing="$missing $c"
done
if [ -z "$missing" ]; then
    check vivid_controls PASS "controls disconnect and percentage_of_dropped_buffers present"
else
    check vivid_controls FAIL "missing controls:$missing"
fi

# ---------------------------------------------------------------- a. cameras

run_limited 60 "$BVAE" cameras >/tmp/a.out 2>&1
rc=$?
show "bvae cameras" /tmp/a.out
miss=""
for w in camera:0 YUYV NV12 640x480; do grep -q "$w" /tmp/a.out || miss="$miss $w"; done
if [ $rc -eq 0 ] && [ -z "$miss" ]; then
    check cameras PASS "exit 0, lists camera:0 with YUYV, NV12, 640x480"
else
    check cameras FAIL "exit $rc, missing:${miss:- nothing}; output: $(oneline /tmp/a.out)"
fi

# ---------------------------------------------------------------- b. record

ok_formats=0
summary=""
for f in yuyv nv12 rgb gray; do
    out=/tmp/rec_$f
    t0=$(now)
    run_limited 60 "$BVAE" record --source "camera:0,format=$f,width=640,height=480" --frames 3 -o "$out" \
        >/tmp/rec_$f.log 2>&1
    rc=$?
    took=$(elapsed "$t0" "$(now)")
    if [ $rc -eq 0 ] && [ -f "$out/frame_000002.png" ]; then
        ok_formats=$((ok_formats + 1))
        summary="$summary $f:ok"
        note "record_$f ok: exit 0 in $took s, $(ls "$out" | grep -c '\.png$') PNG files, frame_000002.png $(wc -c <"$out/frame_000002.png") bytes"
        send_file "rec_$f.png" "$out/frame_000002.png"
    else
        summary="$summary $f:FAIL"
        show "bvae record $f" /tmp/rec_$f.log
        note "record_$f FAIL: exit $rc in $took s, files: $(ls "$out" 2>/dev/null | tr '\n' ' '); output: $(oneline /tmp/rec_$f.log)"
    fi
done
if [ $ok_formats -ge 3 ]; then
    check record PASS "$ok_formats/4 formats recorded 3 frames at 640x480:$summary"
else
    check record FAIL "$ok_formats/4 formats recorded 3 frames at 640x480 (3 needed):$summary"
fi

# ---------------------------------------------------------------- c. watch

t0=$(now)
run_limited "$WATCH_LIMIT" "$BVAE" watch "$MODEL" -c "$PROFILE" --source "$WATCH_SOURCE" --headless \
    --max-frames "$WATCH_FRAMES" >/tmp/c.jsonl 2>/tmp/c.err
rc=$?
took=$(elapsed "$t0" "$(now)")
show "bvae watch stderr" /tmp/c.err
last=$(tail -n 1 /tmp/c.jsonl 2>/dev/null)
echo "    last event: $(echo "$last" | cut -c1-600)"
processed=$(json_field processed "$last")
if [ $rc -eq 0 ] && last_is_summary /tmp/c.jsonl && [ -n "$processed" ] && [ "$processed" -ge "$WATCH_FRAMES" ]; then
    check watch PASS "exit 0 in $took s, summary processed=$processed dropped=$(json_field dropped "$last") processed_fps=$(json_field processed_fps "$last") latency_ms_p50=$(json_field latency_ms_p50 "$last") (source $WATCH_SOURCE)"
else
    [ $TIMED_OUT -eq 1 ] && rc="$rc (stopped: time limit of $WATCH_LIMIT s)"
    check watch FAIL "exit $rc in $took s, $(wc -l </tmp/c.jsonl) events, processed=${processed:-none}, last: $(echo "$last" | cut -c1-200); stderr: $(oneline /tmp/c.err)"
fi

# ---------------------------------------------------------------- d. disconnect, module reload

# vivid's "disconnect" button unregisters its device nodes (the node stays
# in /dev but every ioctl and open fails with ENODEV, like an unplugged
# USB camera) and, in this kernel, registers them again by itself as soon
# as the last open file is closed ("vivid-000: reconnect"). So that the
# camera stays gone until the module reload, a holder process keeps
# /dev/video0 open across the disconnect, and /dev/video0 is deleted
# before the holder closes it: then bvae's reopen attempts find no node
# (ENOENT, as after a real unplug) until `insmod vivid` makes a new one.
EV=/tmp/d.jsonl
start_watch "$EV"
wait_streaming "$EV" 60
streaming=$?
st=$ST
note "d: watch pid $WATCH_PID: $st"
sleep 100000 </dev/video0 &
HOLDER=$!
sleep 0.2
tdis=$(now)
v4l2-ctl -d /dev/video0 -c disconnect=1 >/tmp/dis.out 2>&1
note "d: v4l2-ctl -c disconnect=1: exit $? $(oneline /tmp/dis.out); afterwards v4l2-ctl --info $(v4l2-ctl -d /dev/video0 --info >/dev/null 2>&1 && echo works || echo fails); /dev/video0 $( [ -e /dev/video0 ] && echo still exists || echo is gone)"
lost=1
if [ $streaming -ne 0 ]; then
    check disconnect_lost FAIL "watch never streamed: $st"
elif wait_for "$EV" "${EV_TYPE}\"camera_lost\"" 15 "$WATCH_PID"; then
    lost=0
    check disconnect_lost PASS "camera_lost $(elapsed "$tdis" "$(now)") s after the disconnect: $(grep -E "${EV_TYPE}\"camera_lost\"" "$EV" | head -n 1 | cut -c1-250)"
else
    check disconnect_lost FAIL "no camera_lost within 15 s of the disconnect (bvae $(alive "$WATCH_PID" && echo running || echo exited)); stderr: $(oneline "$EV.err")"
fi

# Has bvae closed the device? Its open files, then whether vivid unloads.
video_fds() { for fd in /proc/"$1"/fd/*; do readlink "$fd"; done 2>/dev/null | grep -c '/dev/video'; }
trel=$(now)
fds=$(video_fds "$WATCH_PID")
while alive "$WATCH_PID" && [ "$fds" -gt 0 ] && ! le 10 "$(elapsed "$trel" "$(now)")"; do
    sleep 0.1
    fds=$(video_fds "$WATCH_PID")
done
closed_after=$(elapsed "$trel" "$(now)")
rm -f /dev/video*
kill "$HOLDER" 2>/dev/null
wait "$HOLDER" 2>/dev/null
sleep 0.2
released=0
rmmod_vivid 5 && released=1
if [ $streaming -ne 0 ] || [ $lost -ne 0 ]; then
    check disconnect_release FAIL "not measured (no camera_lost); bvae holds $fds /dev/video fds, rmmod vivid $([ $released -eq 1 ] && echo succeeded || echo "failed: $(oneline /tmp/rmmod.err)")"
elif [ "$fds" -eq 0 ] && [ $released -eq 1 ]; then
    check disconnect_release PASS "bvae closed /dev/video0 within $closed_after s of camera_lost; rmmod vivid then succeeded"
else
    check disconnect_release FAIL "bvae $(alive "$WATCH_PID" && echo "still holds $fds /dev/video fds $closed_after s after camera_lost" || echo exited); rmmod vivid $([ $released -eq 1 ] && echo succeeded || echo "failed: $(oneline /tmp/rmmod.err)")"
fi

if [ $streaming -ne 0 ] || [ $lost -ne 0 ]; then
    check lost_cpu FAIL "not measured: no camera_lost"
elif alive "$WATCH_PID"; then
    c0=$(cpu_ticks "$WATCH_PID")
    w0=$(now)
    sleep 3
    c1=$(cpu_ticks "$WATCH_PID")
    w1=$(now)
    # USER_HZ is 100 on x86
    pct=$(awk -v a="$c0" -v b="$c1" -v s="$(elapsed "$w0" "$w1")" 'BEGIN { printf "%.1f", (b - a) / s }')
    where=$([ $released -eq 1 ] && echo "module unloaded" || echo "device disconnected, module still loaded")
    if le "$pct" 50; then
        check lost_cpu PASS "${pct}% of one CPU over $(elapsed "$w0" "$w1") s while the camera was gone ($where)"
    else
        check lost_cpu FAIL "${pct}% of one CPU over $(elapsed "$w0" "$w1") s while the camera was gone ($where): busy loop?"
    fi
else
    check lost_cpu FAIL "bvae not running"
fi

killed=0
if [ $released -eq 0 ]; then
    # The module must go for the later steps: stop bvae first.
    alive "$WATCH_PID" && killed=1
    kill -KILL "$WATCH_PID" 2>/dev/null
    sleep 0.3
    rmmod_vivid 5 || note "rmmod vivid fails even with bvae gone: $(oneline /tmp/rmmod.err)"
fi
tload=$(now)
load_vivid && wait_video0
note "d: vivid reloaded (exit $?) in $(elapsed "$tload" "$(now)") s"
if [ $streaming -ne 0 ]; then
    check reload_recovered FAIL "not measured: watch never streamed"
elif [ $released -eq 0 ]; then
    check reload_recovered FAIL "not measured: vivid could not be unloaded while bvae ran"
elif wait_for "$EV" "${EV_TYPE}\"camera_recovered\"" 30 "$WATCH_PID"; then
    check reload_recovered PASS "camera_recovered $(elapsed "$tload" "$(now)") s after the module reload: $(grep -E "${EV_TYPE}\"camera_recovered\"" "$EV" | tail -n 1 | cut -c1-250)"
else
    check reload_recovered FAIL "no camera_recovered within 30 s of the module reload (bvae $(alive "$WATCH_PID" && echo running || echo exited)); stderr: $(oneline "$EV.err")"
fi

if [ $streaming -ne 0 ]; then
    check disconnect_sigterm FAIL "not measured: watch never streamed"
elif [ $killed -eq 1 ]; then
    check disconnect_sigterm FAIL "not measured: bvae was killed (SIGKILL) so that vivid could be unloaded"
elif alive "$WATCH_PID"; then
    r=$(stop_within "$WATCH_PID" 2)
    ok=$?
    wait "$WATCH_PID" 2>/dev/null
    code=$?
    if [ $ok -eq 0 ] && last_is_summary "$EV"; then
        check disconnect_sigterm PASS "exited ${r} s after SIGTERM (exit $code) with a summary: $(tail -n 1 "$EV" | cut -c1-200)"
    else
        check disconnect_sigterm FAIL "SIGTERM: ${r}, exit $code; last event: $(tail -n 1 "$EV" | cut -c1-200)"
    fi
else
    check disconnect_sigterm FAIL "bvae was not running any more"
fi
kill -KILL "$WATCH_PID" 2>/dev/null
show "watch (disconnect) stderr" "$EV.err"
note "d: events: $(grep -Eo "${EV_TYPE}\"[a-z_]*\"" "$EV" | sed 's/.*:"//; s/"//' | uniq -c | tr '\n' ' ' | tr -s ' ')"

# ---------------------------------------------------------------- e. stall

EV=/tmp/e.jsonl
start_watch "$EV"
wait_streaming "$EV" 60
streaming=$?
st=$ST
note "e: watch pid $WATCH_PID: $st"
tst=$(now)
v4l2-ctl -d /dev/video0 -c percentage_of_dropped_buffers=100 >/tmp/drop.out 2>&1
note "e: v4l2-ctl -c percentage_of_dropped_buffers=100: exit $? $(oneline /tmp/drop.out); now $(v4l2-ctl -d /dev/video0 -C percentage_of_dropped_buffers 2>&1)"
if [ $streaming -ne 0 ]; then
    check stall_lost FAIL "watch never streamed: $st"
elif wait_for "$EV" "${EV_TYPE}\"camera_lost\"" 15 "$WATCH_PID"; then
    check stall_lost PASS "camera_lost $(elapsed "$tst" "$(now)") s after buffers stopped: $(grep -E "${EV_TYPE}\"camera_lost\"" "$EV" | head -n 1 | cut -c1-250)"
else
    check stall_lost FAIL "no camera_lost within 15 s of the stall (bvae $(alive "$WATCH_PID" && echo running || echo exited)); stderr: $(oneline "$EV.err")"
fi
if [ $streaming -ne 0 ]; then
    check stall_sigterm FAIL "not measured: watch never streamed"
elif alive "$WATCH_PID"; then
    sleep 1
    r=$(stop_within "$WATCH_PID" 2)
    ok=$?
    wait "$WATCH_PID" 2>/dev/null
    code=$?
    if [ $ok -eq 0 ] && last_is_summary "$EV"; then
        check stall_sigterm PASS "exited ${r} s after SIGTERM (exit $code) during the stall, with a summary: $(tail -n 1 "$EV" | cut -c1-200)"
    else
        check stall_sigterm FAIL "SIGTERM during the stall: ${r}, exit $code; last event: $(tail -n 1 "$EV" | cut -c1-200)"
    fi
else
    check stall_sigterm FAIL "bvae was not running any more"
fi
kill -KILL "$WATCH_PID" 2>/dev/null
show "watch (stall) stderr" "$EV.err"
note "e: events: $(grep -Eo "${EV_TYPE}\"[a-z_]*\"" "$EV" | sed 's/.*:"//; s/"//' | uniq -c | tr '\n' ' ' | tr -s ' ')"
v4l2-ctl -d /dev/video0 -c percentage_of_dropped_buffers=0 >/dev/null 2>&1 ||
    note "could not reset percentage_of_dropped_buffers"

# ---------------------------------------------------------------- f. missing camera

run_limited 60 "$BVAE" record --source camera:7 --frames 1 -o /tmp/x >/tmp/f.out 2>/tmp/f.err
rc=$?
show "bvae record camera:7 stderr" /tmp/f.err
if [ $rc -ne 0 ] && [ $rc -ne 101 ] && ! grep -q panicked /tmp/f.err &&
    grep -Eiq 'camera 7|/dev/video7' /tmp/f.err; then
    check missing_camera PASS "exit $rc, names the camera: $(oneline /tmp/f.err)"
else
    check missing_camera FAIL "exit $rc (want non-zero, not 101, no panic, stderr naming camera 7 or /dev/video7): $(oneline /tmp/f.err)"
fi

# ---------------------------------------------------------------- g. a size the camera lacks

run_limited 60 "$BVAE" record --source camera:0,width=800,height=600 --frames 1 -o /tmp/g >/tmp/g.out 2>/tmp/g.err
rc=$?
show "bvae record camera:0,width=800,height=600 stderr" /tmp/g.err
if [ $rc -ne 0 ] && [ $rc -ne 101 ] && grep -q 'does not offer 800x600' /tmp/g.err &&
    grep -q 'format=yuyv (YUYV):' /tmp/g.err && grep -q 'try --source camera:0,format=' /tmp/g.err; then
    check size_not_offered PASS "exit $rc, lists the modes and what to type"
else
    check size_not_offered FAIL "exit $rc (want non-zero, the offered modes and a --source to try): $(oneline /tmp/g.err)"
fi

# ---------------------------------------------------------------- reference frame

# One RGB24 frame straight from the driver (no bvae): the host checks it
# with the same colour-bar check as the recorded frames, which proves the
# transfer and the check itself.
rm -f /tmp/ref.rgb
if v4l2-ctl -d /dev/video0 --set-fmt-video=width=640,height=480,pixelformat=RGB3 \
    --stream-mmap --stream-skip=2 --stream-count=1 --stream-to=/tmp/ref.rgb >/tmp/ref.out 2>&1 &&
    [ "$(wc -c </tmp/ref.rgb)" -eq 921600 ]; then
    gzip -9 /tmp/ref.rgb
    note "reference frame: 640x480 RGB3 from v4l2-ctl, $(wc -c </tmp/ref.rgb.gz) bytes gzipped"
    send_file ref_640x480.rgb24.gz /tmp/ref.rgb.gz
else
    check reference_capture FAIL "v4l2-ctl capture failed: $(oneline /tmp/ref.out) ($(wc -c </tmp/ref.rgb 2>/dev/null) bytes)"
fi

echo "GUEST-SUMMARY guest checks: $PASSED passed, $FAILED failed; $(elapsed "$T_BOOT" "$(now)") s after userspace start"
echo "GUEST-DONE"
sync
poweroff -f
sleep 5
echo o >/proc/sysrq-trigger
