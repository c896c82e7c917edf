"""privfl inside real Flower simulations (Ray backend, 10 virtual nodes): for every secure sum
and DP mode the aggregate equals privfl's own simulator on the same seed, bit for bit (CKKS
decryptions are exact too), also when a node vanishes in the middle of the protocol."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

flwr = pytest.importorskip("flwr")

from flwr.app import ArrayRecord, Context, Message  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from privfl.accounting import Accountant, PrivacyLedger  # noqa: E402
from privfl.core import wire  # noqa: E402
from privfl.core.bounds import CoordinateClip  # noqa: E402
from privfl.core.client import LocalSGD  # noqa: E402
from privfl.core.fedavg import FedAvg, FedAvgConfig  # noqa: E402
from privfl.core.sampling import FixedSizeSampling, PoissonSampling  # noqa: E402
from privfl.core.securesum import PlainSecureSum  # noqa: E402
from privfl.core.transport import InMemoryTransport, ScheduledDropout  # noqa: E402
from privfl.core.weighting import Weighting  # noqa: E402
from privfl.data import federated_digits  # noqa: E402
from privfl.dp import CentralDP, FixedClipping  # noqa: E402
from privfl.dp.distributed import DistributedDP  # noqa: E402
from privfl.he import CKKSSecureSum  # noqa: E402
from privfl.integrations.flower import ClientSetup, PrivflStrategy, privfl_client_app  # noqa: E402
from privfl.models import ModelName, build_model  # noqa: E402
from privfl.recipes import DPPlan  # noqa: E402
from privfl.secagg import MultiServerSecureSum, PairwiseSecureSum  # noqa: E402

N, ROUNDS, SEED = 10, 2, 5
DROP_CLIENT, DROP_KIND = 3, 34  # in "secagg+drop", client 3 vanishes at its masked input


def _model() -> torch.nn.Module:
    return build_model(ModelName.LOGREG, (64,), 10, seed=SEED)


DATA = federated_digits(N, seed=SEED)
CLIP = lambda: CoordinateClip(1.0)  # noqa: E731


def _keys() -> Any:
    """CKKS keys provisioned to the nodes: derived for the spec both runs use."""
    fa = FedAvg(model=_model(), data=DATA, client_update=LocalSGD(learning_rate=0.3),
                config=FedAvgConfig(rounds=1, sampler=FixedSizeSampling(N)),
                secure_sum=CKKSSecureSum(workers=1), stages=CLIP())
    return fa.secure_sum.keys


KEYS = _keys()
# What a node is provisioned with out of band (keys refuse to be pickled into Ray actors):
PROVISIONED = (KEYS.params, KEYS.export_secret(i_understand_this_reveals_the_key=True))

# name -> (secure sum factory for the server, one for the simulator, stages, sampler, dropout)
SETUPS: dict[str, tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any], Any,
                        dict[int, set[int]]]] = {
    "plain": (PlainSecureSum, PlainSecureSum, lambda: None, FixedSizeSampling(N), {}),
    "ckks": (lambda: CKKSSecureSum(server_context=KEYS.server_context(), rounding_seed=SEED),
             lambda: CKKSSecureSum(keys=KEYS, rounding_seed=SEED, workers=1), CLIP,
             FixedSizeSampling(N), {}),
    "secagg": (lambda: PairwiseSecureSum(rounding_seed=SEED),
               lambda: PairwiseSecureSum(rounding_seed=SEED), CLIP, FixedSizeSampling(N), {}),
    "secagg+drop": (lambda: PairwiseSecureSum(sparse=True, rounding_seed=SEED),
                    lambda: PairwiseSecureSum(sparse=True, rounding_seed=SEED), CLIP,
                    FixedSizeSampling(N), {2: {DROP_CLIENT}}),
    "multiserver": (lambda: MultiServerSecureSum(2, rounding_seed=SEED),
                    lambda: MultiServerSecureSum(2, rounding_seed=SEED), CLIP,
                    FixedSizeSampling(N), {}),
    "central-dp": (PlainSecureSum, PlainSecureSum,
                   lambda: CentralDP(noise_multiplier=0.5, clipping=FixedClipping(1.0),
                                     ledger=PrivacyLedger(delta=1e-5),
                                     rng=np.random.default_rng(SEED)),
                   PoissonSampling(0.8), {}),
    "distributed-dp": (lambda: PairwiseSecureSum(sparse=True, rounding_seed=SEED),
                       lambda: PairwiseSecureSum(sparse=True, rounding_seed=SEED),
                       lambda: DistributedDP(noise_multiplier=0.5, clip_norm=1.0,
                                             ledger=PrivacyLedger(
                                                 delta=1e-5, accountant=Accountant.RDP),
                                             rng=np.random.default_rng(SEED)),
                       FixedSizeSampling(N), {}),
}


@pytest.fixture(scope="module")
def flower_runs() -> dict[str, PrivflStrategy]:
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

    def make(context: Context) -> ClientSetup:
        from privfl.he.keys import ClientKeys

        cid = int(context.node_config["partition-id"])
        return ClientSetup(client_id=cid, data=DATA.clients[cid], model=_model(),
                           client_update=LocalSGD(learning_rate=0.3),
                           secrets=ClientKeys.from_export(*PROVISIONED), seed=SEED)

    strategies: dict[str, PrivflStrategy] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        for name, (server_sum, _, stages, sampler, _dropout) in SETUPS.items():
            group = stages()
            privacy = None
            if group is not None and hasattr(group, "ledger"):
                privacy = DPPlan(client_update=None, stages=group, ledger=group.ledger)
                group = None
            strategy = PrivflStrategy(model=_model(), secure_sum=server_sum(), privacy=privacy,
                                      stages=group, sampler=sampler, min_nodes=N, seed=SEED)
            strategy.start(grid=grid, initial_arrays=ArrayRecord(_model().state_dict()),
                           num_rounds=ROUNDS)
            strategies[name] = strategy

    app = privfl_client_app(make, mods=[_drop_mod])
    run_simulation(server_app=server_app, client_app=app, num_supernodes=N,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    return strategies


def _drop_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Client 3 vanishes when asked for its masked input during the 4th strategy of the run
    ("secagg+drop"); the mod counts the strategies by their hello messages."""
    from flwr.app import ConfigRecord

    from privfl.integrations.flower import HELLO_TYPE

    seen = context.state.get("drop-test")
    hellos = int(seen["hellos"]) if isinstance(seen, ConfigRecord) else 0
    if msg.metadata.message_type == HELLO_TYPE:
        context.state["drop-test"] = ConfigRecord({"hellos": hellos + 1})
    record = msg.content.get("privfl") if msg.has_content() else None
    if hellos == 4 and record is not None and "message" in record \
            and record.get("client") == DROP_CLIENT \
            and wire.peek_kind(bytes(record["message"])) == DROP_KIND:
        raise RuntimeError("simulated dropout")
    return call_next(msg, context)


def _simulate(name: str) -> tuple[FedAvg, Any]:
    _, sim_sum, stages, sampler, dropout = SETUPS[name]
    fa = FedAvg(model=_model(), data=DATA, client_update=LocalSGD(learning_rate=0.3),
                config=FedAvgConfig(rounds=ROUNDS, sampler=sampler, seed=SEED,
                                    weighting=Weighting.UNIFORM),
                secure_sum=sim_sum(), stages=stages(),
                transport=InMemoryTransport(ScheduledDropout(dropout)))
    return fa, fa.run()


@pytest.mark.parametrize("name", list(SETUPS))
def test_flower_aggregate_equals_privfls_simulator(flower_runs: Any, name: str) -> None:
    strategy = flower_runs[name]
    fa, history = _simulate(name)
    np.testing.assert_array_equal(strategy.params, fa.params)
    assert strategy.history is not None and len(strategy.history.rounds) == ROUNDS
    for ours, theirs in zip(history.rounds, strategy.history.rounds, strict=True):
        assert ours.contributors == theirs.contributors
        assert ours.aborted == theirs.aborted


def test_a_node_vanishing_mid_protocol_is_excluded(flower_runs: Any) -> None:
    history = flower_runs["secagg+drop"].history
    for r in history.rounds:
        assert DROP_CLIENT not in r.contributors and "node error" in r.dropped[DROP_CLIENT]


def test_flower_result_carries_the_report_and_epsilon(flower_runs: Any) -> None:
    report = flower_runs["central-dp"].report
    assert report.units and report.units[0].epsilon is not None
    assert report.trust_assumptions[0]["mechanism"] == "plain"
    assert any(sc.unit_kind == "client" for sc in report.scopes)
