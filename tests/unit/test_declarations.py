"""The entities publishers declare, bound once per channel (transport/topology.py)."""

from kombu import Connection, Exchange, Producer, Queue

from tidings.transport import Declarations, task_queue


def test_one_bound_copy_per_entity_and_channel():
    with Connection("memory://") as conn:
        first, second = conn.channel(), conn.channel()
        d = Declarations()
        bound = d.for_channel(first, task_queue("q1"))
        assert bound.is_bound and bound.channel is first
        # an equal entity built afresh finds the same bound copy
        assert d.for_channel(first, task_queue("q1")) is bound
        assert d.for_channel(first, task_queue("q2")) is not bound
        # another channel (a reconnect): bound again, to it
        again = d.for_channel(second, task_queue("q1"))
        assert again is not bound and again.channel is second
        # the entity handed in is left unbound
        plain = Exchange("ev", "topic")
        assert d.for_channel(second, plain).is_bound and not plain.is_bound


def test_the_cache_is_bounded():
    with Connection("memory://") as conn:
        channel = conn.channel()
        d = Declarations()
        for i in range(3 * Declarations.MAX_BOUND):
            d.for_channel(channel, Queue(f"q{i}"))
            assert len(d) <= Declarations.MAX_BOUND


def test_a_producer_whose_connection_is_down_gets_the_entity_itself():
    conn = Connection("amqp://guest:guest@127.0.0.1:1//")  # never connected
    producer = Producer(conn)
    entity = task_queue("q")
    assert Declarations().for_producer(producer, entity) is entity
    with Connection("memory://") as up:
        up.connect()
        producer = Producer(up)
        bound = Declarations().for_producer(producer, entity)
        assert bound is not entity and bound.channel is producer.channel
