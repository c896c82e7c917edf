from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from privfl.accounting import Accountant, Budget, PrivacyLedger, UnitKind, epsilon
from privfl.accounting.accountant import NeighboringRelation
from privfl.core.fedavg import FedAvg, FedAvgConfig
from privfl.core.params import ParamSpec
from privfl.core.sampling import PoissonSampling
from privfl.core.securesum import PlainSecureSum
from privfl.core.transport import InMemoryTransport, ScheduledDropout
from privfl.core.weighting import Weighting
from privfl.dp.distributed import DistributedDP, ddg_rho, discrete_gaussian
from privfl.errors import ConfigurationError
from privfl.secagg.multiserver import MultiServerSecureSum
from privfl.secagg.pairwise import PairwiseSecureSum

from ..core.test_fedavg import _data, _FixedDeltas, _model


def _uniform(seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return lambda n: 1.0 - rng.random(n)


def test_sampler_matches_the_discrete_gaussian_pmf() -> None:
    sigma = 1.5
    z = discrete_gaussian(sigma, 200_000, _uniform(0))
    ks = np.arange(-12, 13)
    logp = -(ks.astype(float) ** 2) / (2 * sigma**2)
    p = np.exp(logp - logsumexp(logp))
    observed = np.array([np.count_nonzero(z == k) for k in ks])
    keep = p * len(z) > 5
    expected = p[keep] / p[keep].sum() * observed[keep].sum()
    assert stats.chisquare(observed[keep], expected).pvalue > 1e-3


def test_sampler_scale_for_large_sigma_and_csprng_source() -> None:
    from privfl._csprng import SecureRandom

    z = discrete_gaussian(2.5e6, 300_000, SecureRandom().uniform)
    assert z.dtype == np.int64
    assert np.std(z) == pytest.approx(2.5e6, rel=0.01) and abs(np.mean(z)) < 2e4


def test_accounting_tends_to_the_continuous_gaussian() -> None:
    # noise multiplier of the sum: √n·σ/Δ; large σ makes τ vanish
    n, delta_l2, dim = 20, 2.0**20, 10_000
    for sigma in (2.0**18, 2.0**20, 2.0**22):
        rho = ddg_rho(l2_sensitivity=delta_l2, sigma=sigma, shares=n, dim=dim)
        z = math.sqrt(n) * sigma / delta_l2
        assert rho == pytest.approx(1 / (2 * z**2), rel=1e-12)
        eps_dg = epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.ZCDpEvent(rho), 10),
                         delta=1e-5, accountant=Accountant.RDP)
        eps_g = epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 10),
                        delta=1e-5, accountant=Accountant.RDP)
        assert eps_dg == pytest.approx(eps_g, rel=1e-9)
    # with little noise the discreteness term makes it strictly worse than the Gaussian
    small = ddg_rho(l2_sensitivity=1.0, sigma=0.3, shares=5, dim=100)
    assert small > 1 / (2 * (math.sqrt(5) * 0.3) ** 2)


def _run(secure, drops, rounds=1, budget=None):  # type: ignore[no-untyped-def]
    data = _data(8)
    d = ParamSpec.from_module(_model()).dim
    ledger = PrivacyLedger(delta=1e-5, accountant=Accountant.RDP,
                           budgets={UnitKind.CLIENT: Budget(budget, 1e-5)} if budget else None)
    hooks = DistributedDP(noise_multiplier=1.0, clip_norm=1.0, ledger=ledger, secure_sum=secure,
                          rng=np.random.default_rng(0))
    fa = FedAvg(model=_model(), data=data,
                client_update=_FixedDeltas({c: np.zeros(d, np.float32) for c in range(8)}),
                config=FedAvgConfig(rounds=rounds, sampler=PoissonSampling(1.0),
                                    weighting=Weighting.UNIFORM),
                secure_sum=secure, stages=hooks,
                transport=InMemoryTransport(ScheduledDropout(drops)))
    theta = fa.params.copy()
    history = fa.run()
    return fa, theta, hooks, ledger, history


@pytest.mark.parametrize("secure", [PairwiseSecureSum(), MultiServerSecureSum(2)],
                         ids=["secagg", "multiserver"])
def test_server_sees_a_noised_sum_with_the_configured_noise(secure) -> None:  # type: ignore[no-untyped-def]
    fa, theta, hooks, ledger, _ = _run(secure, {})
    update = fa.params - theta  # zero deltas: the update is the noise alone, / expected clients
    want = 1.0 * 1.0 / 8  # z·C / n̄ when all 8 shares arrive
    assert np.std(update) == pytest.approx(want, rel=0.25)
    (entry,) = ledger.entries(hooks.unit)
    assert entry.params["noise_shares"] == 8
    assert hooks.unit.relation is NeighboringRelation.REPLACE_WITH_ZERO


def test_dropouts_reduce_the_noise_and_the_accounting_says_so() -> None:
    _, _, hooks, ledger, history = _run(PairwiseSecureSum(), {2: {0, 1}})
    (entry,) = ledger.entries(hooks.unit)
    assert entry.params["noise_shares"] == 6 and history.rounds[0].extra["noise_shares"] == 6
    noise = hooks.noise
    full = ddg_rho(l2_sensitivity=noise._plan.sensitivity, sigma=noise._plan.sigma, shares=8,
                   dim=noise._d + 1)
    assert entry.event.rho == pytest.approx(full * 8 / 6, rel=1e-9)


def test_budget_guard_with_distributed_dp() -> None:
    _, _, hooks, ledger, history = _run(PairwiseSecureSum(), {}, rounds=50, budget=3.0)
    assert history.stopped_early is not None and len(history.rounds) < 50
    assert ledger.epsilon(hooks.unit) <= 3.0


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="ring secure sum"):
        DistributedDP(noise_multiplier=1.0, clip_norm=1.0,
                      ledger=PrivacyLedger(delta=1e-5, accountant=Accountant.RDP),
                      secure_sum=PlainSecureSum())
    data = _data(3, sizes=[10, 20, 30])
    d = ParamSpec.from_module(_model()).dim
    hooks = DistributedDP(noise_multiplier=1.0, clip_norm=1.0,
                          ledger=PrivacyLedger(delta=1e-5, accountant=Accountant.RDP),
                          secure_sum=PairwiseSecureSum())
    with pytest.raises(ConfigurationError, match="uniform"):
        FedAvg(model=_model(), data=data,
               client_update=_FixedDeltas({c: np.zeros(d, np.float32) for c in range(3)}),
               config=FedAvgConfig(rounds=1, sampler=PoissonSampling(1.0)),
               secure_sum=PairwiseSecureSum(), stages=hooks)
