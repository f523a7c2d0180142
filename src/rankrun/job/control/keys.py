"""The key map: every key of the job's store, named once. Only ``control/`` builds keys."""

from __future__ import annotations

JOB = "rankrun/job"  # JobInfo, written once by node 0 when it starts hosting


class Keys:
    """The keys of one run, under ``rankrun/<run id>/``."""

    def __init__(self, run_id: str) -> None:
        self._p = f"rankrun/{run_id}"

    # Joining. Every agent writes its claim and bumps ``joined``; node 0 alone reads the
    # claims, and every agent waits on ``verdict``.
    def claim(self, node: int) -> str:
        return f"{self._p}/join/claim/{node}"

    def command(self, node: int) -> str:
        """The node's command line, read only when the commands differ."""
        return f"{self._p}/join/command/{node}"

    def joined(self) -> str:
        """Counter: node ranks claimed."""
        return f"{self._p}/join/joined"

    def ticket(self) -> str:
        """Counter: node ranks handed out to agents that were given none."""
        return f"{self._p}/join/ticket"

    def complete(self) -> str:
        """Set when every node has claimed: later arrivals are strangers."""
        return f"{self._p}/join/complete"

    def news(self) -> str:
        """Wakes node 0 while it waits for the others: every node joined, or one aborted."""
        return f"{self._p}/join/news"

    def verdict(self) -> str:
        """Go, or the one message every agent raises (the first writer's)."""
        return f"{self._p}/join/verdict"

    def acked(self) -> str:
        """Counter: agents that read an abort. The last one sets ``acked_all``."""
        return f"{self._p}/join/acked"

    def acked_all(self) -> str:
        return f"{self._p}/join/acked_all"

    # While the attempts run.
    def heartbeat(self, node: int) -> str:
        """Counter, bumped by its node; only node 0 reads them."""
        return f"{self._p}/hb/{node}"

    def failures(self, attempt: int) -> str:
        """Counter: the store's order of failures."""
        return f"{self._p}/attempt/{attempt}/failures"

    def failure(self, attempt: int, order: int) -> str:
        """The FailureFact of the order-th failure; order 1 is the root cause."""
        return f"{self._p}/attempt/{attempt}/failure/{order}"

    def end(self, attempt: int) -> str:
        """The AttemptEnd that holds (the first writer's); every agent waits on it."""
        return f"{self._p}/attempt/{attempt}/end"

    def over(self, attempt: int) -> str:
        """Set once no node will publish a result: the nodes lost, if any."""
        return f"{self._p}/attempt/{attempt}/over"

    def result(self, attempt: int, node: int) -> str:
        return f"{self._p}/attempt/{attempt}/result/{node}"

    def results(self, attempt: int) -> str:
        """Counter: results published."""
        return f"{self._p}/attempt/{attempt}/results"

    def interrupts(self, attempt: int) -> str:
        """Counter: nodes whose part a signal to them ended."""
        return f"{self._p}/attempt/{attempt}/interrupts"

    def seen(self, attempt: int) -> str:
        """Counter: nodes that have read the attempt's end (node 0 serves until they have)."""
        return f"{self._p}/attempt/{attempt}/seen"

    def seen_by(self, attempt: int, count: int) -> str:
        """Set by the count-th node to read the attempt's end."""
        return f"{self._p}/attempt/{attempt}/seen_by/{count}"

    def arrived(self, barrier: str, node: int) -> str:
        return f"{self._p}/barrier/{barrier}/{node}"

    def arrivals(self, barrier: str) -> str:
        """Counter: nodes at the barrier. The last one sets ``all_arrived``."""
        return f"{self._p}/barrier/{barrier}/count"

    def all_arrived(self, barrier: str) -> str:
        return f"{self._p}/barrier/{barrier}/all"

    def opened(self, barrier: str) -> str:
        """Node 0's word that the barrier is open, with what the others need next."""
        return f"{self._p}/barrier/{barrier}/open"

    # Questions to every node, from node 0 or a command on it, and their answers.
    def asks(self) -> str:
        """Counter: questions asked; question n is at ``ask(n)``."""
        return f"{self._p}/ask/count"

    def ask(self, number: int) -> str:
        return f"{self._p}/ask/{number}"

    def answer(self, number: int, node: int) -> str:
        return f"{self._p}/ask/{number}/answer/{node}"
