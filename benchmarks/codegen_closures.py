"""Closure versions of the two `exec` code generators, for `benchmarks/codegen.py`.

Typed as the modules they would replace code in (`streams/model/events.py`,
`streams/serde/jsonl.py`), so mypyc can compile this file alone (`codegen.py --mypyc`)
as it would compile `streams/serde/jsonl.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from operator import attrgetter
from typing import Any

__all__ = ["closure_constructor", "closure_json_form"]


def closure_constructor(cls: type[Any]) -> Callable[..., Any]:
    """`fast_constructor` without `exec`: the twin's slots set through their descriptors."""
    names = tuple(field.name for field in fields(cls))
    twin = type(f"_Mutable{cls.__name__}", (), {"__slots__": names})
    setters = tuple(twin.__dict__[name].__set__ for name in names)
    arity = len(names)

    def make(*values: Any) -> Any:
        if len(values) != arity:
            raise TypeError(f"{cls.__name__} takes {arity} values, not {len(values)}")
        made = twin()
        for setter, value in zip(setters, values, strict=True):
            setter(made, value)
        made.__class__ = cls
        return made

    return make


def closure_json_form(cls: type[Any], transformed: Iterable[str] = ()
                      ) -> Callable[[Any, Callable[[str], str]], dict[str, Any]]:
    """`json_form` without `exec`: one attrgetter, then lists and transforms by index."""
    wanted = frozenset(transformed)
    names = tuple(field.name for field in fields(cls))
    getter = attrgetter(*names)
    keys = ("type", *names)
    type_name: str = cls.TYPE
    arrays = tuple(index for index, field in enumerate(fields(cls), 1)
                   if str(field.type).startswith("tuple") and field.name not in wanted)
    hashed = tuple(index for index, field in enumerate(fields(cls), 1) if field.name in wanted)

    def form(event: Any, transform: Callable[[str], str]) -> dict[str, Any]:
        values: list[Any] = [type_name, *getter(event)]
        for index in arrays:
            values[index] = list(values[index])
        for index in hashed:
            value = values[index]
            if value is not None:
                values[index] = transform(value)
        return dict(zip(keys, values, strict=True))

    return form
