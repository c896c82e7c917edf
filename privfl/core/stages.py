"""Aggregation stages: clip → noise → encode → secure sum, each with a client and a server half.

The two halves of a stage meet only through privfl wire messages.

A federated aggregate is built by nesting, in the spirit of TensorFlow Federated's aggregation
factories: a chain of stages, outermost first, ends in a secure sum. Each stage

* on the **server**, at configuration: sees the :class:`~privfl.core.spec.ValueSpec` handed in
  from outside and hands a (tightened) spec to the next stage in; the innermost spec sizes the
  secure sum. It then describes its client half in a wire message
  (:meth:`ServerStage.client_config`) and, before each round, the values that half needs for
  that round (:meth:`ServerStage.round_config`, e.g. the adaptive clip norm);
* on the **client**: a :class:`ClientStage` rebuilt from that message transforms the value on its
  way in (clip, append a count, add a noise share);
* on the **server**, after the sum: transforms the :class:`Aggregate` on its way out (add noise,
  strip a count, undo a scaling), innermost stage first, and emits its measurements into the round
  record and its DP events into its ledger.

A stage that needs state between rounds keeps it on the server side and sends what the client
half needs in the next round's config: no object is shared by the two sides.

Stages can declare trailing *auxiliary blocks* (:class:`AuxBlock`) that ride through the secure sum
with the value — adaptive clipping's unclipped count is one. A noise stage further in must consume
every block: it adds each block's own noise and charges the joint mechanism (Andrew et al. 2021,
Theorem 1), so a chain that would release a block without noise is refused at configuration.

Adding a stage touches one module (its server and client halves) and one line of
:data:`CLIENT_STAGES`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from privfl.core import wire
from privfl.core.history import RoundRecord
from privfl.core.spec import ClientId, SumResult, ValueSpec
from privfl.errors import ConfigurationError, MalformedMessageError

__all__ = [
    "CLIENT_STAGES",
    "Aggregate",
    "AuxBlock",
    "ChainContext",
    "ClientChain",
    "ClientStage",
    "FederationInfo",
    "ServerStage",
    "StageChain",
]

#: Client halves by stage kind: ``kind -> "module:Class"`` (imported on first use). Each class
#: has ``from_config(config: bytes) -> ClientStage``.
CLIENT_STAGES: dict[str, str] = {
    "coordinate_clip": "privfl.core.bounds:CoordinateClipClient",
    "l2_clip": "privfl.dp.clipping:L2ClipClient",
    "adaptive_clip": "privfl.dp.clipping:AdaptiveClipClient",
    "distributed_noise": "privfl.dp.distributed:DistributedNoiseClient",
}

F, T = wire.Field, wire.FieldType
_CHAIN = wire.Schema(kind=60, name="stages.chain", fields=(
    F(1, "kinds", T.TEXT), F(2, "configs", T.BYTES)))
_ROUND = wire.Schema(kind=61, name="stages.round", fields=(F(1, "configs", T.BYTES),))
_MAX_STAGES = 16


@dataclass(frozen=True, slots=True)
class FederationInfo:
    """What the server knows about the federation when it configures its stages (all public).

    Attributes:
        num_clients: Population size N.
        weights: Each client's weight wₖ ∈ (0, 1].
        sampler: The client sampling scheme.
        rounds: Planned number of rounds.
    """

    num_clients: int
    weights: npt.NDArray[np.float64]
    sampler: Any
    rounds: int


@dataclass(frozen=True, slots=True)
class AuxBlock:
    """Trailing coordinates an outer stage sends through the secure sum with the value.

    Attributes:
        owner: The stage kind that owns the block.
        length: Number of coordinates (the last ones of the vector, after inner blocks).
        l2_bound: Bound on one client's contribution to the block (its sensitivity).
        noise_std: Std of the Gaussian noise the block needs on its sum, per coordinate.
    """

    owner: str
    length: int
    l2_bound: float
    noise_std: float


@dataclass
class ChainContext:
    """The configuration-time blackboard of one chain.

    Attributes:
        info: The federation.
        secure_sum: The secure sum the chain ends in (its ``precision``, its kind of encoding).
        aux: Auxiliary blocks declared so far, outermost first (each at the end of the vector).
        consumed: Whether a noise stage has taken charge of the blocks.
    """

    info: FederationInfo
    secure_sum: Any
    aux: list[AuxBlock] = field(default_factory=list)
    consumed: bool = False


@dataclass
class Aggregate:
    """A sum on its way out of the chain (server side).

    Attributes:
        weighted_sum: Σ wₖ xₖ, possibly noised and rescaled by the stages.
        total_weight: Σ wₖ over the contributors.
        contributors: Who is in the sum.
        denominator: A fixed denominator set by a DP stage (the expected total weight); ``None``
            divides by ``total_weight``.
    """

    weighted_sum: npt.NDArray[np.float64]
    total_weight: float
    contributors: tuple[ClientId, ...]
    denominator: float | None = None

    @classmethod
    def of(cls, result: SumResult) -> Aggregate:
        """The aggregate of a secure sum's result."""
        return cls(np.asarray(result.weighted_sum, dtype=np.float64).copy(),
                   float(result.total_weight), tuple(result.contributors))

    def mean(self) -> npt.NDArray[np.float64] | None:
        """The averaged value, or ``None`` when there is nothing to release."""
        den = self.total_weight if self.denominator is None else self.denominator
        if not (math.isfinite(den) and den > 0):
            return None
        out: npt.NDArray[np.float64] = self.weighted_sum / den
        return out


@runtime_checkable
class ServerStage(Protocol):
    """The server half of a stage, and its configuration."""

    kind: ClassVar[str]

    def configure(self, spec: ValueSpec, ctx: ChainContext) -> ValueSpec:
        """Check ``spec`` and return the spec for the next stage in."""
        ...

    def client_config(self) -> bytes | None:
        """The wire message its client half is built from (``None``: no client half)."""
        ...

    def round_config(self, round_id: int) -> bytes | None:
        """Values the client half needs this round (``None``: none)."""
        ...

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Raise :class:`~privfl.errors.BudgetExceededError` to stop before ``round_id``."""
        ...

    def finish(self, round_id: int, agg: Aggregate, record: RoundRecord) -> Aggregate:
        """Transform the aggregate on its way out (server side)."""
        ...


@runtime_checkable
class ClientStage(Protocol):
    """The client half of a stage."""

    def apply(self, x: npt.NDArray[np.float64], round_config: bytes | None, *,
              client_id: ClientId, round_id: int) -> npt.NDArray[np.float64]:
        """Transform this client's value on its way into the secure sum."""
        ...


def _client_class(kind: str) -> Any:
    target = CLIENT_STAGES.get(kind)
    if target is None:
        raise MalformedMessageError(f"unknown aggregation stage {kind!r}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def expand(stages: Any) -> list[ServerStage]:
    """Flatten stages and stage groups (objects with a ``stages`` list) into one list."""
    if stages is None:
        return []
    if isinstance(stages, ServerStage):
        return [stages]
    inner = getattr(stages, "stages", None)
    if inner is not None and not isinstance(stages, (list, tuple)):
        return expand(list(inner))
    out: list[ServerStage] = []
    for s in stages:
        out.extend(expand(s))
    return out


class StageChain:
    """The server side of a chain of stages (outermost first)."""

    def __init__(self, stages: Sequence[ServerStage]) -> None:
        self.stages = expand(stages)
        if len(self.stages) > _MAX_STAGES:
            raise ConfigurationError(f"at most {_MAX_STAGES} stages. Found {len(self.stages)}.")
        for s in self.stages:
            if not isinstance(s, ServerStage):
                raise ConfigurationError(f"{s!r} is not an aggregation stage.")

    def configure(self, spec: ValueSpec, info: FederationInfo, secure_sum: Any) -> ValueSpec:
        """Configure every stage, outermost first; return the secure sum's spec."""
        ctx = ChainContext(info=info, secure_sum=secure_sum)
        for s in self.stages:
            spec = s.configure(spec, ctx)
            config = s.client_config()
            if config is not None and s.kind not in CLIENT_STAGES:
                raise ConfigurationError(f"stage {s.kind!r} has a client half but no entry in "
                                         "CLIENT_STAGES.")
        if ctx.aux and not ctx.consumed:
            owners = sorted({b.owner for b in ctx.aux})
            raise ConfigurationError(
                f"stages {owners} send auxiliary values through the sum that need noise: add a "
                "central noise stage inside them (for example CentralDP).")
        self.spec = spec
        return spec

    def client_config(self) -> bytes:
        """One wire message describing every client half, in order."""
        kinds, configs = [], []
        for s in self.stages:
            config = s.client_config()
            if config is not None:
                kinds.append(s.kind)
                configs.append(config)
        return wire.encode(_CHAIN, 0, {"kinds": ",".join(kinds),
                                       "configs": wire.pack_blobs(configs)})

    def round_config(self, round_id: int) -> bytes:
        """The per-round values of every client half, in order."""
        blobs = [s.round_config(round_id) or b"" for s in self.stages
                 if s.client_config() is not None]
        return wire.encode(_ROUND, round_id, {"configs": wire.pack_blobs(blobs)})

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Every stage's guard (budgets)."""
        for s in self.stages:
            s.before_round(round_id, selected)

    def finish(self, round_id: int, result: SumResult, record: RoundRecord) -> Aggregate:
        """The secure sum's result through every server half, innermost first."""
        agg = Aggregate.of(result)
        for s in reversed(self.stages):
            agg = s.finish(round_id, agg, record)
        return agg

    def state_dict(self) -> dict[str, Any]:
        """Each stage's kind and state (``None`` for a stateless stage), in order."""
        return {"stages": [{"kind": s.kind, "state": s.state_dict()
                            if hasattr(s, "state_dict") else None} for s in self.stages]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore every stage; the chain must have the same stages in the same order."""
        from privfl.core.checkpoint import require
        from privfl.errors import CheckpointError

        saved = require(state, "stages", list)
        kinds = [s.kind for s in self.stages]
        if [x.get("kind") if isinstance(x, dict) else None for x in saved] != kinds:
            raise CheckpointError(f"the checkpoint's stages differ from this run's {kinds}")
        for s, x in zip(self.stages, saved, strict=True):
            if hasattr(s, "load_state_dict"):
                s.load_state_dict(require(x, "state", dict))


class ClientChain:
    """The client halves of a chain, rebuilt from the server's wire message."""

    def __init__(self, stages: list[ClientStage]) -> None:
        self.stages = stages

    @classmethod
    def from_config(cls, config: bytes) -> ClientChain:
        """Rebuild from :meth:`StageChain.client_config` (untrusted bytes).

        Raises:
            MalformedMessageError: Bad message, unknown stage kind, bad stage config.
        """
        msg = wire.decode(config, _CHAIN)
        text = msg.values["kinds"]
        kinds = [k for k in str(text).split(",") if k]
        blobs = wire.unpack_blobs(msg.raw("configs"), max_items=_MAX_STAGES)
        if len(kinds) != len(blobs):
            raise MalformedMessageError("stage kinds and configs do not match")
        return cls([_client_class(k).from_config(b) for k, b in zip(kinds, blobs, strict=True)])

    def apply(self, x: npt.NDArray[np.float64], round_config: bytes, *, client_id: ClientId,
              round_id: int) -> npt.NDArray[np.float64]:
        """Run every client half, outermost first."""
        msg = wire.decode(round_config, _ROUND)
        if msg.round_id != round_id:
            raise MalformedMessageError(
                f"stage values for round {msg.round_id}, expected {round_id}")
        blobs = wire.unpack_blobs(msg.raw("configs"), max_items=_MAX_STAGES)
        if len(blobs) != len(self.stages):
            raise MalformedMessageError(
                f"{len(blobs)} stage round configs for {len(self.stages)} stages")
        for stage, blob in zip(self.stages, blobs, strict=True):
            x = stage.apply(x, blob or None, client_id=client_id, round_id=round_id)
        return x


def strip_aux(agg: Aggregate, length: int) -> npt.NDArray[np.float64]:
    """Remove the last ``length`` coordinates of ``agg``; return them."""
    tail = agg.weighted_sum[-length:].copy()
    agg.weighted_sum = agg.weighted_sum[:-length]
    return tail


def one_field(schema: wire.Schema, name: str, value: object) -> bytes:
    """A one-field config message (round 0)."""
    return wire.encode(schema, 0, {name: value})


def read_config(data: bytes, schema: wire.Schema) -> Mapping[str, Any]:
    """A stage config's values (raises :class:`MalformedMessageError`)."""
    return wire.decode(data, schema).values
