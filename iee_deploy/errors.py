"""User-facing errors: one line that names the problem and the fix.

Every mistake a user can make (missing or corrupt file, unknown name, infeasible budget,
mismatched LUT, wrong device) raises `UserError`. The CLI prints it as a single line and exits
non-zero; library callers can catch it like any exception.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, with the fix to apply.

    `str(err)` is the one line the CLI prints: "<problem>; <fix>".
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


class NotAvailableError(UserError):
    """A feature that needs something absent here (TensorRT, a GPU, CUDA in torch)."""
