"""The run-time NamedTuple behaves as typing.NamedTuple does where rankrun relies on it."""

from __future__ import annotations

import pickle
import sys

import pytest

from rankrun.base.values import NamedTuple


class Point(NamedTuple):
    x: int
    y: int = 2
    """A docstring after a field is not a field."""

    @property
    def total(self) -> int:
        return self.x + self.y


def test_fields_by_position_name_and_default() -> None:
    assert Point(1) == Point(x=1) == Point(1, 2) == (1, 2)
    assert (Point(1, y=5).x, Point(1, y=5).y, Point(3).total) == (1, 5, 5)
    assert Point._fields == ("x", "y") and Point._field_defaults == {"y": 2}


def test_helpers_and_tuple_behaviour() -> None:
    p = Point(1, 3)
    x, y = p
    assert (x, y) == (1, 3)
    assert p._replace(y=9) == Point(1, 9) and p._asdict() == {"x": 1, "y": 3}
    assert repr(p) == "Point(x=1, y=3)"
    assert pickle.loads(pickle.dumps(p)) == p
    with pytest.raises(AttributeError):
        p.x = 5  # type: ignore[misc]


@pytest.mark.parametrize("args, kwargs", [((), {}), ((1, 2, 3), {}), ((1,), {"z": 1})])
def test_wrong_arguments_raise_type_error(args: tuple[int, ...], kwargs: dict[str, int]) -> None:
    with pytest.raises(TypeError):
        Point(*args, **kwargs)


def test_the_launch_path_does_not_import_typing() -> None:
    import subprocess

    code = "import sys, rankrun.cli.main; print('typing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
