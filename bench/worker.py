"""One image through one stack in a fresh process: ``python -m bench.worker STACK FILE N W H``.

Prints JSON: the timed runs (ms, after one untimed warm-up run), the peak RSS of this process
(KiB, interpreter and libraries included) and the output size. A fresh process per image keeps
one image's peak from hiding another's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.stacks import STACKS


def peak_rss_kb() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: a child inherits its parent's in that."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def main() -> None:
    name, path, repeats, w, h = (
        sys.argv[1],
        Path(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
        int(sys.argv[5]),
    )
    run = STACKS[name]()
    data = path.read_bytes()
    base_rss = peak_rss_kb()
    out = run(data, (w, h))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(data, (w, h))
        times.append((time.perf_counter() - start) * 1000)
    peak = peak_rss_kb()
    print(json.dumps({"ms": times, "rss_kb": peak, "base_rss_kb": base_rss, "bytes": len(out)}))


if __name__ == "__main__":
    main()
