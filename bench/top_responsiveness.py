"""The live monitor under load: key-to-screen latency and ingest rate.

A State holds ``--tasks`` tasks (100k); a feeder thread sends ``--rate``
events per second (5k) into it while Textual's pilot presses keys.  For each
key, the latency is the time until the task table shows the moved cursor.
Prints the latencies and the ingest rate reached while the screen refreshes.
(Celery's curses monitor has no headless driver, so there is no Celery
figure to compare with here.)

    python bench/top_responsiveness.py [--tasks 100000] [--rate 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))

from state_ingest import stream


def main() -> None:
    import logging

    logging.disable(logging.WARNING)  # the synthetic stream's old timestamps look like drift
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--keys", type=int, default=40)
    args = parser.parse_args()

    from tidings.events.state import State
    from tidings.top.app import TaskTable, TopApp

    state = State(max_tasks_in_memory=args.tasks)
    for event in stream(args.tasks):
        state.event(event)
    live = list(stream(args.tasks // 2 + 50_000, seed=99))
    clock = 10_000_000
    stop = threading.Event()
    fed = [0]

    def feeder() -> None:
        nonlocal clock
        i = 0
        interval = 1.0 / args.rate
        next_at = time.perf_counter()
        while not stop.is_set() and i < len(live):
            event = dict(live[i])
            clock += 1
            event["clock"] = clock
            event["local_received"] = time.time()
            state.event(event)
            fed[0] += 1
            i += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    latencies: list[float] = []

    async def drive() -> None:
        tui = TopApp(state, label="bench", refresh=0.5)
        async with tui.run_test(size=(120, 40)) as pilot:
            await pilot.pause(1.0)
            table = tui.query_one(TaskTable)
            renders: list[tuple[float, int]] = []
            original = table.render

            def render():  # record when each frame with a given cursor was drawn
                result = original()
                renders.append((time.perf_counter(), table.cursor))
                return result

            table.render = render
            thread = threading.Thread(target=feeder, daemon=True)
            started = time.perf_counter()
            thread.start()
            for i in range(args.keys):
                key = "j" if i % 4 != 3 else "k"
                want = table.cursor + (1 if key == "j" else -1)
                t0 = time.perf_counter()
                await pilot.press(key)
                while time.perf_counter() - t0 < 10:
                    drawn = [t for t, c in renders if t >= t0 and c == want]
                    if drawn:
                        latencies.append(drawn[0] - t0)
                        break
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0.1)
            elapsed = time.perf_counter() - started
            stop.set()
            thread.join()
            print(f"{len(state.tasks):,} tasks in State; feeder asked {args.rate:,} events/s, "
                  f"reached {fed[0] / elapsed:,.0f} events/s over {elapsed:.1f}s")

    asyncio.run(drive())
    latencies.sort()
    print(f"key-to-screen latency over {len(latencies)} keys: "
          f"median {statistics.median(latencies) * 1000:.1f} ms, "
          f"p90 {latencies[int(len(latencies) * 0.9)] * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
