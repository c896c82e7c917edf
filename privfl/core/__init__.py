"""The FedAvg core: parameters, client updates, sampling, the secure-sum interface, the driver."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl._lazy import lazy_getattr

if TYPE_CHECKING:
    from privfl.core.client import (
        ClientResult,
        ClientUpdate,
        FedProx,
        LocalSGD,
        evaluate,
    )
    from privfl.core.fedavg import (
        FedAvg,
        FedAvgConfig,
    )
    from privfl.core.history import (
        History,
        RoundRecord,
    )
    from privfl.core.params import (
        ParamSpec,
    )
    from privfl.core.release import (
        ReleasePolicy,
        Withheld,
    )
    from privfl.core.ring import (
        RingEncoding,
        ring_for,
    )
    from privfl.core.roles import (
        ClientRole,
        ServerRole,
        ServerRound,
        Trainer,
    )
    from privfl.core.sampling import (
        ClientSampler,
        FixedSizeSampling,
        PoissonSampling,
    )
    from privfl.core.securesum import (
        ClientProcess,
        ClientSession,
        PlainSecureSum,
        SecureSum,
        SecureSumProcess,
        ServerSession,
        TrustAssumption,
        Visibility,
        client_process,
    )
    from privfl.core.server_opt import (
        FedAdagrad,
        FedAdam,
        FedAvgServer,
        FedYogi,
        ServerOptimizer,
    )
    from privfl.core.simulation import (
        Execution,
    )
    from privfl.core.spec import (
        ClientId,
        Contribution,
        LazyContribution,
        SumResult,
        ValueSpec,
    )
    from privfl.core.stages import (
        Aggregate,
        ClientChain,
        ClientStage,
        FederationInfo,
        ServerStage,
        StageChain,
    )
    from privfl.core.transport import (
        ClientPool,
        DropoutPolicy,
        InMemoryTransport,
        LocalClients,
        NoDropout,
        RandomDropout,
        RoundOutcome,
        ScheduledDropout,
    )
    from privfl.core.weighting import (
        Weighting,
    )

__all__ = [
    "Aggregate",
    "ClientChain",
    "ClientId",
    "ClientPool",
    "ClientProcess",
    "ClientResult",
    "ClientRole",
    "ClientSampler",
    "ClientSession",
    "ClientStage",
    "ClientUpdate",
    "Contribution",
    "DropoutPolicy",
    "Execution",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgConfig",
    "FedAvgServer",
    "FedProx",
    "FedYogi",
    "FederationInfo",
    "FixedSizeSampling",
    "History",
    "InMemoryTransport",
    "LazyContribution",
    "LocalClients",
    "LocalSGD",
    "NoDropout",
    "ParamSpec",
    "PlainSecureSum",
    "PoissonSampling",
    "RandomDropout",
    "ReleasePolicy",
    "RingEncoding",
    "RoundOutcome",
    "RoundRecord",
    "ScheduledDropout",
    "SecureSum",
    "SecureSumProcess",
    "ServerOptimizer",
    "ServerRole",
    "ServerRound",
    "ServerSession",
    "ServerStage",
    "StageChain",
    "SumResult",
    "Trainer",
    "TrustAssumption",
    "ValueSpec",
    "Visibility",
    "Weighting",
    "Withheld",
    "client_process",
    "evaluate",
    "ring_for",
]

_EXPORTS = {
    "ClientId": "privfl.core.spec",
    "ClientResult": "privfl.core.client",
    "ClientSampler": "privfl.core.sampling",
    "ClientSession": "privfl.core.securesum",
    "ClientUpdate": "privfl.core.client",
    "Contribution": "privfl.core.spec",
    "DropoutPolicy": "privfl.core.transport",
    "FedAdagrad": "privfl.core.server_opt",
    "FedAdam": "privfl.core.server_opt",
    "FedAvg": "privfl.core.fedavg",
    "FedAvgConfig": "privfl.core.fedavg",
    "FederationInfo": "privfl.core.stages",
    "FedAvgServer": "privfl.core.server_opt",
    "FedProx": "privfl.core.client",
    "FedYogi": "privfl.core.server_opt",
    "FixedSizeSampling": "privfl.core.sampling",
    "History": "privfl.core.history",
    "InMemoryTransport": "privfl.core.transport",
    "LocalSGD": "privfl.core.client",
    "NoDropout": "privfl.core.transport",
    "ParamSpec": "privfl.core.params",
    "PlainSecureSum": "privfl.core.securesum",
    "PoissonSampling": "privfl.core.sampling",
    "RandomDropout": "privfl.core.transport",
    "RingEncoding": "privfl.core.ring",
    "ring_for": "privfl.core.ring",
    "RoundOutcome": "privfl.core.transport",
    "RoundRecord": "privfl.core.history",
    "ScheduledDropout": "privfl.core.transport",
    "SecureSum": "privfl.core.securesum",
    "SecureSumProcess": "privfl.core.securesum",
    "ServerOptimizer": "privfl.core.server_opt",
    "ServerSession": "privfl.core.securesum",
    "SumResult": "privfl.core.spec",
    "TrustAssumption": "privfl.core.securesum",
    "ValueSpec": "privfl.core.spec",
    "Visibility": "privfl.core.securesum",
    "Weighting": "privfl.core.weighting",
    "evaluate": "privfl.core.client",
    "Aggregate": "privfl.core.stages",
    "ClientChain": "privfl.core.stages",
    "ClientStage": "privfl.core.stages",
    "ServerStage": "privfl.core.stages",
    "StageChain": "privfl.core.stages",
    "ClientPool": "privfl.core.transport",
    "LocalClients": "privfl.core.transport",
    "ClientProcess": "privfl.core.securesum",
    "client_process": "privfl.core.securesum",
    "ClientRole": "privfl.core.roles",
    "ServerRole": "privfl.core.roles",
    "ServerRound": "privfl.core.roles",
    "Trainer": "privfl.core.roles",
    "Execution": "privfl.core.simulation",
    "LazyContribution": "privfl.core.spec",
    "ReleasePolicy": "privfl.core.release",
    "Withheld": "privfl.core.release",
}

__getattr__ = lazy_getattr("privfl.core", _EXPORTS)
