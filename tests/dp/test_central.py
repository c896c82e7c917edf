from __future__ import annotations

import math

import numpy as np
import pytest

from privfl.accounting import Accountant, Budget, PrivacyLedger, UnitKind
from privfl.core.fedavg import FedAvg, FedAvgConfig
from privfl.core.history import RoundRecord
from privfl.core.params import ParamSpec
from privfl.core.sampling import FixedSizeSampling, PoissonSampling
from privfl.core.securesum import PlainSecureSum
from privfl.core.spec import SumResult, ValueSpec
from privfl.core.stages import ClientChain, FederationInfo, StageChain
from privfl.dp import AdaptiveClipping, CentralDP, FixedClipping, clip_l2, update_noise_multiplier
from privfl.errors import ConfigurationError, UnsupportedEventError

from ..core.test_fedavg import _data, _FixedDeltas, _model


class _Chain:
    """A stage group driven through its two halves, as the roles do (bytes in between)."""

    def __init__(self, group: object) -> None:
        self.server = StageChain([group])

    def setup(self, spec: ValueSpec, info: FederationInfo) -> ValueSpec:
        out = self.server.configure(spec, info, PlainSecureSum())
        self.client = ClientChain.from_config(self.server.client_config())
        return out

    def client_value(self, round_id: int, client: int, delta: np.ndarray) -> np.ndarray:
        return self.client.apply(delta.astype(np.float64), self.server.round_config(round_id),
                                 client_id=client, round_id=round_id)

    def after_sum(self, round_id: int, result: SumResult, record: RoundRecord) -> np.ndarray:
        out = self.server.finish(round_id, result, record).mean()
        assert out is not None
        return out


def _setup(dp: CentralDP, n: int = 100, q: float = 0.1, d: int = 20_000
           ) -> tuple[_Chain, ValueSpec]:
    info = FederationInfo(num_clients=n, weights=np.ones(n), sampler=PoissonSampling(q),
                          rounds=10)
    chain = _Chain(dp)
    return chain, chain.setup(ValueSpec(length=d, max_clients=n), info)


def test_central_noise_has_the_configured_std() -> None:
    ledger = PrivacyLedger(delta=1e-5)
    dp = CentralDP(noise_multiplier=1.3, clipping=FixedClipping(0.7), ledger=ledger,
                   rng=np.random.default_rng(0))
    chain, spec = _setup(dp)
    out = chain.after_sum(1, SumResult(weighted_sum=np.zeros(spec.length), total_weight=0.0,
                                    contributors=()), RoundRecord(round_id=1, selected=[]))
    # std on the average: z·C / (q·W) = 1.3·0.7 / (0.1·100); seeded, n = 20,000 → ±1% (3σ ≈ 1.5%)
    assert np.std(out) == pytest.approx(1.3 * 0.7 / 10.0, rel=0.02)
    assert abs(np.mean(out)) < 4 * 0.091 / np.sqrt(20_000)
    assert ledger.rounds(dp.unit) == [1]


def test_secure_noise_std() -> None:
    dp = CentralDP(noise_multiplier=2.0, clipping=FixedClipping(1.0),
                   ledger=PrivacyLedger(delta=1e-5))
    chain, spec = _setup(dp)
    out = chain.after_sum(1, SumResult(weighted_sum=np.zeros(spec.length), total_weight=0.0,
                                    contributors=()), RoundRecord(round_id=1, selected=[]))
    assert np.std(out) == pytest.approx(2.0 / 10.0, rel=0.03)


def test_client_value_is_clipped_and_normalised() -> None:
    dp = CentralDP(noise_multiplier=1.0, clipping=FixedClipping(2.0),
                   ledger=PrivacyLedger(delta=1e-5), rng=np.random.default_rng(0))
    chain, spec = _setup(dp, d=3)
    x = chain.client_value(1, 0, np.array([6.0, 8.0, 0.0], np.float32))
    assert np.linalg.norm(x) <= 1.0 and np.allclose(x, [0.6, 0.8, 0.0], atol=1e-5)
    spec.check_value(x, 1.0)
    small = chain.client_value(1, 0, np.array([0.2, 0.0, 0.0], np.float32))
    assert np.allclose(small, [0.1, 0.0, 0.0])


def test_fixed_denominator_estimate_and_event_per_round() -> None:
    data = _data(6)
    d = ParamSpec.from_module(_model()).dim
    deltas = {c: np.full(d, 0.01, np.float32) for c in range(6)}
    ledger = PrivacyLedger(delta=1e-5)
    dp = CentralDP(noise_multiplier=1e-9, clipping=FixedClipping(100.0), ledger=ledger,
                   rng=np.random.default_rng(0))
    trained: list[int] = []

    class Counting(_FixedDeltas):
        def train(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            trained.append(kwargs.get("client_id", args[5]))
            return super().train(*args, **kwargs)

    fa = FedAvg(model=_model(), data=data, client_update=Counting(deltas),
                config=FedAvgConfig(rounds=4, sampler=PoissonSampling(0.5), seed=1), stages=dp)
    theta = fa.params.copy()
    h = fa.run()
    # Each round adds Σ Δ / (q·N) with (almost) no noise: (#contributors / 3)·0.01
    expected = len(trained) / 3 * 0.01
    np.testing.assert_allclose(fa.params - theta, expected, atol=1e-4)
    assert ledger.rounds(dp.unit) == [1, 2, 3, 4]  # charged even when nobody was sampled
    # the participants are not in the run's record: client-level DP withholds them
    assert all(r.selected == [] and r.contributors == [] for r in h.rounds)
    assert any("participation" in w for w in h.withheld)


def test_fixed_size_sampling_needs_rdp_and_uses_replace_one() -> None:
    info = FederationInfo(num_clients=50, weights=np.ones(50), sampler=FixedSizeSampling(5),
                          rounds=3)
    with pytest.raises(UnsupportedEventError, match="RDP"):
        _Chain(CentralDP(noise_multiplier=1.0, clipping=FixedClipping(1.0),
                         ledger=PrivacyLedger(delta=1e-5))).setup(
            ValueSpec(length=4, max_clients=5), info)
    dp = CentralDP(noise_multiplier=1.0, clipping=FixedClipping(1.0),
                   ledger=PrivacyLedger(delta=1e-5, accountant=Accountant.RDP))
    _Chain(dp).setup(ValueSpec(length=4, max_clients=5), info)
    assert dp.unit.relation.value == "replace_one"
    assert math.isclose(dp.event.event.noise_multiplier, 0.5)  # sensitivity 2 under replace-one


def test_adaptive_clipping_tracks_the_median_norm() -> None:
    clip = AdaptiveClipping(initial_clip_norm=0.05, learning_rate=0.5)
    dp = CentralDP(noise_multiplier=0.5, clipping=clip, ledger=PrivacyLedger(delta=1e-5),
                   rng=np.random.default_rng(0))
    chain, spec = _setup(dp, n=400, q=0.25, d=4)
    assert spec.length == 5
    rng = np.random.default_rng(1)
    for r in range(1, 80):
        norms = rng.uniform(0.5, 1.5, 100)  # median 1.0
        total = np.zeros(5)
        for nrm in norms:
            v = rng.normal(size=4)
            total += chain.client_value(r, 0, (v / np.linalg.norm(v) * nrm).astype(np.float32))
        chain.after_sum(r, SumResult(weighted_sum=total, total_weight=100.0, contributors=()),
                        RoundRecord(round_id=r, selected=[]))
    assert clip.clip_norm == pytest.approx(1.0, rel=0.15)


def test_adaptive_noise_split() -> None:
    z_delta = update_noise_multiplier(1.0, 5.0)
    assert z_delta**-2 + 10.0**-2 == pytest.approx(1.0)
    with pytest.raises(ConfigurationError, match="clipped_count_stddev"):
        update_noise_multiplier(1.0, 0.4)


def test_budget_stops_the_run_cleanly() -> None:
    data = _data(4)
    d = ParamSpec.from_module(_model()).dim
    ledger = PrivacyLedger(delta=1e-5, budgets={UnitKind.CLIENT: Budget(2.0, 1e-5)})
    dp = CentralDP(noise_multiplier=1.0, clipping=FixedClipping(1.0), ledger=ledger,
                   rng=np.random.default_rng(0))
    fa = FedAvg(model=_model(), data=data,
                client_update=_FixedDeltas({c: np.zeros(d, np.float32) for c in range(4)}),
                config=FedAvgConfig(rounds=50, sampler=PoissonSampling(0.5)), stages=dp)
    h = fa.run()
    assert h.stopped_early is not None and "budget" in h.stopped_early
    assert len(h.rounds) < 50
    assert ledger.epsilon(dp.unit) <= 2.0


def test_clip_l2() -> None:
    x = np.array([3.0, 4.0], np.float32)
    y, n = clip_l2(x, 1.0)
    assert n == pytest.approx(5.0) and np.linalg.norm(y) <= 1.0
    assert x[0] == 3.0
    with pytest.raises(ConfigurationError, match="clip_norm"):
        clip_l2(x, 0.0)
    with pytest.raises(ConfigurationError, match="noise_multiplier"):
        CentralDP(noise_multiplier=-1.0, clipping=FixedClipping(1.0),
                  ledger=PrivacyLedger(delta=1e-5))
    with pytest.raises(ConfigurationError, match="clip_norm"):
        FixedClipping(-2.0)


