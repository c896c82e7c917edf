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
        FederationInfo,
        RoundGuard,
        RoundHooks,
    )
    from privfl.core.history import (
        History,
        RoundRecord,
    )
    from privfl.core.params import (
        ParamSpec,
    )
    from privfl.core.ring import (
        RingEncoding,
        ring_for,
    )
    from privfl.core.sampling import (
        ClientSampler,
        FixedSizeSampling,
        PoissonSampling,
    )
    from privfl.core.securesum import (
        ClientSession,
        PlainSecureSum,
        SecureSum,
        SecureSumProcess,
        ServerSession,
        TrustAssumption,
        Visibility,
    )
    from privfl.core.server_opt import (
        FedAdagrad,
        FedAdam,
        FedAvgServer,
        FedYogi,
        ServerOptimizer,
    )
    from privfl.core.spec import (
        ClientId,
        Contribution,
        SumResult,
        ValueSpec,
    )
    from privfl.core.transport import (
        DropoutPolicy,
        InMemoryTransport,
        NoDropout,
        RandomDropout,
        RoundOutcome,
        ScheduledDropout,
    )
    from privfl.core.weighting import (
        Weighting,
    )

__all__ = [
    "ClientId",
    "ClientResult",
    "ClientSampler",
    "ClientSession",
    "ClientUpdate",
    "Contribution",
    "DropoutPolicy",
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
    "LocalSGD",
    "NoDropout",
    "ParamSpec",
    "PlainSecureSum",
    "PoissonSampling",
    "RandomDropout",
    "RingEncoding",
    "RoundGuard",
    "RoundHooks",
    "RoundOutcome",
    "RoundRecord",
    "ScheduledDropout",
    "SecureSum",
    "SecureSumProcess",
    "ServerOptimizer",
    "ServerSession",
    "SumResult",
    "TrustAssumption",
    "ValueSpec",
    "Visibility",
    "Weighting",
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
    "FederationInfo": "privfl.core.fedavg",
    "RoundGuard": "privfl.core.fedavg",
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
    "RoundHooks": "privfl.core.fedavg",
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
}

__getattr__ = lazy_getattr("privfl.core", _EXPORTS)
