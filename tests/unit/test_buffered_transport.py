"""The buffered AMQP read path: the frames py-amqp's own transport reads, from fewer reads.

py-amqp's ``TCPTransport`` is the oracle: both read the same bytes, cut into
chunks at random, and must return the same frames.  Then the cases where a
buffer could go wrong: a timeout in the middle of a frame, a bad frame end,
the peer closing, a frame larger than one read, and the real broker.
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from amqp.exceptions import UnexpectedFrame
from amqp.transport import TCPTransport
from hypothesis import given
from hypothesis import strategies as st

from tidings.transport.buffered import READ_SIZE, BufferedTCPTransport


def frame(kind: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes([end])


class CountingSocket:
    """A socket whose ``recv`` calls are counted."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def __getattr__(self, name: str):  # sendall, settimeout, close ...
        return getattr(self.sock, name)


def reader(cls: type[TCPTransport], sock: socket.socket) -> TCPTransport:
    transport = cls("127.0.0.1:5672")
    transport.sock = CountingSocket(sock)
    transport.connected = True
    transport._setup_transport()
    return transport


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(2)
    yield a, b
    a.close()
    b.close()


frames_st = st.lists(st.tuples(st.integers(1, 8), st.integers(0, 65535),
                               st.binary(max_size=3000)), min_size=1, max_size=40)


@given(frames=frames_st, cuts=st.lists(st.integers(1, 4000), max_size=60))
def test_it_reads_the_frames_py_amqp_reads_however_the_bytes_are_cut(frames, cuts):
    wire = b"".join(frame(*f) for f in frames)
    got: dict[type, list] = {}
    for cls in (TCPTransport, BufferedTCPTransport):
        a, b = socket.socketpair()
        try:
            a.settimeout(2)

            def write(wire=wire, b=b) -> None:
                at = 0
                for cut in cuts:
                    b.sendall(wire[at:at + cut])
                    at += cut
                b.sendall(wire[at:])

            writer = threading.Thread(target=write)
            writer.start()
            transport = reader(cls, a)
            got[cls] = [transport.read_frame() for _ in frames]
            writer.join()
        finally:
            a.close()
            b.close()
    assert got[BufferedTCPTransport] == got[TCPTransport] == frames


def test_frames_already_waiting_take_one_read_not_three_each(pair):
    a, b = pair
    frames = [frame(3, 1, b"x" * 200) for _ in range(200)]  # about 42 KiB
    b.sendall(b"".join(frames))
    plain = reader(TCPTransport, a)
    for _ in range(100):
        plain.read_frame()
    buffered = reader(BufferedTCPTransport, a)
    for _ in range(100):
        assert buffered.read_frame() == (3, 1, b"x" * 200)
    assert plain.sock.recvs == 300
    assert buffered.sock.recvs == 1


def test_frames_coming_faster_than_one_a_millisecond_are_read_several_at_a_time(pair):
    import time

    a, b = pair
    count = 200

    def write() -> None:  # about one frame every 0.2 ms, each its own write
        for n in range(count):
            b.sendall(frame(3, 1, b"%d" % n))
            time.sleep(0.0002)

    writer = threading.Thread(target=write)
    buffered = reader(BufferedTCPTransport, a)
    writer.start()
    got = [buffered.read_frame()[2] for _ in range(count)]
    writer.join()
    assert got == [b"%d" % n for n in range(count)]
    # a reader faster than the writer takes each frame as it comes (one read each)
    # unless it lets a few more arrive first
    assert buffered.sock.recvs < count * 0.6, buffered.sock.recvs


def test_a_timeout_in_the_middle_of_a_frame_loses_nothing(pair):
    a, b = pair
    transport = reader(BufferedTCPTransport, a)
    whole = frame(1, 7, b"payload" * 10)
    b.sendall(whole[:3])
    a.settimeout(0.05)
    with pytest.raises(socket.timeout):
        transport.read_frame()
    b.sendall(whole[3:20])
    with pytest.raises(socket.timeout):
        transport.read_frame()
    b.sendall(whole[20:] + frame(8, 0, b""))
    assert transport.read_frame() == (1, 7, b"payload" * 10)
    assert transport.read_frame() == (8, 0, b"")
    assert transport.connected


def test_a_frame_larger_than_one_read(pair):
    a, b = pair
    payload = bytes(range(256)) * (3 * READ_SIZE // 256 + 7)
    writer = threading.Thread(target=b.sendall, args=(frame(3, 2, payload) + frame(8, 0, b""),))
    writer.start()
    transport = reader(BufferedTCPTransport, a)
    assert transport.read_frame() == (3, 2, payload)
    assert transport.read_frame() == (8, 0, b"")
    writer.join()


def test_a_bad_frame_end_is_py_amqps_error(pair):
    a, b = pair
    b.sendall(frame(1, 1, b"abc", end=0x00))
    with pytest.raises(UnexpectedFrame, match="0x00"):
        reader(BufferedTCPTransport, a).read_frame()


def test_the_peer_closing_is_an_error_that_marks_it_disconnected(pair):
    a, b = pair
    transport = reader(BufferedTCPTransport, a)
    b.sendall(frame(1, 1, b"abc")[:5])
    b.close()
    with pytest.raises(OSError, match="closed"):
        transport.read_frame()
    assert not transport.connected


def test_connections_for_reading_rabbitmq_use_it_and_consume(amqp_url):
    from kombu import Exchange, Producer, Queue

    from tidings import App

    app = App("test", broker=amqp_url)
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        assert isinstance(conn.connection.transport, BufferedTCPTransport)
        exchange = Exchange("tidings-test-buffered", "direct", auto_delete=True)
        queue = Queue("tidings-test-buffered", exchange, "k", auto_delete=True,
                      channel=conn.default_channel)
        queue.declare()
        try:
            producer = Producer(conn.default_channel, exchange=exchange, routing_key="k")
            for n in range(500):
                producer.publish({"n": n}, serializer="json")
            got: list[int] = []
            with conn.Consumer(queue, callbacks=[lambda body, m: got.append(body["n"])],
                               no_ack=True):
                while len(got) < 500:
                    conn.drain_events(timeout=5)
            assert got == list(range(500))
        finally:
            queue.delete()
    with app.connection_for_write() as conn:  # publishers keep py-amqp's reads
        conn.ensure_connection(max_retries=1)
        assert type(conn.connection.transport) is TCPTransport


def test_a_non_blocking_read_of_an_incomplete_frame_times_out_and_keeps_it(pair):
    a, b = pair
    transport = reader(BufferedTCPTransport, a)
    a.settimeout(0)
    with pytest.raises(socket.timeout):
        transport.read_frame()  # nothing there
    whole = frame(1, 3, b"abcdef")
    b.sendall(whole[:9])
    with pytest.raises(socket.timeout):
        transport.read_frame()  # header there, payload not: py-amqp would spin here
    b.sendall(whole[9:])
    a.settimeout(2)
    assert transport.read_frame() == (1, 3, b"abcdef")


def test_the_pacer_is_told_what_each_read_brought(pair, monkeypatch):
    """Before a read that would wait, the pacer learns the messages (three frames each)
    and bytes read since the last one, and its wait adapts to them."""
    from tests.unit.direct_input import record_pacer
    from tidings.transport import buffered as buffered_module

    told = record_pacer(monkeypatch, buffered_module)
    a, b = pair
    buffered = reader(BufferedTCPTransport, a)
    burst = b"".join(frame(3, 1, b"x" * 100) for _ in range(30))
    b.sendall(burst)
    for _ in range(30):
        buffered.read_frame()
    b.sendall(frame(3, 1, b"y"))
    assert buffered.read_frame() == (3, 1, b"y")
    assert told[-1] == (10, len(burst))
