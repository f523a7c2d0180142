"""Looking into a run: the registry of live runs, each rank's Python stack (py-spy) and why
ptrace refused it, ``/proc`` reads, the ``rankrun stacks`` and ``rankrun status`` commands, and
``--dry-run``'s listing of a plan. The run on a node feeds the registry and asks for stacks,
and asks why a rank died of SIGKILL (its memory cgroup's OOM kills, the kernel log).

It imports from ``base``, ``plan`` and ``output``.
"""
