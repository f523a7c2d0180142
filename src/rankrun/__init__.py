"""rankrun: a launcher for multi-process distributed training whose ranks live and die together.

``launch()`` is the whole public API; the ``rankrun`` command is a thin layer over it.
"""

from __future__ import annotations

from rankrun.errors import UsageError
from rankrun.launcher import launch
from rankrun.options import Options
from rankrun.outcome import Attempt, Ending, Outcome, RankResult
from rankrun.plan import Plan, RankSpec

__all__ = [
    "Attempt",
    "Ending",
    "Options",
    "Outcome",
    "Plan",
    "RankResult",
    "RankSpec",
    "UsageError",
    "launch",
]
__version__ = "0.1.0"
