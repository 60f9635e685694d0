"""Differences between two PNGs of the same size, in 0..1 units (a sample / its maximum), so
8- and 16-bit images compare alike: max and mean absolute difference, and how many samples
differ by more than one 8-bit step (1/255). numpy where installed, plain Python otherwise.
"""

import png


def compare(path_a, path_b):
    """{"max_abs", "mean_abs", "over_1_255", "samples", "size"}; raises ValueError when the
    images differ in size or channels."""
    a = png.read(path_a)
    b = png.read(path_b)
    if (a.width, a.height, a.channels) != (b.width, b.height, b.channels):
        raise ValueError(f"{path_a} is {a.describe()}, {path_b} is {b.describe()}")
    size = f"{a.width}x{a.height}x{a.channels}"
    try:
        import numpy as np  # noqa: PLC0415 (optional)
    except ImportError:
        np = None
    if np is not None:
        fa = np.asarray(a.data, dtype=np.float64) / a.max_value
        fb = np.asarray(b.data, dtype=np.float64) / b.max_value
        d = np.abs(fa - fb)
        return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
                "over_1_255": int((d > 1 / 255).sum()), "samples": int(d.size), "size": size}
    sa, sb = 1.0 / a.max_value, 1.0 / b.max_value
    worst = 0.0
    total = 0.0
    over = 0
    for x, y in zip(a.data, b.data):  # noqa: B905 (same length: checked above)
        d = abs(x * sa - y * sb)
        total += d
        if d > worst:
            worst = d
        if d > 1 / 255:
            over += 1
    n = len(a.data)
    return {"max_abs": worst, "mean_abs": total / n if n else 0.0, "over_1_255": over,
            "samples": n, "size": size}
