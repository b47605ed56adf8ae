"""The single-layer micro-benchmarks the latency calibration times: one aten op each, on a synthetic grid
of shapes per op kind (see cnnprof.predict.latency for how they are fitted)."""
from __future__ import annotations

from typing import Callable

from cnnprof.counting.traffic import COPY_TYPE, TrafficCounter

COLD_BYTES = {"cpu": 64 << 20, "cuda": 128 << 20}  # fallback CPU figure; above an H100's 50 MB L2
MAX_COPIES = 64


def grid() -> list[tuple[str, str, Callable]]:
    """(kind, label, make(device, dtype) -> zero-argument callable) of every single-layer micro-benchmark.
    Synthetic shapes spanning the channel, resolution and kernel ranges of ImageNet CNNs."""
    import torch
    import torch.nn.functional as F

    def t(dev, dt, *shape):
        return torch.randn(*shape, device=dev, dtype=dt)

    def conv(cin, cout, h, k=3, s=1, g=1):
        def make(dev, dt):
            x, w = t(dev, dt, 1, cin, h, h), t(dev, dt, cout, cin // g, k, k)
            return lambda: F.conv2d(x, w, None, s, k // 2, 1, g)
        return make

    def linear(rows, fin, fout):
        def make(dev, dt):
            x, w, b = t(dev, dt, rows, fin), t(dev, dt, fout, fin), t(dev, dt, fout)
            return lambda: F.linear(x, w, b)
        return make

    def bn(c, h):
        def make(dev, dt):
            x, p = t(dev, dt, 1, c, h, h), [t(dev, dt, c).abs() for _ in range(4)]
            return lambda: F.batch_norm(x, p[0], p[1], p[2], p[3], False)
        return make

    def ln(h, c):
        def make(dev, dt):
            x, w, b = t(dev, dt, 1, h, h, c), t(dev, dt, c), t(dev, dt, c)
            return lambda: F.layer_norm(x, (c,), w, b)
        return make

    def unary(fn, c, h):
        def make(dev, dt):
            x = t(dev, dt, 1, c, h, h)
            return lambda: fn(x)
        return make

    def binary(c, h, broadcast=False):
        def make(dev, dt):
            x, y = t(dev, dt, 1, c, h, h), t(dev, dt, 1, c, 1, 1) if broadcast else t(dev, dt, 1, c, h, h)
            return lambda: torch.mul(x, y) if broadcast else torch.add(x, y)
        return make

    def pool(c, h, k, s, avg=False):
        def make(dev, dt):
            x = t(dev, dt, 1, c, h, h)
            return lambda: (F.avg_pool2d if avg else F.max_pool2d)(x, k, s, k // 2)
        return make

    def gpool(c, h):
        def make(dev, dt):
            x = t(dev, dt, 1, c, h, h)
            return lambda: F.adaptive_avg_pool2d(x, 1)
        return make

    def cat(c, h):
        def make(dev, dt):
            a, b = t(dev, dt, 1, c, h, h), t(dev, dt, 1, c, h, h)
            return lambda: torch.cat([a, b], 1)
        return make

    def shuffle(c, h):
        def make(dev, dt):
            x = t(dev, dt, 1, 2, c // 2, h, h)
            return lambda: x.transpose(1, 2).contiguous()
        return make

    # Shapes are deliberately off the zoo's (channels and resolutions no ImageNet model here uses; a test
    # checks that no micro-benchmark equals a zoo layer), so no model is ever part of its own calibration.
    g: list[tuple[str, str, Callable]] = []
    for cin, cout, h, k, s in [(3, 24, 208, 3, 2), (3, 48, 200, 7, 2), (24, 24, 104, 3, 1), (40, 40, 52, 3, 1),
                               (72, 72, 52, 3, 1), (72, 136, 52, 3, 2), (136, 136, 26, 3, 1), (104, 200, 26, 3, 1),
                               (264, 264, 13, 3, 1), (456, 456, 6, 3, 1), (200, 392, 26, 3, 2)]:
        g.append(("conv", f"conv {k}x{k} {cin}->{cout} @{h} s{s}", conv(cin, cout, h, k, s)))
    for cin, cout, h in [(24, 88, 104), (32, 136, 52), (136, 32, 52), (72, 264, 52), (264, 72, 52), (136, 456, 26),
                         (456, 136, 26), (264, 920, 13), (920, 264, 13), (328, 1200, 6), (904, 176, 6),
                         (456, 1800, 6), (1800, 456, 6), (72, 20, 1), (904, 224, 1), (224, 904, 1), (40, 12, 1)]:
        g.append(("pointwise conv", f"conv 1x1 {cin}->{cout} @{h}", conv(cin, cout, h, 1)))
    for c, h, k, s in [(40, 104, 3, 1), (88, 104, 3, 2), (136, 52, 3, 1), (136, 52, 3, 2), (200, 26, 3, 1),
                       (392, 13, 3, 1), (600, 13, 3, 1), (904, 6, 3, 1), (232, 26, 5, 1), (680, 13, 5, 1),
                       (1096, 6, 5, 1), (80, 52, 5, 2)]:
        g.append(("depthwise conv", f"dw {k}x{k} {c} @{h} s{s}", conv(c, c, h, k, s, c)))
    for c, h, grp in [(144, 52, 36), (264, 26, 33), (520, 13, 65), (1040, 6, 65), (72, 52, 9), (168, 13, 7),
                      (400, 6, 25), (56, 26, 2)]:
        g.append(("grouped conv", f"grouped 3x3 {c} g{grp} @{h}", conv(c, c, h, 3, 1, grp)))
    for rows, fin, fout in [(1, 640, 800), (1, 1536, 900), (1, 1792, 1000), (1, 3584, 3072), (1, 8192, 3072),
                            (2704, 88, 352), (676, 352, 176), (36, 2816, 704)]:
        g.append(("linear", f"linear {rows}x{fin}->{fout}", linear(rows, fin, fout)))
    for c, h in [(40, 104), (72, 52), (264, 52), (456, 26), (920, 13), (1800, 6), (76, 1)]:
        g.append(("batch norm", f"batch norm {c} @{h}", bn(c, h)))
    for h, c in [(52, 88), (26, 176), (13, 352), (6, 704), (1, 704)]:
        g.append(("layer norm", f"layer norm {c} @{h}", ln(h, c)))
    for c, h in [(40, 104), (72, 52), (264, 52), (456, 26), (920, 13), (904, 6), (76, 1)]:
        g.append(("activation", f"relu {c} @{h}", unary(torch.relu, c, h)))
    for c, h in [(88, 104), (136, 52), (440, 13)]:
        g.append(("activation", f"hardswish {c} @{h}", unary(F.hardswish, c, h)))
    for c, h in [(40, 104), (136, 52), (600, 13), (1096, 6), (904, 1)]:
        g.append(("activation (exp)", f"silu {c} @{h}", unary(F.silu, c, h)))
    for c, h in [(88, 52), (392, 13), (600, 1)]:
        g.append(("activation (exp)", f"sigmoid {c} @{h}", unary(torch.sigmoid, c, h)))
    g.append(("activation (exp)", "gelu 352 @52", unary(F.gelu, 352, 52)))
    for c, h in [(72, 52), (264, 52), (456, 26), (920, 13), (1800, 6), (32, 52)]:
        g.append(("element-wise", f"add {c} @{h}", binary(c, h)))
    for c, h in [(88, 104), (440, 13), (1096, 6)]:
        g.append(("element-wise", f"mul broadcast {c} @{h}", binary(c, h, True)))
    for c, h, k, s, avg in [(48, 120, 3, 2, False), (32, 100, 3, 2, False), (264, 52, 2, 2, True),
                            (456, 26, 2, 2, False), (136, 52, 3, 1, True)]:
        g.append(("pooling", f"{'avg' if avg else 'max'} pool {k}x{k} {c} @{h}", pool(c, h, k, s, avg)))
    for c, h in [(1800, 6), (1200, 6), (88, 104), (904, 13), (72, 52)]:
        g.append(("global pooling", f"global pool {c} @{h}", gpool(c, h)))
    for c, h in [(56, 26), (120, 13), (240, 6)]:
        g.append((COPY_TYPE, f"cat 2x{c} @{h}", cat(c, h)))
    for c, h in [(120, 26), (240, 13), (480, 6)]:
        g.append((COPY_TYPE, f"channel shuffle {c} @{h}", shuffle(c, h)))
    return g


def cold_bytes(device: str) -> int:
    """Bytes the micro-benchmark copies should span: twice the CPU's last-level cache when Linux says."""
    if device == "cpu":
        try:
            from pathlib import Path

            sizes = [Path(p).read_text().strip() for p in
                     Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size")]
            units = {"K": 1 << 10, "M": 1 << 20}
            largest = max(int(v[:-1]) * units[v[-1]] for v in sizes if v and v[-1] in units)
            return 2 * largest
        except (OSError, ValueError):
            pass
    return COLD_BYTES[device]


def features(make: Callable, dtype: str) -> tuple[float, float]:
    """(hardware FLOPs, bytes) of one micro-benchmark call, counted on meta like a model's ops."""
    import torch

    from cnnprof.counting.traffic import ELEMENT_BYTES
    from cnnprof.timing.runtime import DTYPES

    counter = TrafficCounter(None, ELEMENT_BYTES[dtype])
    fn = make("meta", DTYPES[dtype])
    with torch.no_grad(), counter:
        fn()
    return float(sum(c.flops for c in counter.calls)), float(sum(c.bytes for c in counter.calls))
