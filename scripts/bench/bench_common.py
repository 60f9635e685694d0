"""Helpers shared by the reference-side bench scripts (x4_reference.py, gan_ncnn_reference.py),
which Python finds beside them when run as scripts."""

import os
import sys


def log(msg):
    """Progress to stderr (stdout carries the one JSON result line)."""
    print(msg, file=sys.stderr, flush=True)


def machine_busy_s():
    """Busy CPU seconds of the whole machine (all but idle and iowait), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return None
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
