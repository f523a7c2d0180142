"""The run on one node: the gang's loop, which makes every decision for one attempt, and its
hands (``Host``): spawning ranks, the selector that waits on exits, output, signals and
deadlines, reaping, Ctrl-Z, and the guardian that ends the run if the launcher dies.

It imports from ``base``, ``plan``, ``output`` and ``inspect``.
"""
