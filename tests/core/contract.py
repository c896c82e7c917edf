"""Contract tests that every SecureSum implementation must pass.

A test module for a mechanism subclasses :class:`SecureSumContract` and provides
``make_secure_sum`` and ``make_spec``; every test here then runs against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privfl.core.securesum import SecureSum, TrustAssumption, client_process
from privfl.core.spec import Contribution, ValueSpec
from privfl.core.transport import InMemoryTransport, ScheduledDropout
from privfl.errors import MalformedMessageError, ProtocolAbortError, ProtocolViolationError


class SecureSumContract:
    #: absolute tolerance of the sum for values in [-1, 1] and weights in (0, 1]
    atol: float = 1e-6
    #: the largest stage at which a client can drop and the sum still be exact
    stages: int = 1

    def make_secure_sum(self) -> SecureSum:
        raise NotImplementedError

    def make_spec(self, length: int, max_clients: int) -> ValueSpec:
        return ValueSpec(length=length, max_clients=max_clients, l2_bound=float(length) ** 0.5)

    @staticmethod
    def client(secure_sum: SecureSum, process):  # type: ignore[no-untyped-def]
        """The client side, rebuilt from the process's config bytes and provisioned secrets."""
        secrets = getattr(secure_sum, "client_secrets", lambda: None)()
        return client_process(process.client_config(), secrets)

    # helpers -------------------------------------------------------------------------------
    def _run(self, values: dict[int, np.ndarray], weights: dict[int, float],
             dropout: ScheduledDropout | None = None, round_id: int = 1,
             clients: Sequence[int] | None = None):  # type: ignore[no-untyped-def]
        d = len(next(iter(values.values())))
        chosen = sorted(values) if clients is None else list(clients)
        ss = self.make_secure_sum()
        process = ss.create(self.make_spec(d, max(len(chosen), 1)))
        server = process.new_round(round_id, chosen)
        side = self.client(ss, process)
        sessions = {c: side.session(c) for c in chosen}
        contribs = {c: Contribution(values[c], weights[c]) for c in chosen if c in values}
        return InMemoryTransport(dropout).run_round(server, sessions, contribs)

    @staticmethod
    def _data(n: int, d: int, seed: int) -> tuple[dict[int, np.ndarray], dict[int, float]]:
        rng = np.random.default_rng(seed)
        vals = {c: rng.uniform(-1, 1, d).astype(np.float32) / np.sqrt(1) for c in range(n)}
        ws = {c: float(rng.uniform(0.05, 1.0)) for c in range(n)}
        return vals, ws

    @staticmethod
    def _reference(vals: dict[int, np.ndarray], ws: dict[int, float],
                   keep: Sequence[int]) -> tuple[np.ndarray, float]:
        s = sum(ws[c] * vals[c].astype(np.float64) for c in keep)
        return np.asarray(s), float(sum(ws[c] for c in keep))

    # tests ---------------------------------------------------------------------------------
    def test_weighted_sum_matches_numpy(self) -> None:
        vals, ws = self._data(10, 257, seed=1)
        out = self._run(vals, ws)
        ref, wref = self._reference(vals, ws, range(10))
        np.testing.assert_allclose(out.result.weighted_sum, ref, atol=self.atol, rtol=0)
        assert out.result.total_weight == pytest.approx(wref, abs=self.atol)
        assert out.result.contributors == tuple(range(10))
        np.testing.assert_allclose(out.result.mean(), ref / wref, atol=10 * self.atol)

    def test_dropouts_at_every_stage_give_the_survivors_sum(self) -> None:
        vals, ws = self._data(8, 64, seed=2)
        for stage in range(self.stages):
            out = self._run(vals, ws, ScheduledDropout({stage: {1, 6}}))
            keep = [c for c in range(8) if c not in (1, 6)]
            ref, wref = self._reference(vals, ws, keep)
            np.testing.assert_allclose(out.result.weighted_sum, ref, atol=self.atol, rtol=0)
            assert out.result.total_weight == pytest.approx(wref, abs=self.atol)
            assert set(out.dropped) == {1, 6}

    def test_everyone_dropping_aborts(self) -> None:
        vals, ws = self._data(4, 16, seed=3)
        with pytest.raises(ProtocolAbortError, match="survived"):
            self._run(vals, ws, ScheduledDropout({0: {0, 1, 2, 3}}))

    def test_non_finite_value_is_refused_by_the_client(self) -> None:
        vals, ws = self._data(5, 16, seed=4)
        vals[2] = vals[2].copy()
        vals[2][3] = np.nan
        out = self._run(vals, ws)
        assert "refused" in out.dropped[2]
        ref, _ = self._reference(vals, ws, [0, 1, 3, 4])
        np.testing.assert_allclose(out.result.weighted_sum, ref, atol=self.atol, rtol=0)

    def test_malformed_reply_never_touches_the_sum(self) -> None:
        vals, ws = self._data(4, 32, seed=5)
        ss = self.make_secure_sum()
        process = ss.create(self.make_spec(32, 4))
        server = process.new_round(9, [0, 1, 2, 3])
        sessions = {c: self.client(ss, process).session(c) for c in range(4)}
        requests = server.step(())
        assert isinstance(requests, dict)
        while True:
            replies = {c: sessions[c].step(requests[c], Contribution(vals[c], ws[c]))
                       for c in requests}
            for bad in (b"", b"garbage" * 5, replies[0][:-3], replies[0] + b"\x00"):
                with pytest.raises(MalformedMessageError):
                    server.receive(0, bad)
            with pytest.raises(ProtocolViolationError):
                server.receive(17, replies[0])
            for c, msg in replies.items():
                server.receive(c, msg)
            with pytest.raises(ProtocolViolationError):
                server.receive(1, replies[1])  # duplicate
            nxt = server.step(())
            if not isinstance(nxt, dict):
                break
            requests = nxt
        ref, _ = self._reference(vals, ws, range(4))
        np.testing.assert_allclose(nxt.weighted_sum, ref, atol=self.atol, rtol=0)

    def test_message_for_another_round_is_rejected(self) -> None:
        vals, ws = self._data(3, 8, seed=6)
        ss = self.make_secure_sum()
        process = ss.create(self.make_spec(8, 3))
        old = process.new_round(1, [0, 1, 2])
        new = process.new_round(2, [0, 1, 2])
        req_old = old.step(())
        new.step(())
        assert isinstance(req_old, dict)
        reply = self.client(ss, process).session(0).step(req_old[0], Contribution(vals[0], ws[0]))
        with pytest.raises((ProtocolViolationError, MalformedMessageError)):
            new.receive(0, reply)

    def test_trust_assumption_is_declared(self) -> None:
        ta = self.make_secure_sum().trust_assumption()
        assert isinstance(ta, TrustAssumption)
        assert ta.statement and ta.broken_by and ta.dropouts_tolerated

    # Each mechanism subclass is its own executor of the same deterministic test.
    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.differing_executors])
    @given(n=st.integers(1, 8), d=st.integers(1, 40), seed=st.integers(0, 2**31),
           drop=st.sets(st.integers(0, 7), max_size=7))
    def test_property_exact_for_random_inputs(self, n: int, d: int, seed: int,
                                              drop: set[int]) -> None:
        vals, ws = self._data(n, d, seed)
        drop = {c for c in drop if c < n}
        if len(drop) == n:
            drop.discard(0)
        out = self._run(vals, ws, ScheduledDropout({0: drop}))
        keep = [c for c in range(n) if c not in drop]
        ref, wref = self._reference(vals, ws, keep)
        np.testing.assert_allclose(out.result.weighted_sum, ref, atol=self.atol, rtol=0)
        assert out.result.total_weight == pytest.approx(wref, abs=self.atol)
