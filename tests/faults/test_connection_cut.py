"""The TCP connection cut and restored under every component at once, the broker itself up.

A :class:`~tests.cli.proxy.Proxy` stands between RabbitMQ and the worker (threads
pool, ``-E``: its consumer and its event dispatcher), ``tidings events --json``, the
exporter, the SQL camera and the monitor's ingest. Cutting it closes every one of
their connections and refuses new ones, as a network partition or a load balancer
restart does; the test's client still reaches the broker directly, so tasks queue up
for the worker meanwhile. Not marked ``broker_restart``: nothing shared is touched.
"""

from __future__ import annotations

import time

import pytest

from tests.cli.proxy import Proxy
from tests.faults.components import Components, send
from tests.worker.helpers import cluster, wait_for

pytestmark = pytest.mark.broker

#: Seconds the connection stays cut.
OUTAGE = 5.0


def test_every_component_survives_a_cut_connection(amqp_url, tmp_path):
    proxy = Proxy(5672)
    proxy.start()
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    with cluster(amqp_url, tmp_path) as c:
        comp = Components(c, tmp_path, url)
        try:
            first = send(c, 1, 1)
            assert wait_for(lambda: all(comp.everywhere(first).values()), 40), \
                comp.everywhere(first)
            held = c.proj.sleep.delay(OUTAGE + 2).id
            assert wait_for(lambda: comp.dumped(held, "task-started"), 20)
            proxy.cut()
            down_at = time.monotonic()
            queued = send(c, 5, 5)  # the broker is up: this waits for the worker
            time.sleep(OUTAGE)
            # cut off: nothing crashed, the exporter answers, the monitor keeps its state,
            # and each one says it lost the broker
            assert comp.alive()
            assert comp.metrics() is not None
            assert comp.web_serves(first)
            assert comp.state.tasks[first].state == "SUCCESS"
            assert not comp.ingest.source.status.ok
            assert wait_for(lambda: "lost" in comp.dump.stderr and "lost" in comp.worker.log,
                            10), (comp.dump.stderr, comp.worker.log[-2000:])
            proxy.start()
            up_at = time.monotonic()
            seen: dict[str, float] = {}
            assert comp.back_in_service(up_at, seen), (seen, comp.diagnosis(),
                                                       comp.worker.log[-2000:])
            # the worker finished the task it held while cut off, and its dispatcher sent
            # the outcome once it was back; the task queued meanwhile ran too. The
            # cluster's own capture, on the broker directly, is the witness: a consumer
            # behind the proxy that was back later than the worker never gets events
            # published before it was (the broker keeps no queue for it meanwhile)
            assert wait_for(lambda: c.capture.of("task-succeeded", held)
                            and c.capture.of("task-succeeded", queued), 20), \
                comp.worker.log[-3000:]
            assert "tidings_reconnects_total" in (comp.metrics() or "")
            print(f"\nconnection cut for {up_at - down_at:.1f} s; back in service after it "
                  "was restored: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(seen.items())))
        finally:
            comp.close()
            proxy.cut()
