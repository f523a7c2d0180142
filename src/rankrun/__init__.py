"""rankrun: a launcher for multi-process distributed training whose ranks live and die together.

``launch()`` is the whole public API; the ``rankrun`` command is a thin layer over it. The
names below are imported when first used, so that the command can handle signals before
it imports anything else.
"""

from __future__ import annotations

__all__ = [
    "__version__",
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
    "Attempt": "output.outcome",
    "Ending": "output.outcome",
    "Outcome": "output.outcome",
    "RankResult": "output.outcome",
    "Options": "plan.options",
    "Plan": "plan.plan",
    "RankSpec": "plan.plan",
    "UsageError": "base.errors",
    "launch": "job.launcher",
    "__version__": "base.version",
}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.base.errors import UsageError as UsageError
    from rankrun.base.version import VERSION as __version__
    from rankrun.job.launcher import launch as launch
    from rankrun.output.outcome import Attempt as Attempt
    from rankrun.output.outcome import Ending as Ending
    from rankrun.output.outcome import Outcome as Outcome
    from rankrun.output.outcome import RankResult as RankResult
    from rankrun.plan.options import Options as Options
    from rankrun.plan.plan import Plan as Plan
    from rankrun.plan.plan import RankSpec as RankSpec


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rankrun' has no attribute {name!r}")
    module = __import__(f"rankrun.{home}", fromlist=[name])
    return getattr(module, "VERSION" if name == "__version__" else name)
