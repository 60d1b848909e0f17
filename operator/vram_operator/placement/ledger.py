"""The single book of what is reserved where: one Reservation per placed server replica."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vram_operator.api.inference_server import InferenceServer
from vram_operator.placement.demand import replica_key


@dataclass(frozen=True)
class Reservation:
    """`budget_mib` reserved on each of `gpu_uuids` (one per tensor-parallel rank) on `node` by one
    replica of a server."""

    server: str
    node: str
    gpu_uuids: tuple[str, ...]
    budget_mib: float
    dedicated: bool = False
    replica: int = 0

    @property
    def key(self) -> str:
        return replica_key(self.server, self.replica)


@dataclass(frozen=True)
class Ledger:
    """Immutable: every change returns a new Ledger. At most one reservation per server replica."""

    reservations: tuple[Reservation, ...] = ()
    _by_server: dict[str, Reservation] = field(init=False, repr=False, compare=False)
    _by_uuid: dict[str, tuple[Reservation, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_server = {r.key: r for r in self.reservations}
        ordered = tuple(by_server[s] for s in sorted(by_server))
        by_uuid: dict[str, list[Reservation]] = {}
        for reservation in ordered:
            for uuid in reservation.gpu_uuids:
                by_uuid.setdefault(uuid, []).append(reservation)
        object.__setattr__(self, "reservations", ordered)
        object.__setattr__(self, "_by_server", by_server)
        object.__setattr__(self, "_by_uuid", {u: tuple(rs) for u, rs in by_uuid.items()})

    @classmethod
    def from_servers(cls, servers: Iterable[InferenceServer]) -> Ledger:
        """Reservations recorded in the servers' statuses, one per placed replica (without GPUs: none)."""
        return cls(
            tuple(
                Reservation(
                    server=server.key,
                    node=placement.node,
                    gpu_uuids=tuple(g.uuid for g in placement.gpus),
                    budget_mib=placement.budget_mib,
                    dedicated=server.spec.isolation == "dedicated",
                    replica=placement.replica,
                )
                for server in servers
                if server.status is not None
                for placement in server.status.placed_replicas()
                if placement.gpus
            )
        )

    @property
    def servers(self) -> frozenset[str]:
        """The keys of the replicas holding reservations ("ns/name", "ns/name[1]", ...)."""
        return frozenset(self._by_server)

    def get(self, key: str) -> Reservation | None:
        return self._by_server.get(key)

    def with_reservation(self, reservation: Reservation) -> Ledger:
        """This ledger with `reservation` added (replacing that replica's previous one)."""
        others = tuple(r for r in self.reservations if r.key != reservation.key)
        return Ledger((*others, reservation))

    def without(self, server: str) -> Ledger:
        """This ledger without any reservation of `server` (all its replicas)."""
        return Ledger(tuple(r for r in self.reservations if r.server != server))

    def reservations_on(self, uuid: str) -> tuple[Reservation, ...]:
        return self._by_uuid.get(uuid, ())

    def reserved_on(self, uuid: str) -> float:
        """MiB reserved on one GPU by all servers."""
        return sum(r.budget_mib for r in self.reservations_on(uuid))
