"""What request handlers need, gathered in one object and handed out by dependency injection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.decisions import Clock, utcnow
from gateway.policy.compiled import CompiledPolicy
from gateway.recipients import HistorySource, NoStoredState, UserDirectory
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.services import Services


@dataclass
class Gateway:
    settings: Settings
    policy: CompiledPolicy
    users: UserDirectory = field(default_factory=NoStoredState)
    history: HistorySource = field(default_factory=NoStoredState)
    clock: Clock = utcnow
    services: Services | None = None  # the full gateway; None serves decisions only (tests of the engine)

    def current_policy(self) -> CompiledPolicy:
        """The policy in force, read per request: a full gateway's may be reloaded at any time."""
        return self.services.current_policy() if self.services is not None else self.policy
