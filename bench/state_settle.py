"""How long a bounded State's memory takes to settle: RSS as events go by, Celery's and ours.

A State bounded at ``--max-tasks`` fills in a few seconds, but its memory
keeps growing for a while after: the tables of its dicts and sets reach the
size that insert-and-evict churn needs, and the allocator's arenas fill.
That growth ends; a leak does not.  Each implementation runs in a process of
its own, fed ``bench/state_ingest.py``'s stream, and prints its RSS every
``--every`` events, so the two curves can be read side by side (and a soak's
warm-up chosen from them).

    python bench/state_settle.py [--events 3000000] [--max-tasks 10000] [--every 250000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def child(impl: str, events: int, max_tasks: int, every: int) -> None:
    sys.path.insert(0, str(ROOT))
    from soak import rss_kib
    from state_ingest import stream

    if impl == "celery":
        from celery.events.state import State
    else:
        from tidings.events import State
    state = State(max_tasks_in_memory=max_tasks)
    rows = []
    for n, event in enumerate(stream(events // 4 + 1), 1):
        state.event(event)
        if n % every == 0:
            rows.append(rss_kib(os.getpid()))
        if n >= events:
            break
    print(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--max-tasks", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=250_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.events, args.max_tasks, args.every)
    curves = {}
    for impl in ("celery", "tidings"):
        out = subprocess.run([sys.executable, __file__, "--child", impl,
                              "--events", str(args.events), "--max-tasks", str(args.max_tasks),
                              "--every", str(args.every)],
                             check=True, capture_output=True, text=True).stdout
        curves[impl] = json.loads(out.strip().splitlines()[-1])
    print(f"RSS of a State bounded at {args.max_tasks:,} tasks (MiB; growth over the "
          f"previous row in %)")
    print(f"{'events':>10}{'celery':>10}{'%':>7}{'tidings':>10}{'%':>7}")
    for i in range(len(curves["tidings"])):
        cells = []
        for impl in ("celery", "tidings"):
            now = curves[impl][i]
            before = curves[impl][i - 1] if i else now
            cells.append(f"{now / 1024:>10.1f}{(now - before) / before * 100:>7.2f}")
        print(f"{(i + 1) * args.every:>10,}{''.join(cells)}")


if __name__ == "__main__":
    main()
