"""privfl inside other federated-learning stacks (optional extras).

* :mod:`privfl.integrations.flower` — Flower 1.41's Message API: a ``Strategy`` that runs
  privfl's server role and a ``ClientApp`` that runs its client role (``pip install
  privfl[flower]``).
"""

from __future__ import annotations

__all__: list[str] = []
