"""privfl: privacy-preserving federated learning.

FedAvg with three composable privacy layers (differential privacy, CKKS encryption, secure
aggregation by secret sharing) and honest privacy accounting. Importing ``privfl`` has no side
effects and imports neither torch nor tenseal; names resolve on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl._lazy import lazy_getattr

__version__ = "0.1.0"

if TYPE_CHECKING:
    from privfl.core import (
        FedAdagrad,
        FedAdam,
        FedAvg,
        FedAvgConfig,
        FedAvgServer,
        FedProx,
        FedYogi,
        FixedSizeSampling,
        History,
        InMemoryTransport,
        LocalSGD,
        ParamSpec,
        PlainSecureSum,
        PoissonSampling,
        ScheduledDropout,
        ValueSpec,
        Weighting,
    )
    from privfl.data import (
        federated_digits,
        synthetic_federated,
    )
    from privfl.errors import (
        PrivflError,
    )
    from privfl.models import (
        ModelName,
        build_model,
    )

__all__ = [
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgConfig",
    "FedAvgServer",
    "FedProx",
    "FedYogi",
    "FixedSizeSampling",
    "History",
    "InMemoryTransport",
    "LocalSGD",
    "ModelName",
    "ParamSpec",
    "PlainSecureSum",
    "PoissonSampling",
    "PrivflError",
    "ScheduledDropout",
    "ValueSpec",
    "Weighting",
    "__version__",
    "build_model",
    "federated_digits",
    "synthetic_federated",
]

_EXPORTS = {
    "FedAdagrad": "privfl.core",
    "FedAdam": "privfl.core",
    "FedAvg": "privfl.core",
    "FedAvgConfig": "privfl.core",
    "FedAvgServer": "privfl.core",
    "FedProx": "privfl.core",
    "FedYogi": "privfl.core",
    "FixedSizeSampling": "privfl.core",
    "History": "privfl.core",
    "InMemoryTransport": "privfl.core",
    "LocalSGD": "privfl.core",
    "ModelName": "privfl.models",
    "ParamSpec": "privfl.core",
    "PlainSecureSum": "privfl.core",
    "PoissonSampling": "privfl.core",
    "PrivflError": "privfl.errors",
    "ScheduledDropout": "privfl.core",
    "ValueSpec": "privfl.core",
    "Weighting": "privfl.core",
    "build_model": "privfl.models",
    "federated_digits": "privfl.data",
    "synthetic_federated": "privfl.data",
}

__getattr__ = lazy_getattr("privfl", _EXPORTS)
