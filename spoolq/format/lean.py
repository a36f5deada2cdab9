"""Plain stand-ins for conveniences of the standard library, for the modules on one plain
enqueue's path: a named record (typing.NamedTuple, collections.namedtuple), a function's one
result (functools.cache of a function without arguments), an attribute made on first use
(functools.cached_property) and a regular expression compiled on first use. Loading typing,
collections, functools and re would cost that whole call about 1 x `python -c pass`
(docs/performance.md, "One CLI call")."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from typing import Any, Callable

_UNSET = object()


class Record:
    """What spoolq uses of a named tuple, for a class that names its fields in __slots__ and
    sets each in its own __init__: equal and hashed by value, shown as Name(field=value, ...),
    _asdict and _replace. Read-only by convention: nothing assigns to one once it is made."""

    __slots__ = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def _asdict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def _replace(self, **changes: Any) -> Any:
        return type(self)(**{**self._asdict(), **changes})

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self._asdict().items()) + ")"


class once:  # noqa: N801 - a decorator, named as functools.cache is
    """A function of no arguments called once, its result kept: what cannot change while the
    process runs (its boot, its pid namespace, the C library)."""

    def __init__(self, make: Callable[[], Any]):
        self._make, self._result = make, _UNSET
        self.__doc__, self.__name__ = make.__doc__, make.__name__

    def __call__(self) -> Any:
        # RACE: two threads calling first may both make it: each result is the same fact, and
        # whichever is kept last is kept.
        if self._result is _UNSET:
            self._result = self._make()
        return self._result


class made_once:  # noqa: N801 - a decorator, named as functools.cached_property is
    """An attribute made on first use and then kept in the instance's __dict__, which Python
    looks in first from then on (a descriptor without __set__)."""

    def __init__(self, make: Callable[[Any], Any]):
        self._make, self.__doc__, self._name = make, make.__doc__, make.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        made = self._make(instance)
        # RACE: two threads asking first may both make one: setdefault keeps the first one stored
        # and hands it to both, so no caller holds one the instance has forgotten.
        return instance.__dict__.setdefault(self._name, made)


class Regex:
    """A pattern compiled on first use: compiling costs 0.2 ms a pattern, and `re` itself (with
    `enum`) 1.5 ms, which every CLI call would pay."""

    __slots__ = ("pattern", "_compiled")

    def __init__(self, pattern: str | bytes):
        self.pattern, self._compiled = pattern, None

    def fullmatch(self, text: Any) -> re.Match[Any] | None:
        if self._compiled is None:
            import re

            # RACE: two threads asking first may both compile it: the same pattern, either serves.
            self._compiled = re.compile(self.pattern)
        return self._compiled.fullmatch(text)
