#!/usr/bin/env python3
"""Checks that frames captured from Linux's vivid driver show its default
test pattern: 75% colour bars, eight vertical bars of equal width, in the
order white, yellow, cyan, green, magenta, red, blue, black.

The colours are those of drivers/media/common/v4l2-tpg/v4l2-tpg-core.c
(tpg_get_color, bars[0]: TPG_COLOR_CSC_WHITE, TPG_COLOR_75_* ...,
TPG_COLOR_100_BLACK) with the values of v4l2-tpg-colors.c (tpg_colors):
white (191,191,191), yellow (191,191,0), cyan (0,191,191), green (0,191,0),
magenta (191,0,191), red (191,0,0), blue (0,0,191), black (0,0,0). The bar
index of column x is (8 * x) // width. vivid overlays text lines at the top
left, so the bars are sampled around 2/3 of the height. A gray frame is
compared with the luma vivid computes for its GREY format (see luma()).

Usage:
  check_frames.py [--tolerance N] FILE.png...
  check_frames.py --raw-rgb24 WxH RAW OUT.png   (convert a raw RGB24 frame
                                                 to PNG, then check it)
  check_frames.py --self-test                   (the decoder and the check
                                                 on PNGs made here)

Python 3 standard library only: a small PNG decoder (8-bit gray, gray +
alpha, RGB, RGBA; non-interlaced; all five filter types). Prints one line
per file; exits 1 if any file fails.
"""

import struct
import sys
import zlib

BARS = [
    ("white", (191, 191, 191)),
    ("yellow", (191, 191, 0)),
    ("cyan", (0, 191, 191)),
    ("green", (0, 191, 0)),
    ("magenta", (191, 0, 191)),
    ("red", (191, 0, 0)),
    ("blue", (0, 0, 191)),
    ("black", (0, 0, 0)),
]

CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


class PngError(Exception):
    pass


def luma(rgb):
    """What vivid puts in a GREY frame for an R'G'B' colour: v4l2-tpg-core.c,
    precalculate_color(), for formats with TGP_COLOR_ENC_LUMA: "Rec. 709 Luma
    function", (13879 * r + 46688 * g + 4713 * b) >> 16, i.e. the Rec. 709
    weights (0.2126, 0.7152, 0.0722) times 255/256, full range. (BT.601
    weights would differ by up to 25 on the magenta and green bars.)"""
    r, g, b = rgb
    return (13879 * r + 46688 * g + 4713 * b) / 65536.0


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    if pb <= pc:
        return b
    return c


def read_png(path):
    """Returns (width, height, channels, rows) with rows a list of bytearrays."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise PngError("not a PNG file")
    pos = 8
    ihdr = None
    idat = []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise PngError("truncated chunk %r" % ctype)
        pos += 12 + length
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    if ihdr is None:
        raise PngError("no IHDR chunk")
    width, height, depth, color, _comp, _filt, interlace = ihdr
    if depth != 8 or color not in CHANNELS:
        raise PngError("unsupported PNG: bit depth %d, colour type %d" % (depth, color))
    if interlace:
        raise PngError("interlaced PNG not supported")
    ch = CHANNELS[color]
    raw = zlib.decompress(b"".join(idat))
    stride = width * ch
    if len(raw) < height * (stride + 1):
        raise PngError("image data too short")
    rows = []
    prev = bytearray(stride)
    for y in range(height):
        off = y * (stride + 1)
        ftype = raw[off]
        line = bytearray(raw[off + 1 : off + 1 + stride])
        if ftype == 0:
            pass
        elif ftype == 1:
            for i in range(ch, stride):
                line[i] = (line[i] + line[i - ch]) & 0xFF
        elif ftype == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif ftype == 3:
            for i in range(stride):
                left = line[i - ch] if i >= ch else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                left = line[i - ch] if i >= ch else 0
                upleft = prev[i - ch] if i >= ch else 0
                line[i] = (line[i] + paeth(left, prev[i], upleft)) & 0xFF
        else:
            raise PngError("bad filter type %d in row %d" % (ftype, y))
        rows.append(line)
        prev = line
    return width, height, ch, rows


def write_png(path, width, height, ch, pixels):
    """Writes 8-bit gray (ch 1) or RGB (ch 3) rows (filter 0)."""
    color = {1: 0, 3: 2}[ch]
    stride = width * ch
    raw = b"".join(b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


def sample(rows, ch, x0, x1, y0, y1):
    """Mean colour (R, G, B; gray repeated) of the box [x0, x1) x [y0, y1)."""
    sums = [0.0, 0.0, 0.0]
    n = 0
    for y in range(y0, y1):
        row = rows[y]
        for x in range(x0, x1):
            px = row[x * ch : x * ch + ch]
            if ch <= 2:
                v = (px[0],) * 3
            else:
                v = px[:3]
            for i in range(3):
                sums[i] += v[i]
            n += 1
    return tuple(s / n for s in sums)


def check(path, tol):
    """Returns (ok, message)."""
    try:
        width, height, ch, rows = read_png(path)
    except (OSError, PngError, zlib.error) as e:
        return False, "%s: cannot read: %s" % (path, e)
    if width < 16 or height < 8:
        return False, "%s: %dx%d is too small for 8 bars" % (path, width, height)
    gray = ch <= 2
    yc = (2 * height) // 3
    dy = max(1, height // 40)
    bar_w = width / 8.0
    results = []
    ok = True
    for i, (name, rgb) in enumerate(BARS):
        xc = int((i + 0.5) * bar_w)
        dx = max(1, int(bar_w / 6))
        got = sample(rows, ch, xc - dx, xc + dx, yc - dy, yc + dy)
        if gray:
            want = (luma(rgb),) * 3
            err = abs(got[0] - want[0])
        else:
            want = rgb
            err = max(abs(g - w) for g, w in zip(got, want))
        good = err <= tol
        ok = ok and good
        results.append((name, got, want, err, good))
    kind = "gray" if gray else "colour"
    if ok:
        worst = max(r[3] for r in results)
        return True, "%s: %dx%d %s, 8 bars match (max error %.1f, tolerance %d)" % (
            path, width, height, kind, worst, tol)
    lines = ["%s: %dx%d %s, bars sampled at row %d do not match the 75%% colour bars:"
             % (path, width, height, kind, yc)]
    for name, got, want, err, good in results:
        if gray:
            lines.append("  %-8s got %5.1f        want %5.1f        err %5.1f %s"
                         % (name, got[0], want[0], err, "ok" if good else "BAD"))
        else:
            lines.append("  %-8s got (%5.1f,%5.1f,%5.1f) want (%3d,%3d,%3d) err %5.1f %s"
                         % ((name,) + tuple(got) + tuple(want) + (err, "ok" if good else "BAD")))
    return False, "\n".join(lines)


def _filter_row(ftype, line, prev, ch):
    """Forward PNG filter (for the self-test encoder)."""
    out = bytearray(len(line))
    for i in range(len(line)):
        left = line[i - ch] if i >= ch else 0
        up = prev[i]
        upleft = prev[i - ch] if i >= ch else 0
        pred = (0, left, up, (left + up) >> 1, paeth(left, up, upleft))[ftype]
        out[i] = (line[i] - pred) & 0xFF
    return out


def _encode(path, width, height, ch, pixels, filters):
    """PNG writer using the given filter type per row (cycled)."""
    color = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    stride = width * ch
    prev = bytearray(stride)
    raw = bytearray()
    for y in range(height):
        line = bytearray(pixels[y * stride : (y + 1) * stride])
        ftype = filters[y % len(filters)]
        raw.append(ftype)
        raw += _filter_row(ftype, line, prev, ch)
        prev = line

    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)))
        # two IDAT chunks, as encoders may split the stream
        z = zlib.compress(bytes(raw), 9)
        f.write(chunk(b"IDAT", z[: len(z) // 2]))
        f.write(chunk(b"IDAT", z[len(z) // 2 :]))
        f.write(chunk(b"IEND", b""))


def self_test():
    """Round-trips bars and noise through every filter type and channel
    count, and checks that the bar check accepts bars and rejects a
    shifted or swapped pattern. Returns 0 when all is well."""
    import os
    import random
    import tempfile

    rng = random.Random(7)
    w, h = 64, 24
    failures = []
    with tempfile.TemporaryDirectory() as d:
        for ch in (1, 2, 3, 4):
            for filters in ([0], [1], [2], [3], [4], [0, 1, 2, 3, 4]):
                noise = bytes(rng.randrange(256) for _ in range(w * h * ch))
                p = os.path.join(d, "n.png")
                _encode(p, w, h, ch, noise, filters)
                _, _, gch, rows = read_png(p)
                if gch != ch or b"".join(rows) != noise:
                    failures.append("round trip ch=%d filters=%s" % (ch, filters))

        def bars_image(order, ch):
            px = bytearray()
            for _y in range(h):
                for x in range(w):
                    rgb = BARS[order[(8 * x) // w]][1]
                    if ch in (1, 2):
                        v = (int(round(luma(rgb))),)
                    else:
                        v = rgb
                    px += bytes(v) + (b"\xff" if ch in (2, 4) else b"")
            return bytes(px)

        for ch in (1, 2, 3, 4):
            p = os.path.join(d, "b%d.png" % ch)
            _encode(p, w, h, ch, bars_image(list(range(8)), ch), [4, 3, 2, 1, 0])
            ok, msg = check(p, 40)
            if not ok:
                failures.append("bars ch=%d rejected: %s" % (ch, msg))
            wrong = [1, 0, 2, 3, 4, 5, 7, 6] if ch >= 3 else [7, 6, 5, 4, 3, 2, 1, 0]
            _encode(p, w, h, ch, bars_image(wrong, ch), [1])
            ok, msg = check(p, 40)
            if ok:
                failures.append("wrong bars ch=%d accepted" % ch)
    for f in failures:
        print("self-test FAIL: " + f)
    if not failures:
        print("self-test PASS: PNG decoder (gray, gray+alpha, RGB, RGBA; filters 0-4) and bar check")
    return 1 if failures else 0


def main(argv):
    tol = 40
    args = list(argv)
    if args == ["--self-test"]:
        return self_test()
    if args[:1] == ["--tolerance"] and len(args) >= 2:
        tol = int(args[1])
        args = args[2:]
    if args[:1] == ["--raw-rgb24"]:
        if len(args) != 4:
            print(__doc__)
            return 2
        w, h = (int(v) for v in args[1].lower().split("x"))
        with open(args[2], "rb") as f:
            raw = f.read()
        if len(raw) < w * h * 3:
            print("%s: %d bytes, a %dx%d RGB24 frame needs %d" % (args[2], len(raw), w, h, w * h * 3))
            return 1
        write_png(args[3], w, h, 3, raw[: w * h * 3])
        args = [args[3]]
    if not args or args[0].startswith("-"):
        print(__doc__)
        return 2
    failed = 0
    for path in args:
        ok, msg = check(path, tol)
        print(("PASS " if ok else "FAIL ") + msg)
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
