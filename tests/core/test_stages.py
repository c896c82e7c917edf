"""The stage contract: every registered aggregation stage, through its two halves and bytes."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from privfl.accounting import Accountant, PrivacyLedger
from privfl.core.bounds import CoordinateClip
from privfl.core.history import RoundRecord
from privfl.core.release import PrivacyComponent
from privfl.core.sampling import PoissonSampling
from privfl.core.securesum import PlainSecureSum
from privfl.core.spec import Contribution, ValueSpec
from privfl.core.stages import CLIENT_STAGES, ClientChain, FederationInfo, StageChain, expand
from privfl.core.transport import InMemoryTransport
from privfl.dp import AdaptiveClipping, CentralDP, FixedClipping
from privfl.dp.distributed import DistributedDP
from privfl.errors import ConfigurationError, PrivflError
from privfl.secagg import PairwiseSecureSum

from ..fuzzing import MUTATION, mutate
from .test_roles import _graph

N, D = 12, 40


class StageContract:
    #: whether the chain adds noise (its output is compared with a tolerance)
    noisy = False
    secure_sum: Any = PlainSecureSum

    def make(self) -> Any:
        raise NotImplementedError

    def reference(self, deltas: list[np.ndarray]) -> np.ndarray | None:
        """The expected averaged value without noise, or None."""
        return None

    # helpers --------------------------------------------------------------------------------
    def _configured(self) -> tuple[StageChain, ValueSpec, Any]:
        chain = StageChain([self.make()])
        info = FederationInfo(num_clients=N, weights=np.ones(N), sampler=PoissonSampling(1.0),
                              rounds=5)
        ss = self.secure_sum()
        inner = chain.configure(ValueSpec(length=D, max_clients=N), info, ss)
        return chain, inner, ss

    @staticmethod
    def _deltas(seed: int, scale: float = 1.0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [rng.normal(0, scale, D) for _ in range(N)]

    # the contract ---------------------------------------------------------------------------
    def test_every_client_half_is_registered_and_rebuilt_from_bytes(self) -> None:
        chain, _, _ = self._configured()
        client = ClientChain.from_config(chain.client_config())
        assert all(s.kind in CLIENT_STAGES for s in chain.stages if s.client_config())
        assert not set(_graph(chain)) & set(_graph(client))  # nothing shared with the server

    @pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
    def test_client_output_fits_the_inner_spec(self, scale: float) -> None:
        chain, inner, _ = self._configured()
        client = ClientChain.from_config(chain.client_config())
        for c, delta in enumerate(self._deltas(1, scale)):
            x = client.apply(delta, chain.round_config(1), client_id=c, round_id=1)
            assert x.shape == (inner.length,)
            inner.check_value(x, 1.0)  # raises BoundViolationError otherwise

    def test_round_trip_through_the_secure_sum_and_back(self) -> None:
        chain, inner, ss = self._configured()
        client = ClientChain.from_config(chain.client_config())
        deltas = self._deltas(2, 0.01)
        proc = ss.create(inner)
        server = proc.new_round(1, list(range(N)))
        values = {c: client.apply(d, chain.round_config(1), client_id=c, round_id=1)
                  for c, d in enumerate(deltas)}
        out = InMemoryTransport().run_round(server, {c: proc.client_session(c) for c in values},
                                            {c: Contribution(v) for c, v in values.items()})
        record = RoundRecord(round_id=1, selected=list(range(N)))
        agg = chain.finish(1, out.result, record)
        mean = agg.mean()
        assert mean is not None and mean.shape == (D,)
        ref = self.reference(deltas)
        if ref is not None:
            np.testing.assert_allclose(mean, ref, atol=1e-3 if self.noisy else 1e-5)

    def test_dp_stages_declare_a_policy_and_charge_their_ledger(self) -> None:
        chain, inner, _ = self._configured()
        ledgers = [s.ledger for s in chain.stages if hasattr(s, "ledger")]
        for s in chain.stages:
            if hasattr(s, "ledger"):
                assert isinstance(s, PrivacyComponent)
                assert s.release_policy().withheld
        from privfl.core.spec import SumResult

        chain.finish(1, SumResult(weighted_sum=np.zeros(inner.length), total_weight=float(N),
                                  contributors=tuple(range(N))),
                     RoundRecord(round_id=1, selected=[]))
        for ledger in ledgers:
            assert ledger.units and ledger.entries(ledger.units[0])

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.differing_executors])
    @given(**MUTATION)
    def test_fuzzed_configs_raise_only_privfl_errors(self, pos: int, byte: int, op: str,
                                                     blob: bytes) -> None:
        chain, _, _ = self._configured()
        good, rnd = chain.client_config(), chain.round_config(1)
        with contextlib.suppress(PrivflError):
            ClientChain.from_config(bytes(mutate(good, pos, byte, op, blob)))
        client = ClientChain.from_config(good)
        with contextlib.suppress(PrivflError):
            client.apply(np.zeros(D), bytes(mutate(rnd, pos, byte, op, blob)), client_id=0,
                         round_id=1)


class TestCoordinateClip(StageContract):
    def make(self) -> Any:
        return CoordinateClip(0.5)

    def reference(self, deltas: list[np.ndarray]) -> np.ndarray:
        return np.mean([np.clip(d, -0.5, 0.5) for d in deltas], axis=0)


class TestFixedClippingWithCentralNoise(StageContract):
    noisy = True

    def make(self) -> Any:
        return CentralDP(noise_multiplier=1e-6, clipping=FixedClipping(0.05),
                         ledger=PrivacyLedger(delta=1e-5), rng=np.random.default_rng(0))

    def reference(self, deltas: list[np.ndarray]) -> np.ndarray:
        from privfl.dp import clip_l2

        return np.mean([clip_l2(d, 0.05)[0] for d in deltas], axis=0)


class TestAdaptiveClippingWithCentralNoise(StageContract):
    noisy = True

    def make(self) -> Any:
        return CentralDP(noise_multiplier=0.5, clipping=AdaptiveClipping(initial_clip_norm=1.0),
                         ledger=PrivacyLedger(delta=1e-5), rng=np.random.default_rng(0))


class TestDistributedNoise(StageContract):
    noisy = True
    secure_sum = PairwiseSecureSum

    def make(self) -> Any:
        return DistributedDP(noise_multiplier=1e-3, clip_norm=0.05,
                             ledger=PrivacyLedger(delta=1e-5, accountant=Accountant.RDP),
                             rng=np.random.default_rng(0))

    def reference(self, deltas: list[np.ndarray]) -> np.ndarray:
        from privfl.dp import clip_l2

        return np.mean([clip_l2(d, 0.05)[0] for d in deltas], axis=0)


def test_a_count_without_noise_is_refused() -> None:
    """Adaptive clipping's count would be released exactly without a noise stage inside."""
    chain = StageChain([AdaptiveClipping()])
    info = FederationInfo(num_clients=4, weights=np.ones(4), sampler=PoissonSampling(1.0),
                          rounds=1)
    with pytest.raises(ConfigurationError, match="need noise"):
        chain.configure(ValueSpec(length=3, max_clients=4), info, PlainSecureSum())


def test_stage_groups_expand_in_order() -> None:
    group = CentralDP(noise_multiplier=1.0, clipping=FixedClipping(1.0),
                      ledger=PrivacyLedger(delta=1e-5))
    assert [s.kind for s in expand([CoordinateClip(1.0), group])] == \
        ["coordinate_clip", "l2_clip", "central_noise"]
