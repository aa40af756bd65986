"""After each refresh, the webhook makes its own registration cover every resource its index holds (add-only)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from engine.core.errors import GitOpsError
from engine.core.webhookconfig import ManagedResource
from engine.registration import Coverage, Outcome, RegistrationStore, cover

log = logging.getLogger(__name__)
# Worth a line in the log when it starts; repeating it after every refresh would only be noise.
SAID_ONCE = {
    Coverage.NOT_INSTALLED: logging.INFO,
    Coverage.FORBIDDEN: logging.WARNING,
    Coverage.INCOMPLETE: logging.WARNING,
}


class RegistrationKeeper:
    """Calls engine.registration.cover with what the index holds. A missing registration (not installed yet), a
    403 or an error of the API server is logged once, not raised: the webhook keeps answering either way."""

    def __init__(self, store: RegistrationStore | None, resources: Callable[[], set[ManagedResource]]) -> None:
        self.store = store
        self.resources = resources
        self._said = ""

    def ensure(self) -> Outcome | None:
        if self.store is None:
            return None
        try:
            outcome = cover(self.store, self.resources())
        except GitOpsError as e:
            self._say(f"cannot keep the webhook registration current: {e}", logging.WARNING)
            return None
        if outcome.coverage is Coverage.EXTENDED:
            log.info("%s", outcome)
        if outcome.coverage in SAID_ONCE:
            self._say(str(outcome), SAID_ONCE[outcome.coverage])
        else:
            self._said = ""
        return outcome

    def _say(self, message: str, level: int) -> None:
        if message != self._said:
            log.log(level, "%s", message)
            self._said = message
