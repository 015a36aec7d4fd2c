"""``tidings demo``: a small cluster on one machine, with its events shown live.

Two workers (separate processes, task events on) and a client sending a
realistic mix: successes, failures with tracebacks, a retry, a rejection, an
ETA task revoked before it runs, a running task terminated, and parent/child
tasks.  The workers' configuration comes from the environment the demo sets.

The workers never outlive the demo: SIGINT, SIGTERM and SIGHUP (a closed
terminal) stop them in order, and if the demo is killed outright the kernel
stops them (:mod:`tidings.utils.parent`); their pool children die with them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import IO, Any

from .app import App
from .events.dumper import Dumper
from .events.source import BrokerSource
from .events.state import State
from .task import Reject
from .transport import Link
from .utils.parent import PARENT_PID_ENV

DEMO_QUEUE = "tidings.demo"
#: Seconds the demo waits for its receiver to consume before it starts the
#: workers (their ``worker-online`` would go to no queue before that).
RECEIVER_READY_TIMEOUT = 30.0

app = App("demo", task_default_queue=DEMO_QUEUE, task_send_sent_event=True)


@app.task(name="demo.checkout")
def checkout(order: int, amount: float) -> str:
    time.sleep(random.uniform(0.05, 0.4))
    return f"order {order} paid {amount:.2f}"


@app.task(name="demo.charge_card")
def charge_card(order: int) -> None:
    time.sleep(random.uniform(0.05, 0.2))
    raise ValueError(f"card declined for order {order}")


@app.task(name="demo.sync_inventory", bind=True, max_retries=3)
def sync_inventory(self: Any, sku: str) -> str:
    if self.request.retries == 0:
        raise self.retry(exc=ConnectionError("inventory service timed out"), countdown=1)
    return f"{sku} in stock"


@app.task(name="demo.import_feed", acks_late=True)
def import_feed(url: str) -> None:
    raise Reject(f"feed {url} is malformed", requeue=False)


@app.task(name="demo.render_report")
def render_report(pages: int) -> int:
    time.sleep(pages)
    return pages


@app.task(name="demo.fan_out", bind=True)
def fan_out(self: Any, depth: int) -> int:
    if depth > 0:
        fan_out.apply_async((depth - 1,))
        fan_out.apply_async((depth - 1,))
    return depth


def _worker_command(name: str) -> list[str]:
    return [sys.executable, "-m", "tidings", "-A", "tidings.demo:app", "worker",
            "-E", "-n", name, "-c", "2", "-P", "prefork", "-l", "WARNING"]


def run_demo(duration: float | None, out: IO[str], log: IO[str] | None = None,
             monitor: bool = False) -> int:
    """Run the demo, shown in the live monitor or (``monitor=False``) as the text dump."""
    state = State()
    counts: Counter[str] = Counter()
    dumper = Dumper(out)

    def on_event(event: dict[str, Any]) -> None:
        counts[event["type"]] += 1
        state.event(event)
        if not monitor:
            dumper.on_event(event)

    env = dict(os.environ)
    env["TIDINGS_TASK_DEFAULT_QUEUE"] = DEMO_QUEUE
    env[PARENT_PID_ENV] = str(os.getpid())  # the workers stop when the demo dies
    if app.conf.broker_url:
        env["TIDINGS_BROKER_URL"] = app.conf.broker_url
    source = BrokerSource(app, wakeup=False)
    stop_receiving = threading.Event()
    receiving = threading.Event()

    def on_status(status: Any) -> None:
        if status.link in (Link.CONNECTED, Link.FAILED, Link.STOPPED):
            receiving.set()  # consuming, or never will: the workers may start
        _say_trouble(status)

    # the dump gathers lines for a file or a pipe; each loop turn writes them out,
    # and flushes them once a second (without it, only every 512 lines)
    listener = threading.Thread(target=source.run_guarded, args=(on_event, stop_receiving),
                                kwargs={"on_status": on_status,
                                        "on_tick": None if monitor else dumper.tick},
                                daemon=True)
    listener.start()
    workers: list[subprocess.Popen] = []
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    # SIGHUP: the terminal was closed.  SIGKILL cannot be caught: PARENT_PID_ENV.
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM,
                                                      signal.SIGHUP)}
    started = time.monotonic()
    try:
        # the workers start once the receiver's queue is bound: events published
        # before that (their worker-online) would reach no queue
        deadline = time.monotonic() + RECEIVER_READY_TIMEOUT
        while not (receiving.is_set() or stop.wait(0.05)) and time.monotonic() < deadline:
            pass
        for name in ("demo1@%h", "demo2@%h"):
            workers.append(subprocess.Popen(
                _worker_command(name), env=env, stdout=log or subprocess.DEVNULL,
                stderr=log or subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + 30
        while counts["worker-online"] < 2 and time.monotonic() < deadline:
            if stop.wait(0.1) or any(w.poll() is not None for w in workers):
                break
        if monitor:
            from .top.app import TopApp

            client = threading.Thread(target=_client, args=(state, stop, started, None),
                                      daemon=True)
            client.start()
            TopApp(state, app=app, source=source, label=f"{source.label} (demo)",
                   exit_after=duration).run()
            stop.set()
            client.join(15)
        else:
            _client(state, stop, started, duration)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        deadline = time.monotonic() + 5
        while counts["worker-offline"] < len(workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        stop_receiving.set()
        listener.join(5)
        dumper.flush()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        app.publisher.close()
    by_state = Counter(task.state for task in state.tasks.values())
    print(f"\n-> demo: {state.event_count} events "
          f"({', '.join(f'{t} {n}' for t, n in sorted(counts.items()))})", file=sys.stderr)
    print(f"-> demo: tasks by state: {dict(sorted(by_state.items()))}", file=sys.stderr)
    return 0


def _say_trouble(status: Any) -> None:
    if not status.ok:
        print(f"-> demo: {status}", file=sys.stderr)


def _wait_state(state: Any, task_id: str, wanted: set[str], stop: threading.Event,
                timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        task = state.tasks.get(task_id)
        if task is not None and task.state in wanted:
            return True
        time.sleep(0.05)
    return False


def _client(state: Any, stop: threading.Event, started: float, duration: float | None
            ) -> None:
    """Send the mix of tasks, round after round, until the time is up."""
    def time_left() -> bool:
        return not stop.is_set() and (duration is None
                                      or time.monotonic() - started < duration - 2)

    order = 0
    first = True
    while time_left():
        order += 1
        checkout.delay(order, random.uniform(5, 500))
        charge_card.delay(order)
        checkout.delay(order + 1000, random.uniform(5, 500))
        if first:
            sync_inventory.delay(f"SKU-{order}")
            import_feed.delay(f"https://example.invalid/feed/{order}.xml")
            fan_out.delay(2)
            later = checkout.apply_async((order, 1.0), countdown=3)
            if _wait_state(state, later.id, {"RECEIVED"}, stop):
                app.control.revoke(later.id)
            long = render_report.delay(60)
            if _wait_state(state, long.id, {"STARTED"}, stop):
                app.control.revoke(long.id, terminate=True, signal="SIGTERM")
            first = False
        stop.wait(1.0)
