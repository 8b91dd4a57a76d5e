"""Latency statistics shared by every backend, so results compare across backends."""
import math


def percentile(values, q):
    """Linear-interpolated percentile (numpy's default method) of a non-empty sequence."""
    s = sorted(values)
    if not s:
        raise ValueError("percentile of no values")
    k = (len(s) - 1) * q / 100.0
    f = math.floor(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (k - f) * (s[c] - s[f])


def median(values):
    """Middle value of a non-empty sequence (mean of the two middle ones for an even count)."""
    return percentile(values, 50)


def summarize(times_ms):
    """mean, median, p90, std (sample), min, max, cv (= std / mean) of per-run latencies in ms."""
    t = [float(x) for x in times_ms]
    if not t:
        raise ValueError("no timings to summarize")
    n = len(t)
    mean = sum(t) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in t) / (n - 1)) if n > 1 else 0.0
    return {
        "mean_ms": mean,
        "median_ms": percentile(t, 50),
        "p90_ms": percentile(t, 90),
        "std_ms": std,
        "min_ms": min(t),
        "max_ms": max(t),
        "cv": std / mean if mean > 0 else 0.0,
    }


CV_WARN = 0.05


def cv_warning(result, limit=CV_WARN):
    """A warning string when the coefficient of variation exceeds ``limit`` (else None)."""
    cv = result.get("cv")
    if cv is not None and cv > limit:
        return (f"coefficient of variation {cv * 100:.1f}% > {limit * 100:.0f}%: the timings are noisy "
                f"(shared or throttling CPU?); prefer median_ms, or raise --runs")
    return None
