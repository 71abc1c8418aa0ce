"""The planner's user-facing error: bad numbers, unknown GPUs, unreadable catalog files."""

from __future__ import annotations

from ..errors import DomainsmithError


class PlanError(DomainsmithError):
    """A `domainsmith plan` input is invalid (a count that does not parse, an unknown GPU, a bad GPU file)."""
