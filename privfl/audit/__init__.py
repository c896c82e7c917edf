"""Empirical privacy audits: what an attacker actually infers, beside the accountant's ε.

* :mod:`~privfl.audit.estimate` — Andrew et al.'s one-shot canary **estimate** (client level);
* :mod:`~privfl.audit.one_run` — Steinke, Nasr and Jagielski's one-run **lower bound**;
* :mod:`~privfl.audit.membership` — a loss-threshold membership attack (AUC, TPR at 1% FPR and a
  heuristic Clopper–Pearson bound);
* :mod:`~privfl.audit.canaries` — canary clients and canary records;
* :mod:`~privfl.audit.plan` — an audited run (``privfl audit``), its findings in the privacy
  report;
* :mod:`~privfl.audit.divergence` — ε of a pair of Gaussians (the conversion the estimate uses).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl._lazy import lazy_getattr

if TYPE_CHECKING:
    from privfl.audit.canaries import CanaryClients, CanaryClientUpdate, CanaryExamples
    from privfl.audit.divergence import gaussian_pair_epsilon, gdp_epsilon, hockey_stick
    from privfl.audit.estimate import CanaryEstimate, ThreatModel, canary_estimate, null_z_scores
    from privfl.audit.membership import (
        MembershipResult,
        clopper_pearson_epsilon,
        loss_threshold_attack,
    )
    from privfl.audit.one_run import (
        OneRunBound,
        one_run_audit,
        one_run_lower_bound,
        one_run_p_value,
    )
    from privfl.audit.plan import AuditPlan, AuditResult
    from privfl.audit.units import AuditUnit

__all__ = [
    "AuditPlan",
    "AuditResult",
    "AuditUnit",
    "CanaryClientUpdate",
    "CanaryClients",
    "CanaryEstimate",
    "CanaryExamples",
    "MembershipResult",
    "OneRunBound",
    "ThreatModel",
    "canary_estimate",
    "clopper_pearson_epsilon",
    "gaussian_pair_epsilon",
    "gdp_epsilon",
    "hockey_stick",
    "loss_threshold_attack",
    "null_z_scores",
    "one_run_audit",
    "one_run_lower_bound",
    "one_run_p_value",
]

_EXPORTS = {
    "CanaryClientUpdate": "privfl.audit.canaries",
    "CanaryClients": "privfl.audit.canaries",
    "CanaryExamples": "privfl.audit.canaries",
    "gaussian_pair_epsilon": "privfl.audit.divergence",
    "gdp_epsilon": "privfl.audit.divergence",
    "hockey_stick": "privfl.audit.divergence",
    "CanaryEstimate": "privfl.audit.estimate",
    "ThreatModel": "privfl.audit.estimate",
    "canary_estimate": "privfl.audit.estimate",
    "null_z_scores": "privfl.audit.estimate",
    "MembershipResult": "privfl.audit.membership",
    "clopper_pearson_epsilon": "privfl.audit.membership",
    "loss_threshold_attack": "privfl.audit.membership",
    "OneRunBound": "privfl.audit.one_run",
    "one_run_audit": "privfl.audit.one_run",
    "one_run_lower_bound": "privfl.audit.one_run",
    "one_run_p_value": "privfl.audit.one_run",
    "AuditPlan": "privfl.audit.plan",
    "AuditResult": "privfl.audit.plan",
    "AuditUnit": "privfl.audit.units",
}

__getattr__ = lazy_getattr("privfl.audit", _EXPORTS)
