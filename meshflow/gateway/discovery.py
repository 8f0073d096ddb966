"""What each deployment serves, learnt off the request path.

The GraphQL door offers each read-only endpoint as a typed query field, which needs every
executor's ``Endpoints`` answer. An :class:`EndpointCatalog` asks all shards at once, in a
background task: every ``retry`` seconds while some shard has not answered yet, then every
``refresh`` seconds. Each answer is cached per shard, so a deployment that falls silent keeps
its fields, and one that has never answered simply has none until it does. Requests read the
cache and never wait on a probe; the only exception is
:meth:`EndpointCatalog.refresh_missing`, which the door calls for a query naming a field it does
not know yet, before refusing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from meshflow.gateway.topology import Topology
from meshflow.gateway.transport import Transport
from meshflow.proto.v1 import services_pb2

log = logging.getLogger("meshflow.gateway")

Shard = tuple[str, int]


class EndpointCatalog:
    """The cached ``Endpoints`` answers of every shard of a Flow, refreshed in the background.

    ``on_change`` is called with every answer known so far each time one of them changes.
    """

    def __init__(
        self,
        topology: Topology,
        transport: Transport,
        on_change: Callable[[list[services_pb2.EndpointsResponse]], None],
        *,
        retry: float = 0.2,
        refresh: float = 30.0,
    ) -> None:
        self.topology = topology
        self.transport = transport
        self.on_change = on_change
        self.retry = retry
        self.refresh = refresh
        self.shards: tuple[Shard, ...] = tuple(
            (n.name, s) for n in topology.nodes for s in range(len(n.shards))
        )
        self.known: dict[Shard, services_pb2.EndpointsResponse] = {}
        self._round: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def complete(self) -> bool:
        """True once every shard has answered at least once."""
        return len(self.known) == len(self.shards)

    def start(self) -> None:
        """Start the background refresh in the running loop (once)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._refresh_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def refresh_missing(self) -> None:
        """Ask the shards that have not answered yet (all at once), or join the round under
        way; returns when that round is over."""
        if self.complete:
            return
        await self._one_round(only_missing=True)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self._one_round(only_missing=False)
            except Exception:  # a bug must not end discovery: log it, try again later
                log.exception("endpoint discovery failed; retrying")
            await asyncio.sleep(self.refresh if self.complete else self.retry)

    async def _one_round(self, *, only_missing: bool) -> None:
        if self._round is not None:  # one round at a time; later callers share it
            await asyncio.shield(self._round)
            return
        self._round = asyncio.get_running_loop().create_future()
        try:
            await self._ask(
                [s for s in self.shards if s not in self.known] if only_missing else self.shards
            )
        finally:
            self._round.set_result(None)
            self._round = None

    async def _ask(self, shards: Sequence[Shard]) -> None:
        # Each answer counts as soon as it comes: a silent shard delays no other.
        await asyncio.gather(*(self._ask_one(key) for key in shards))

    async def _ask_one(self, key: Shard) -> None:
        try:
            answer = await self.transport.describe(*key)
        except Exception as exc:  # a closing transport, a bug: the next round asks again
            log.debug("endpoints of %s shard %d: %r", key[0], key[1], exc)
            return
        if answer is None or self.known.get(key) == answer:
            return  # silent (what it said before still holds), or nothing new
        self.known[key] = answer
        self.on_change([self.known[s] for s in self.shards if s in self.known])
