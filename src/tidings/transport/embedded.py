"""The embedded broker: kombu's filesystem transport with message TTL and queue expiry.

With no broker configured, Tidings uses kombu's filesystem transport in a
per-user folder, so that a worker and a monitor in two terminals of one
machine talk without any server.  kombu's filesystem transport knows nothing
of message TTL or queue expiry, so a monitor that dies would leave its queue
bound and growing forever; the channel below adds both, reading the
``x-message-ttl`` and ``x-expires`` arguments that queues are declared with,
exactly as RabbitMQ does.

Each exchange's bindings are a table in ``control/<exchange>.exchange``,
which every process that binds, unbinds or publishes reads.  kombu's
channel creates that file with a truncating open, locks it only after, and
decodes whatever it reads: two processes binding the first queues of an
exchange at once (the demo's two workers, their remote-control queues)
could each write a table of one binding over the other's, or fail to decode
the empty file the other had just made, which stopped a worker as it
started.  Here every change to a table is made under the file's lock by
one function (:meth:`EmbeddedChannel._change_table`), the file is created
without truncating it, and an empty file reads as a table without bindings.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid as _uuid
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

__all__ = ["EmbeddedChannel", "EmbeddedTransport"]

#: A consumer refreshes its queue's last-use time at most this often (seconds).
QUEUE_TOUCH_INTERVAL = 1.0
#: Queue metadata (TTL, expiry, last use) is re-read from disk at most this often.
QUEUE_META_CACHE_SECONDS = 1.0

_stamp_lock = threading.Lock()
_last_stamp = 0

Binding = filesystem.exchange_queue_t
#: ``change(table)``: the table to write instead, or ``None`` to leave it as it is.
TableChange = Callable[[list[Binding]], list[Binding] | None]


def _decode_table(raw: bytes) -> list[Binding]:
    """A binding table as read from its file; an empty file is a table just created
    by a process that has not written it yet: no bindings."""
    if not raw.strip():
        return []
    return [Binding(*binding) for binding in loads(bytes_to_str(raw))]


class EmbeddedChannel(filesystem.Channel):
    """kombu's filesystem channel, plus message TTL and queue expiry.

    * Declaring a queue with ``x-message-ttl``/``x-expires`` writes them to
      ``control/<queue>.queue``; the file's mtime is the queue's last use.
    * A consumer touches that file while it polls, at most once a second.
    * A message older than its queue's TTL is deleted instead of delivered.
    * Publishing skips a queue unused for longer than ``x-expires`` and
      removes it: its bindings, its messages and its metadata.
    * Binding tables are changed under their file's lock only, and an empty
      one is a table without bindings (see the module documentation).
    """

    _touch_every = QUEUE_TOUCH_INTERVAL

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._touched: dict[str, float] = {}
        self._meta_cache: dict[str, tuple[float, dict | None]] = {}
        self._auto_delete: set[str] = set()

    def prepare_queue_arguments(self, arguments: Any, **kwargs: Any) -> Any:
        # kombu builds x-message-ttl/x-expires only for AMQP; build them here too
        # so that the queue metadata below can honour them.
        return to_rabbitmq_queue_arguments(arguments, **kwargs)

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any
                      ) -> Any:
        result = super().queue_declare(queue, passive, **kwargs)
        if kwargs.get("auto_delete") or kwargs.get("exclusive"):
            self._auto_delete.add(result.queue)
        return result

    def basic_cancel(self, consumer_tag: str) -> None:
        # kombu's virtual transports ignore auto-delete; honour it here so a
        # receiver that stops cleanly takes its queue and binding with it.
        queue = self._tag_to_queue.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        if queue in self._auto_delete and queue not in self._active_queues:
            self._auto_delete.discard(queue)
            try:
                self.queue_delete(queue)
            except Exception:
                pass

    # -- queue metadata ------------------------------------------------------------------

    def _meta_file(self, queue: str) -> Path:
        return self.control_folder / f"{queue}.queue"

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        arguments = kwargs.get("arguments") or {}
        meta = {
            "ttl": arguments.get("x-message-ttl"),
            "expires": arguments.get("x-expires"),
        }
        if meta["ttl"] is None and meta["expires"] is None:
            return
        self.control_folder.mkdir(parents=True, exist_ok=True)
        tmp = self._meta_file(queue).with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self._meta_file(queue))
        self._meta_cache.pop(queue, None)

    def _meta(self, queue: str) -> dict | None:
        """Metadata of ``queue`` plus ``mtime``, cached for ``QUEUE_META_CACHE_SECONDS``."""
        now = time.monotonic()
        cached = self._meta_cache.get(queue)
        if cached is not None and now - cached[0] < QUEUE_META_CACHE_SECONDS:
            return cached[1]
        path = self._meta_file(queue)
        try:
            mtime = path.stat().st_mtime
            meta = json.loads(path.read_text())
            meta["mtime"] = mtime
        except (OSError, ValueError):
            meta = None
        self._meta_cache[queue] = (now, meta)
        return meta

    def _expired(self, queue: str) -> bool:
        meta = self._meta(queue)
        if not meta or not meta.get("expires"):
            return False
        return time.time() - meta["mtime"] > meta["expires"] / 1000.0

    def _touch(self, queue: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(queue, 0.0) < self._touch_every:
            return
        self._touched[queue] = now
        try:
            os.utime(self._meta_file(queue))
        except OSError:
            pass

    def _remove_queue(self, queue: str, exchange: str) -> None:
        """Forget an expired queue: its binding in ``exchange``, messages, metadata."""
        try:
            self._change_table(exchange, lambda table: _without(table, queue=queue))
        except (ChannelError, OSError, ValueError):
            pass
        self._purge(queue)
        try:
            self._meta_file(queue).unlink()
        except OSError:
            pass
        self._meta_cache.pop(queue, None)

    # -- binding tables -----------------------------------------------------------------

    def get_table(self, exchange: str) -> list[Binding]:
        file = self._exchange_file(exchange)
        try:
            with file.open("rb", buffering=0) as f_obj:
                filesystem.lock(f_obj, filesystem.LOCK_SH)
                try:
                    return _decode_table(f_obj.read())
                finally:
                    filesystem.unlock(f_obj)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc

    def _change_table(self, exchange: str, change: TableChange, create: bool = False
                      ) -> None:
        """Read ``exchange``'s table, and write what ``change`` makes of it, holding the
        file's lock throughout.  Without ``create``, a table not there is left so."""
        file = self._exchange_file(exchange)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            if create:
                self.control_folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(file, flags, 0o666)  # never truncated: the lock comes first
        except FileNotFoundError:
            if create:
                raise ChannelError(f"Cannot open {file}") from None
            return
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        with os.fdopen(fd, "rb+", buffering=0) as f_obj:
            filesystem.lock(f_obj, filesystem.LOCK_EX)
            try:
                changed = change(_decode_table(f_obj.read()))
                if changed is not None:
                    f_obj.seek(0)
                    f_obj.write(str_to_bytes(dumps(changed)))
                    f_obj.truncate()
            finally:
                filesystem.unlock(f_obj)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        binding = Binding(routing_key or "", pattern or "", queue or "")
        self._change_table(exchange, lambda table: None if binding in table
                           else [binding, *table], create=True)

    def _delete(self, queue: str, exchange: str | None = None, routing_key: str = "",
                pattern: str = "", *args: Any, **kwargs: Any) -> None:
        # kombu's filesystem channel reads and rewrites the table itself (see the
        # module documentation): its base's purge, and our change of the table
        super(filesystem.Channel, self)._delete(queue, exchange, routing_key, pattern,
                                                *args, **kwargs)
        if exchange:
            binding = Binding(routing_key or "", pattern or "", queue or "")
            self._change_table(exchange, lambda table: _without(table, binding=binding))
        try:
            self._meta_file(queue).unlink()
        except OSError:
            pass

    # -- routing ------------------------------------------------------------------------

    def _live(self, queues: Any, exchange: str) -> list[str]:
        live = []
        for queue in queues:
            if self._expired(queue):
                self._remove_queue(queue, exchange)
            else:
                live.append(queue)
        return live

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> list[str]:
        queues = super()._lookup(exchange, routing_key, default)
        if not exchange:
            return queues
        return self._live(queues, exchange)

    def _put_fanout(self, exchange: str, payload: Any, routing_key: str, **kwargs: Any) -> None:
        for queue in self._live({q.queue for q in self.get_table(exchange)}, exchange):
            self._put(queue, payload, **kwargs)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # Names sort in publishing order (wall-clock nanoseconds, strictly
        # increasing within a process), and any process can read a message's
        # age from its name.
        stamp = time.time_ns()
        with _stamp_lock:
            global _last_stamp
            stamp = _last_stamp = max(stamp, _last_stamp + 1)
        name = f"{stamp:020d}_{_uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        tmp = os.path.join(self.data_folder_out, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(str_to_bytes(dumps(payload)))
        os.replace(tmp, path)

    def _get(self, queue: str) -> Any:
        self._touch(queue)
        meta = self._meta(queue)
        ttl_ms = meta.get("ttl") if meta else None
        suffix = f".{queue}.msg"
        now_ms = time.time() * 1000
        folder = self.data_folder_in
        for filename in sorted(f for f in os.listdir(folder) if f.endswith(suffix)):
            if filename.partition(".")[2] != suffix[1:]:
                continue
            path = os.path.join(folder, filename)
            claimed = f"{path}.{os.getpid()}.claimed"
            try:
                os.rename(path, claimed)  # atomic: one consumer wins the message
            except OSError:
                continue
            try:
                if ttl_ms is not None:
                    try:
                        born = int(filename.partition("_")[0])
                    except ValueError:
                        born = None
                    if born is not None and now_ms - born / 1e6 > ttl_ms:
                        continue  # expired: dropped like RabbitMQ drops it
                with open(claimed, "rb") as f:
                    payload = f.read()
            finally:
                try:
                    os.remove(claimed)
                except OSError:
                    pass
            return loads(bytes_to_str(payload))
        raise Empty()


def _without(table: list[Binding], *, queue: str | None = None,
             binding: Binding | None = None) -> list[Binding] | None:
    """``table`` without ``binding`` (or every binding of ``queue``); ``None`` if it
    had none of them."""
    kept = [b for b in table if b != binding and b.queue != queue]
    return kept if len(kept) != len(table) else None


class EmbeddedTransport(filesystem.Transport):
    """The embedded default broker (see :class:`EmbeddedChannel`)."""

    Channel = EmbeddedChannel
    driver_type = "filesystem"
    driver_name = "tidings-embedded"
