"""Planning: ``Options`` (every setting and its default) validated into a ``Plan`` (each
rank's argv, environment, output routes, CPUs and GPU), with the checks, the meeting point,
the log layout and the machine's topology it needs. Nothing here spawns a process.

It imports from ``base``.
"""
