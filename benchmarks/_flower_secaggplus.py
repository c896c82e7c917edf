"""Flower's own SecAgg+ (flwr 1.42) timed in-process, for the ``secagg`` benchmark.

Runs Flower's real code: the server side is ``flwr.server.workflow.SecAggPlusWorkflow`` with a
``LegacyContext`` and a legacy ``FedAvg``; each client is a ``ClientApp`` with Flower's
``secaggplus_mod`` around a ``NumPyClient`` returning the client's vector. A minimal in-process
``Grid`` delivers a copy of each message (as a network would) by calling the client apps
directly (no network, no Ray), times the client work separately, and can drop chosen nodes at a
chosen stage. Server time is the workflow's wall time minus the clients' time and the copies.
Imported only when ``flwr`` is installed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from typing import Any
from uuid import uuid4

import numpy as np

_STAGE_KEY = "stage"


def _stage_of(message: Any) -> str:
    for record in message.content.config_records.values():
        if _STAGE_KEY in record:
            return str(record[_STAGE_KEY])
    return ""


def run_flower_secaggplus(values: list[np.ndarray], num_shares: int, drop_nodes: set[int],
                          drop_stage: str, threshold: int | None = None) -> dict[str, Any]:
    """One SecAgg+ round over ``values`` (node i holds values[i-1]); returns timings.

    ``num_shares`` counts the client's own share (Flower's convention: k neighbours + 1);
    ``threshold`` defaults to half of it.
    """
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.serverapp.grid import Grid
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 0

    n = len(values)
    node_ids = list(range(1, n + 1))

    class _Client(NumPyClient):  # type: ignore[misc]
        def __init__(self, vec: np.ndarray) -> None:
            self.vec = vec

        def fit(self, parameters: Any, config: Any) -> Any:
            return [self.vec], 1, {}

    app = ClientApp(client_fn=lambda ctx: _Client(values[ctx.node_id - 1]).to_client(),
                    mods=[secaggplus_mod])
    contexts = {nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(),
                             run_config={}) for nid in node_ids}
    client_seconds = dict.fromkeys(node_ids, 0.0)
    transport = [0.0]

    class _LocalGrid(Grid):  # type: ignore[misc]
        def __init__(self) -> None:
            self._run = Run.create_empty(1) if hasattr(Run, "create_empty") else None

        def set_run(self, run: Any) -> None:
            self._run = run

        @property
        def run(self) -> Any:
            return self._run

        def create_message(self, content: Any, message_type: str, dst_node_id: int,
                           group_id: str, ttl: float | None = None) -> Any:
            from flwr.app import Message

            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

        def get_node_ids(self) -> Iterable[int]:
            return node_ids

        def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
            raise NotImplementedError("send_and_receive is used")

        def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Any]:
            raise NotImplementedError("send_and_receive is used")

        def send_and_receive(self, messages: Iterable[Any], *,
                             timeout: float | None = None) -> Iterable[Any]:
            replies = []
            for msg in messages:
                nid = msg.metadata.dst_node_id
                if nid in drop_nodes and _stage_of(msg) == drop_stage:
                    continue
                t = time.perf_counter()  # a network would deliver each node its own copy
                msg = copy.deepcopy(msg)
                transport[0] += time.perf_counter() - t
                msg.metadata.__dict__["_run_id"] = 1
                msg.metadata.__dict__["_src_node_id"] = 0
                msg.metadata.__dict__["_message_id"] = str(uuid4())
                TaskIdentity.node_id = nid
                t = time.perf_counter()
                replies.append(app(msg, contexts[nid]))
                client_seconds[nid] += time.perf_counter() - t
                TaskIdentity.node_id = 0
            return replies

    grid = _LocalGrid()
    manager = SimpleClientManager()
    for nid in node_ids:
        manager.register(GridClientProxy(nid, grid, 1))
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                      min_available_clients=n)
    server_ctx = LegacyContext(Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                       run_config={}),
                               config=ServerConfig(num_rounds=1), strategy=strategy,
                               client_manager=manager)
    server_ctx.state.config_records["config"] = ConfigRecord({"current_round": 1})
    server_ctx.state.array_records["parameters"] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([np.zeros_like(values[0])]), keep_input=True)
    workflow = SecAggPlusWorkflow(num_shares=num_shares,
                                  reconstruction_threshold=threshold
                                  or max(2, (num_shares + 1) // 2))
    t = time.perf_counter()
    workflow(grid, server_ctx)
    total = time.perf_counter() - t
    clients = sorted(client_seconds.values())
    result = compat.arrayrecord_to_parameters(server_ctx.state.array_records["parameters"],
                                              keep_input=True)
    from flwr.common import parameters_to_ndarrays

    return {"server_s": total - sum(clients) - transport[0],
            "client_s_median": clients[len(clients) // 2],
            "num_shares": num_shares, "aggregate_shape": list(
                parameters_to_ndarrays(result)[0].shape)}
