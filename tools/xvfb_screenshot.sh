#!/usr/bin/env bash
# Screenshot check of the live window: runs `bvae demo` in a window on a
# virtual X server (Xvfb), waits for the first injected anomaly to be
# detected, takes a screenshot and fails if the picture is blank or
# uniform, or if the demo fell back to headless.
#
#   bash tools/xvfb_screenshot.sh [OUT.png]      (default /tmp/bvae-window.png)
#
# Needs Xvfb, xwd and ImageMagick (Debian: xvfb x11-apps imagemagick) and
# libxcursor1 (minifb loads libX11 and libXcursor at run time). With
# xdotool it also checks that Esc closes the window and stops the demo.
# BVAE_BIN picks the binary (default: the debug build, built if missing);
# XVFB_DISPLAY the display number (default :99); MIN_FRAME the earliest
# anomaly_start frame to wait for (default 150, the first injected episode).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-/tmp/bvae-window.png}
disp=${XVFB_DISPLAY:-:99}
min_frame=${MIN_FRAME:-150}
target=${CARGO_TARGET_DIR:-target}
bin=${BVAE_BIN:-$target/debug/bvae}
if [[ ! -x $bin ]]; then
    cargo build --quiet
fi
for tool in Xvfb xwd convert; do
    command -v "$tool" >/dev/null || { echo "xvfb_screenshot: $tool is missing" >&2; exit 2; }
done

work=$(mktemp -d)
xvfb_pid=''
demo_pid=''
cleanup() {
    [[ -n $demo_pid ]] && kill "$demo_pid" 2>/dev/null || true
    [[ -n $xvfb_pid ]] && kill "$xvfb_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The screen is the window's size: no window manager, so the window sits at
# (0, 0) and the root screenshot is the window.
Xvfb "$disp" -screen 0 960x568x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
xvfb_pid=$!
sock=/tmp/.X11-unix/X${disp#:}
for _ in $(seq 1 50); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || { echo "xvfb_screenshot: Xvfb did not start" >&2; cat "$work/xvfb.log" >&2; exit 1; }

DISPLAY=$disp "$bin" demo --max-frames $((min_frame + 900)) --events "$work/events.jsonl" \
    >/dev/null 2>"$work/demo.err" &
demo_pid=$!

# Wait (at most 60 s past MIN_FRAME at 30 fps) for an anomaly_start at
# MIN_FRAME or later, so the score plot has some history.
found=''
for _ in $(seq 1 $((600 + min_frame / 3))); do
    if grep -o '"type":"anomaly_start"[^}]*"frame":[0-9]*' "$work/events.jsonl" 2>/dev/null |
        awk -F'"frame":' -v m="$min_frame" '$2 >= m { ok = 1 } END { exit !ok }'; then
        found=1
        break
    fi
    kill -0 "$demo_pid" 2>/dev/null || break
    sleep 0.1
done
sleep 0.5
if ! grep -q "live window open" "$work/demo.err"; then
    echo "xvfb_screenshot: the demo opened no window:" >&2
    cat "$work/demo.err" >&2
    exit 1
fi
[[ -n $found ]] || echo "xvfb_screenshot: note: no anomaly detected from frame $min_frame on; taking the screenshot anyway" >&2

xwd -root -silent -display "$disp" | convert xwd:- "png:$out"

# Blank or uniform pictures fail: the window must show many colours and
# real contrast.
read -r colours stddev < <(convert "$out" -format '%k %[fx:standard_deviation]\n' info:)
echo "xvfb_screenshot: $out: $colours colours, standard deviation $stddev"
awk -v c="$colours" -v s="$stddev" 'BEGIN { exit !(c >= 32 && s >= 0.05) }' || {
    echo "xvfb_screenshot: the screenshot is blank or nearly uniform" >&2
    exit 1
}

# Esc stops the demo cleanly (with xdotool to press it), else SIGTERM does;
# either way it prints its summary.
if command -v xdotool >/dev/null; then
    DISPLAY=$disp xdotool mousemove 480 284 key Escape
    for _ in $(seq 1 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$demo_pid" 2>/dev/null; then
        echo "xvfb_screenshot: Esc did not stop the demo" >&2
        exit 1
    fi
else
    kill -TERM "$demo_pid"
fi
wait "$demo_pid" || true
demo_pid=''
grep -E "^processed [0-9]+ frames" "$work/demo.err" || {
    echo "xvfb_screenshot: the demo printed no summary:" >&2
    cat "$work/demo.err" >&2
    exit 1
}
echo "xvfb_screenshot: ok"
