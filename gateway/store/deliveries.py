"""One handle on the deliveries table for a process: claims, outcomes, status, dead letters.

Each concept lives in its own module (`claims`, `outcomes`, `delivery_status`,
`dead_letters`); this facade exists so the API and the worker share one object built once
by `gateway.services` (`Services.deliveries`), whatever of it they use.
"""

from __future__ import annotations

from gateway.store.claims import Claims
from gateway.store.dead_letters import DeadLetterStore
from gateway.store.delivery_status import DeliveryStatusReader
from gateway.store.outcomes import Outcomes


class DeliveryStore(Claims, Outcomes, DeliveryStatusReader, DeadLetterStore):
    """Every delivery operation, over one database."""
