"""rankrun: a launcher for multi-process distributed training whose ranks live and die together.

``launch()`` is the whole public API; the ``rankrun`` command is a thin layer over it. The
names below are imported when first used, so that the command can handle signals before
it imports anything else.
"""

from __future__ import annotations

__version__ = "0.1.0"
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

_HOMES = {
    "Attempt": "outcome",
    "Ending": "outcome",
    "Outcome": "outcome",
    "RankResult": "outcome",
    "Options": "options",
    "Plan": "plan",
    "RankSpec": "plan",
    "UsageError": "errors",
    "launch": "launcher",
}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.errors import UsageError as UsageError
    from rankrun.launcher import launch as launch
    from rankrun.options import Options as Options
    from rankrun.outcome import Attempt as Attempt
    from rankrun.outcome import Ending as Ending
    from rankrun.outcome import Outcome as Outcome
    from rankrun.outcome import RankResult as RankResult
    from rankrun.plan import Plan as Plan
    from rankrun.plan import RankSpec as RankSpec


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rankrun' has no attribute {name!r}")
    module = __import__(f"rankrun.{home}", fromlist=[name])
    return getattr(module, name)
