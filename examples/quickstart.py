"""Publish and receive task events on the embedded broker (no server needed).

    python examples/quickstart.py

A "worker" process publishes the events of a few tasks; this process
receives them, prints each one and rebuilds the cluster state with ``State``.
Run it twice in two terminals and both receivers see every event: the
embedded broker fans events out across processes.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time

from tidings import App
from tidings.events import EventDispatcher, EventReceiver, State


def fake_worker(hostname: str, tasks: int) -> None:
    """Publish what a worker running ``tasks`` tasks would publish."""
    app = App("quickstart")
    with app.connection_for_write() as conn:
        events = EventDispatcher(conn, hostname=hostname, app=app, buffer_group=["task"])
        info = dict(freq=2.0, active=0, processed=0, loadavg=[0.0, 0.0, 0.0],
                    sw_ident="py-tidings", sw_ver="quickstart", sw_sys="Linux")
        events.send("worker-online", **info)
        for i in range(tasks):
            uuid = f"{hostname.split('@')[0]}-task-{i}"
            events.send("task-received", uuid=uuid, name="shop.checkout", args=f"({i},)",
                        kwargs="{}", root_id=uuid, parent_id=None, retries=0, eta=None,
                        expires=None)
            events.send("task-started", uuid=uuid)
            time.sleep(random.uniform(0.05, 0.2))
            if i % 4 == 3:
                events.send("task-failed", uuid=uuid, exception="ValueError('card declined')",
                            traceback="Traceback (most recent call last):\n  ...")
            else:
                events.send("task-succeeded", uuid=uuid, result="'paid'", runtime=0.1)
            events.flush()
        events.send("worker-offline", **info)


def main() -> None:
    app = App("quickstart")
    state = State()

    def show(event: dict) -> None:
        state.event(event)
        print(f"{event['hostname']:>12}  {event['type']:<16} {event.get('uuid', '')}")

    receiver = EventReceiver(app.connection_for_read(), handlers={"*": show}, app=app)
    listener = threading.Thread(target=receiver.capture, kwargs={"wakeup": False}, daemon=True)
    listener.start()
    time.sleep(0.5)  # let the receiver declare its queue before anything is published
    worker = multiprocessing.Process(target=fake_worker, args=("alice@quickstart", 8))
    worker.start()
    worker.join()
    time.sleep(1.0)
    receiver.should_stop = True
    listener.join()
    states: dict[str, int] = {}
    for task in state.tasks.values():
        states[task.state] = states.get(task.state, 0) + 1
    print(f"\n{state.event_count} events received; tasks by state: {states}")
    print(f"broker: embedded, in {app.conf.broker_data_dir or 'the per-user data folder'}")


if __name__ == "__main__":
    main()
