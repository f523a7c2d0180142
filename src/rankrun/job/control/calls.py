"""Store calls bounded in time, and the store's values as JSON."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

T = TypeVar("T")


class ControlError(Exception):
    """A multi-node failure to report as one line: the message names the problem and the fix."""


class Unresponsive(ControlError):
    """The store did not answer in time: node 0 stopped or lost, or the network is down."""


class Abandoned(ControlError):
    """A wait given up for a reason of the caller's (a node lost, a signal): its words."""


GIVEN_UP_EVERY = 0.05  # seconds between a bounded call's looks at whether to give up


class Call(Generic[T]):
    """``fn()`` in a daemon thread, to be waited for with a limit and abandoned after it.

    Store calls that hang on a stopped or unreachable server release the GIL and do not keep
    the process from exiting, so a thread left behind costs a thread, nothing more.
    """

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._done = threading.Event()
        self._value: list[T] = []
        self._error: list[BaseException] = []
        threading.Thread(target=self._run, name="rankrun-store-call", daemon=True).start()

    def _run(self) -> None:
        try:
            self._value.append(self._fn())
        except BaseException as e:
            self._error.append(e)
        finally:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def result(self) -> T:
        assert self._done.is_set()
        if self._error:
            raise self._error[0]
        return self._value[0]


def bounded(
    fn: Callable[[], T],
    timeout: float,
    what: str,
    given_up: Callable[[], str | None] | None = None,
) -> T:
    """``fn()``, or ``Unresponsive`` if it has not returned within ``timeout`` seconds.

    ``given_up()``, asked every ``GIVEN_UP_EVERY`` seconds, says why waiting is pointless (a
    node lost, a signal): its words end the wait at once, as ``Abandoned``."""
    call = Call(fn)
    deadline = time.monotonic() + timeout
    step = timeout if given_up is None else GIVEN_UP_EVERY
    while not call.wait(max(0.0, min(step, deadline - time.monotonic()))):
        why = None if given_up is None else given_up()
        if why is not None:
            raise Abandoned(why)
        if time.monotonic() >= deadline:
            raise Unresponsive(f"{what}: the store did not answer within {timeout:g} s")
    return call.result()


def peek(client: Any, key: str) -> bytes | None:
    """The value of ``key``, or None if it is not set. Does not wait."""
    if not client.check([key]):
        return None
    value: bytes = client.get(key)
    return value


def wait_for(client: Any, keys: list[str], timeout: float) -> bool:
    """Block until every key in ``keys`` is set, or ``timeout`` passes (False).

    The server answers the moment the last key is set: a push, not a poll. Against a stopped
    or unreachable server it blocks past ``timeout`` (see the package's notes): call it from a
    thread that may block, or through ``bounded``.
    """
    from datetime import timedelta

    try:
        client.wait(keys, timedelta(seconds=max(timeout, 0.001)))
    except RuntimeError as e:
        if type(e).__name__ == "DistStoreError" and "timeout" in str(e):
            return False
        raise
    return True


def wait_get(client: Any, key: str, timeout: float) -> bytes | None:
    """The value of ``key`` once it is set, or None after ``timeout``."""
    return client.get(key) if wait_for(client, [key], timeout) else None


def dump(value: NamedTuple) -> str:
    return json.dumps(value._asdict(), separators=(",", ":"))


def load(raw: bytes) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(raw)
    return fields


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
