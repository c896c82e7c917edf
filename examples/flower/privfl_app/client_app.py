"""The client: privfl's client role, DP-SGD with the node's own privacy ledger."""

from __future__ import annotations

from flwr.app import Context

from privfl.integrations.flower import ClientSetup, privfl_client_app
from privfl_app import task


def make(context: Context) -> ClientSetup:
    """This node's privfl client: its partition of the digits, the model, DP-SGD."""
    s = task.settings(context.run_config)
    cid = int(context.node_config["partition-id"])
    dp = task.plan(s)
    return ClientSetup(client_id=cid, data=task.data(s).clients[cid], model=task.model(s),
                       client_update=dp.client_update, seed=None if s["secure"] else s["seed"])


app = privfl_client_app(make)
