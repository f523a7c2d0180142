"""``NamedTuple`` for rankrun's value types, at the cost of a plain class.

The type checker sees ``typing.NamedTuple``. At run time, the same frozen tuple subclasses
are built without importing ``typing`` and without compiling a constructor per class, which
together cost more than the rest of the launch path's imports (``python -X importtime``).
Instances behave as NamedTuple's do: fields by position or name, defaults, equality,
unpacking, ``_fields``, ``_field_defaults``, ``_replace`` and ``_asdict``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    from operator import itemgetter

    class NamedTuple(tuple):
        __slots__ = ()
        _fields: tuple[str, ...] = ()
        _field_defaults: dict[str, object] = {}

        def __init_subclass__(cls) -> None:
            names = tuple(cls.__dict__.get("__annotations__", ()))
            cls._fields = names
            cls._field_defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
            for index, name in enumerate(names):
                setattr(cls, name, property(itemgetter(index)))

        def __new__(cls, *args: object, **kwargs: object) -> NamedTuple:
            fields = cls._fields
            if len(args) > len(fields):
                raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments")
            values = list(args)
            for name in fields[len(args) :]:
                if name in kwargs:
                    values.append(kwargs.pop(name))
                elif name in cls._field_defaults:
                    values.append(cls._field_defaults[name])
                else:
                    raise TypeError(f"{cls.__name__}() is missing {name!r}")
            if kwargs:
                raise TypeError(f"{cls.__name__}() got an unexpected {next(iter(kwargs))!r}")
            return tuple.__new__(cls, values)

        def __repr__(self) -> str:
            fields = ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, self, strict=True))
            return f"{type(self).__name__}({fields})"

        def __getnewargs__(self) -> tuple[object, ...]:
            return tuple(self)

        def _replace(self, **changes: object) -> NamedTuple:
            return type(self)(**{**self._asdict(), **changes})

        def _asdict(self) -> dict[str, object]:
            return dict(zip(self._fields, self, strict=True))
