"""The single-layer micro-benchmarks the latency calibration times: one aten op each, on a synthetic grid
of shapes per op type, written as a table (GRID) of builders and their arguments (see
cnnprof.predict.calibration for how they are timed, cnnprof.predict.latency for how they are fitted)."""
from __future__ import annotations

from typing import Any, Callable

from cnnprof.counting.traffic import COPY_TYPE, TrafficCounter

COLD_BYTES = {"cpu": 64 << 20, "cuda": 128 << 20}  # fallback CPU figure; above an H100's 50 MB L2
MAX_COPIES = 64


Make = Callable[[str, Any], Callable[[], Any]]  # make(device, dtype) -> the layer's call on its tensors


def _rand(dev: str, dt: Any, *shape: int) -> Any:
    import torch

    return torch.randn(*shape, device=dev, dtype=dt)


def conv(cin: int, cout: int, h: int, k: int = 3, s: int = 1, g: int = 1) -> Make:
    """A k x k convolution, cin -> cout channels in `g` groups, on a 1 x cin x h x h input, stride `s`."""
    def make(dev, dt):
        import torch.nn.functional as F

        x, w = _rand(dev, dt, 1, cin, h, h), _rand(dev, dt, cout, cin // g, k, k)
        return lambda: F.conv2d(x, w, None, s, k // 2, 1, g)
    return make


def pointwise(cin: int, cout: int, h: int) -> Make:
    """A 1x1 convolution."""
    return conv(cin, cout, h, 1)


def depthwise(c: int, h: int, k: int, s: int) -> Make:
    """A k x k depthwise convolution (one group per channel)."""
    return conv(c, c, h, k, s, c)


def grouped(c: int, h: int, groups: int) -> Make:
    """A 3x3 grouped convolution."""
    return conv(c, c, h, 3, 1, groups)


def linear(rows: int, fin: int, fout: int) -> Make:
    """A fully connected layer with bias on `rows` rows."""
    def make(dev, dt):
        import torch.nn.functional as F

        x, w, b = _rand(dev, dt, rows, fin), _rand(dev, dt, fout, fin), _rand(dev, dt, fout)
        return lambda: F.linear(x, w, b)
    return make


def batch_norm(c: int, h: int) -> Make:
    """Batch norm in eval mode (running statistics)."""
    def make(dev, dt):
        import torch.nn.functional as F

        x, p = _rand(dev, dt, 1, c, h, h), [_rand(dev, dt, c).abs() for _ in range(4)]
        return lambda: F.batch_norm(x, p[0], p[1], p[2], p[3], False)
    return make


def layer_norm(h: int, c: int) -> Make:
    """Layer norm over the last (channel) dimension of a channels-last 1 x h x h x c input."""
    def make(dev, dt):
        import torch.nn.functional as F

        x, w, b = _rand(dev, dt, 1, h, h, c), _rand(dev, dt, c), _rand(dev, dt, c)
        return lambda: F.layer_norm(x, (c,), w, b)
    return make


def _unary_op(op: str) -> Callable[[Any], Any]:
    import torch
    import torch.nn.functional as F

    return {"relu": torch.relu, "hardswish": F.hardswish, "silu": F.silu, "sigmoid": torch.sigmoid,
            "gelu": F.gelu}[op]


def unary(op: str, c: int, h: int) -> Make:
    """An activation (relu, hardswish, silu, sigmoid, gelu)."""
    def make(dev, dt):
        fn, x = _unary_op(op), _rand(dev, dt, 1, c, h, h)
        return lambda: fn(x)
    return make


def binary(op: str, c: int, h: int) -> Make:
    """An element-wise add of two inputs, or (op 'mul broadcast') a product with a per-channel 1 x c x 1 x 1."""
    def make(dev, dt):
        import torch

        broadcast = op == "mul broadcast"
        x, y = _rand(dev, dt, 1, c, h, h), _rand(dev, dt, 1, c, 1, 1) if broadcast else _rand(dev, dt, 1, c, h, h)
        return lambda: torch.mul(x, y) if broadcast else torch.add(x, y)
    return make


def pool(op: str, c: int, h: int, k: int, s: int) -> Make:
    """A k x k max or avg pooling with stride `s`."""
    def make(dev, dt):
        import torch.nn.functional as F

        x, fn = _rand(dev, dt, 1, c, h, h), F.avg_pool2d if op == "avg" else F.max_pool2d
        return lambda: fn(x, k, s, k // 2)
    return make


def global_pool(c: int, h: int) -> Make:
    """Global average pooling to 1 x 1."""
    def make(dev, dt):
        import torch.nn.functional as F

        x = _rand(dev, dt, 1, c, h, h)
        return lambda: F.adaptive_avg_pool2d(x, 1)
    return make


def cat(c: int, h: int) -> Make:
    """Concatenation of two 1 x c x h x h inputs along channels."""
    def make(dev, dt):
        import torch

        a, b = _rand(dev, dt, 1, c, h, h), _rand(dev, dt, 1, c, h, h)
        return lambda: torch.cat([a, b], 1)
    return make


def shuffle(c: int, h: int) -> Make:
    """A channel shuffle of two groups (a transpose made contiguous)."""
    def make(dev, dt):
        x = _rand(dev, dt, 1, 2, c // 2, h, h)
        return lambda: x.transpose(1, 2).contiguous()
    return make


# The grid: (op type, label, builder, the builder's arguments named in the label, one row of them per layer).
# Shapes are deliberately off the zoo's (channels and resolutions no ImageNet model here uses; a test checks
# that no micro-benchmark equals a zoo layer), so no model is ever part of its own calibration. They span
# the channel, resolution and kernel ranges of ImageNet CNNs.
GRID: tuple[tuple[str, str, Callable, str, tuple[tuple, ...]], ...] = (
    ("conv", "conv {k}x{k} {cin}->{cout} @{h} s{s}", conv, "cin cout h k s",
     ((3, 24, 208, 3, 2), (3, 48, 200, 7, 2), (24, 24, 104, 3, 1), (40, 40, 52, 3, 1), (72, 72, 52, 3, 1),
      (72, 136, 52, 3, 2), (136, 136, 26, 3, 1), (104, 200, 26, 3, 1), (264, 264, 13, 3, 1), (456, 456, 6, 3, 1),
      (200, 392, 26, 3, 2))),
    ("pointwise conv", "conv 1x1 {cin}->{cout} @{h}", pointwise, "cin cout h",
     ((24, 88, 104), (32, 136, 52), (136, 32, 52), (72, 264, 52), (264, 72, 52), (136, 456, 26), (456, 136, 26),
      (264, 920, 13), (920, 264, 13), (328, 1200, 6), (904, 176, 6), (456, 1800, 6), (1800, 456, 6), (72, 20, 1),
      (904, 224, 1), (224, 904, 1), (40, 12, 1))),
    ("depthwise conv", "dw {k}x{k} {c} @{h} s{s}", depthwise, "c h k s",
     ((40, 104, 3, 1), (88, 104, 3, 2), (136, 52, 3, 1), (136, 52, 3, 2), (200, 26, 3, 1), (392, 13, 3, 1),
      (600, 13, 3, 1), (904, 6, 3, 1), (232, 26, 5, 1), (680, 13, 5, 1), (1096, 6, 5, 1), (80, 52, 5, 2))),
    ("grouped conv", "grouped 3x3 {c} g{groups} @{h}", grouped, "c h groups",
     ((144, 52, 36), (264, 26, 33), (520, 13, 65), (1040, 6, 65), (72, 52, 9), (168, 13, 7), (400, 6, 25),
      (56, 26, 2))),
    ("linear", "linear {rows}x{fin}->{fout}", linear, "rows fin fout",
     ((1, 640, 800), (1, 1536, 900), (1, 1792, 1000), (1, 3584, 3072), (1, 8192, 3072), (2704, 88, 352),
      (676, 352, 176), (36, 2816, 704))),
    ("batch norm", "batch norm {c} @{h}", batch_norm, "c h",
     ((40, 104), (72, 52), (264, 52), (456, 26), (920, 13), (1800, 6), (76, 1))),
    ("layer norm", "layer norm {c} @{h}", layer_norm, "h c", ((52, 88), (26, 176), (13, 352), (6, 704), (1, 704))),
    ("activation", "{op} {c} @{h}", unary, "op c h",
     (("relu", 40, 104), ("relu", 72, 52), ("relu", 264, 52), ("relu", 456, 26), ("relu", 920, 13),
      ("relu", 904, 6), ("relu", 76, 1), ("hardswish", 88, 104), ("hardswish", 136, 52), ("hardswish", 440, 13))),
    ("activation (exp)", "{op} {c} @{h}", unary, "op c h",
     (("silu", 40, 104), ("silu", 136, 52), ("silu", 600, 13), ("silu", 1096, 6), ("silu", 904, 1),
      ("sigmoid", 88, 52), ("sigmoid", 392, 13), ("sigmoid", 600, 1), ("gelu", 352, 52))),
    ("element-wise", "{op} {c} @{h}", binary, "op c h",
     (("add", 72, 52), ("add", 264, 52), ("add", 456, 26), ("add", 920, 13), ("add", 1800, 6), ("add", 32, 52),
      ("mul broadcast", 88, 104), ("mul broadcast", 440, 13), ("mul broadcast", 1096, 6))),
    ("pooling", "{op} pool {k}x{k} {c} @{h}", pool, "op c h k s",
     (("max", 48, 120, 3, 2), ("max", 32, 100, 3, 2), ("avg", 264, 52, 2, 2), ("max", 456, 26, 2, 2),
      ("avg", 136, 52, 3, 1))),
    ("global pooling", "global pool {c} @{h}", global_pool, "c h",
     ((1800, 6), (1200, 6), (88, 104), (904, 13), (72, 52))),
    (COPY_TYPE, "cat 2x{c} @{h}", cat, "c h", ((56, 26), (120, 13), (240, 6))),
    (COPY_TYPE, "channel shuffle {c} @{h}", shuffle, "c h", ((120, 26), (240, 13), (480, 6))),
)


def grid() -> list[tuple[str, str, Callable]]:
    """(op type, label, make(device, dtype) -> zero-argument callable) of every single-layer micro-benchmark."""
    out = []
    for op_type, label, builder, names, rows in GRID:
        for row in rows:
            args = dict(zip(names.split(), row))
            out.append((op_type, label.format(**args), builder(**args)))
    return out


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
    """(nvidia FLOPs, bytes) of one micro-benchmark call, counted on meta like a model's ops."""
    import torch

    from cnnprof.counting.traffic import ELEMENT_BYTES
    from cnnprof.timing.settings import DTYPES

    counter = TrafficCounter(None, ELEMENT_BYTES[dtype])
    fn = make("meta", DTYPES[dtype])
    with torch.no_grad(), counter:
        fn()
    return float(sum(c.flops for c in counter.calls)), float(sum(c.bytes for c in counter.calls))
