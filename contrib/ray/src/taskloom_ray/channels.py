"""Ray's shared-memory channels between the driver and one actor, read by polling.

In ``actors`` mode attempts and outcomes travel through two of Ray's channels
(``ray.experimental.channel``, the transport of Ray's compiled graphs) instead of one Ray
call per batch: a write is a copy into Ray's object store on the writer's node (Ray pushes
it to a reader on another node), a read is a look at it. A Ray call costs the caller and
the actor about a millisecond of CPU each and waits on Ray's threads; a channel message
costs tens of microseconds.

A blocking read of a channel spins a core while it waits, so nothing here blocks: both
ends look for a message every :data:`POLL_MIN` seconds while messages come and go, less
often (up to every :data:`POLL_MAX`) the longer nothing comes, and the actor stops polling
altogether
once it has had nothing to do for a while (see :class:`~taskloom_ray.worker.KernelActor`).

A channel holds one message: a writer can write again once the reader has read the last
one. So each end keeps what it could not write yet and writes it all at its next poll.

Messages, both as plain data: driver to actor ``(seq, [(key, spec dict), ...])``, one
``seq`` per message, counting from 1; actor to driver ``([(key, status, payload), ...],
asleep)``, where ``asleep`` is None or the ``seq`` of the last message the actor read
before it stopped polling.

Ray is imported only when a channel is made.
"""

from __future__ import annotations

import time
from typing import Any

# Polling intervals (seconds). After a message came or went the next poll is POLL_MIN away
# (the next message often follows: a dependant, another outcome); the longer nothing comes,
# the longer the interval, a twentieth of the quiet time so far, up to POLL_MAX: an answer
# that took 40 ms waits for a poll at most 2 ms more, one that took minutes at most 20 ms.
POLL_MIN = 0.0005
POLL_MAX = 0.02
POLL_SHARE = 0.05

# Bytes a channel holds before Ray has to grow it (it grows on its own for a bigger message).
CHANNEL_BYTES = 1 << 20


class Backoff:
    """The interval to the next poll: :data:`POLL_SHARE` of the time since the last
    activity (:meth:`reset`), kept between :data:`POLL_MIN` and :data:`POLL_MAX`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.since = time.monotonic()

    def next(self) -> float:
        return min(max((time.monotonic() - self.since) * POLL_SHARE, POLL_MIN), POLL_MAX)


def to_actor(actor: Any, node_id: str, size: int = CHANNEL_BYTES) -> Any:
    """A channel the driver writes and ``actor`` (on node ``node_id``) reads. Blocking (it
    may call the actor's node): run it off the event loop."""
    from ray.experimental.channel.shared_memory_channel import Channel

    channel = Channel(None, [(actor, node_id)], size)
    channel.ensure_registered_as_writer()
    return channel


def to_driver(proxy: Any, node_id: str, size: int = CHANNEL_BYTES) -> Any:
    """In an actor: a channel it writes and the driver reads. The driver is no actor, so
    ``proxy``, an empty actor on the driver's node ``node_id``, stands for it as the reader
    (as it does in Ray's compiled graphs)."""
    import ray
    from ray.experimental.channel.shared_memory_channel import Channel

    channel = Channel(ray.get_runtime_context().current_actor, [(proxy, node_id)], size)
    channel.ensure_registered_as_writer()
    return channel


def try_read(channel: Any) -> Any | None:
    """The channel's next message, or None when the writer has written nothing new.
    Raises what Ray raises for a channel that is closed or whose writer died."""
    from ray.exceptions import RayChannelTimeoutError

    try:
        message = channel.read(timeout=0)
    except RayChannelTimeoutError:
        return None
    if isinstance(message, BaseException):  # Ray hands an error back as the value
        raise message
    return message


def try_write(channel: Any, message: Any) -> bool:
    """Write ``message`` if the reader has read the last one; False (nothing written) if not."""
    from ray.exceptions import RayChannelTimeoutError

    try:
        channel.write(message, timeout=0)
    except RayChannelTimeoutError:
        return False
    return True


def close(channel: Any) -> None:
    """Close a channel (its reader and writer get an error); already closed or gone is fine."""
    try:
        channel.close()
    except Exception:  # the other end died; nothing to release
        pass


class DriverLink:
    """The driver's ends of the two channels with one actor instance: what it sent (the
    last ``seq``), what waits to be written, and whether the actor polls (``awake``)."""

    def __init__(self, inbox: Any, outbox: Any) -> None:
        self.inbox = inbox  # driver -> actor
        self.outbox = outbox  # actor -> driver
        self.sent = 0
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.awake = True

    def send(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        self.pending.extend(batch)
        self.flush()

    def flush(self) -> bool:
        """Write what waits, if the actor read the last message; True if something was written."""
        if not self.pending or not try_write(self.inbox, (self.sent + 1, self.pending)):
            return False
        self.sent += 1
        self.pending = []
        return True

    def drop(self, key: int) -> bool:
        """Take an attempt out of what waits to be written; True if it was there."""
        for position, (queued, _) in enumerate(self.pending):
            if queued == key:
                del self.pending[position]
                return True
        return False

    def receive(self) -> tuple[list[tuple[int, str, Any]], int | None] | None:
        message: tuple[list[tuple[int, str, Any]], int | None] | None = try_read(self.outbox)
        return message

    def close(self) -> None:
        close(self.inbox)
        close(self.outbox)


__all__ = [
    "CHANNEL_BYTES",
    "POLL_MAX",
    "POLL_MIN",
    "Backoff",
    "DriverLink",
    "to_actor",
    "to_driver",
    "try_read",
    "try_write",
]
