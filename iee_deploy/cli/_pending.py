"""The one message for a command whose machinery has not landed yet (no fake output)."""

from __future__ import annotations

from iee_deploy.errors import NotAvailableError


def pending(command: str, part: str) -> NotAvailableError:
    return NotAvailableError(f"`iee-deploy {command}` cannot run yet: {part} is not part of this build",
                             "see the README's status table for what is available")
