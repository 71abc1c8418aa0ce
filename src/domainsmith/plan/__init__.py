"""The planner: which strategy fits the data and budget, and what training costs in FLOPs, GPU-hours and memory.

from domainsmith.plan import PlanRequest, plan_command, render_plan
plan = plan_command(PlanRequest(params="7B", tokens="300B", gpu="A100-80G", gpus=64))
"""

from __future__ import annotations

from .command import PlanRequest, plan_command
from .errors import PlanError
from .render import render_plan

__all__ = ["PlanError", "PlanRequest", "plan_command", "render_plan"]
