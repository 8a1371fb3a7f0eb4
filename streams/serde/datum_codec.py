"""Avro binary datums of our own schemas, read and written by a plan built once per schema.

fastavro is the reference: every datum this module reads or writes is the one fastavro
reads or writes for the same schema (tests/serde/test_datum_codec.py checks both ways,
and on truncated and damaged bytes). It is used where a benchmark shows fastavro's
per-call cost dominates, the worker's hot path (`benchmarks/hot_path.py`): fastavro
reads through a file object a call per value and dispatches on the schema's type names
at each one; a plan is a tree of small compiled nodes (`streams.native` compiles this
module) that walk a `bytes` by index, and write a datum as a list of `bytes` joined once
(a list append is a primitive of the compiled build; a bytearray's is a method call).

Only what our schemas use is planned: null, boolean, int, long, string, bytes, enum,
array, map, record, and unions whose branches a Python value tells apart (at most one
branch each of null, boolean, number, text, list, mapping). `plan_for` raises
`Unplannable` for any other schema; callers then keep fastavro. Logical types must be
stripped first (`avro.strip_timestamp_millis`), as for fastavro.

Decoding is stricter than fastavro on damaged bytes, never more lenient (a differential
test and a review's fuzzing found no bytes both accept and read differently): these are
errors here and values to fastavro: a negative string, bytes, array or map length
(fastavro reads "the rest of the input"), a negative block byte size or one past the end,
a boolean byte other than 0 or 1, an int beyond 32 bits, a varint beyond 64 bits, a
negative enum or union index. Such a record of the worker's input is dead-lettered as
`truncated_avro`. `decode` takes `bytes` (the compiled build refuses a bytearray).
"""

from __future__ import annotations

import sys
from typing import Any, Final

__all__ = [
    "DatumError",
    "Plan",
    "TrailingBytes",
    "Unplannable",
    "container_plan",
    "plan_for",
    "write_long",
    "write_text",
]

# A varint of more than 10 bytes does not fit 64 bits.
_MAX_VARINT_BYTES: Final = 10
_LONG_MIN: Final = -(1 << 63)
_LONG_MAX: Final = (1 << 63) - 1
_INT_MIN: Final = -(1 << 31)
_INT_MAX: Final = (1 << 31) - 1


class DatumError(ValueError):
    """The bytes are not a datum of the schema (truncated, damaged or trailing)."""


class TrailingBytes(DatumError):
    """A whole datum, and bytes after it."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} bytes follow the datum")
        self.count = count


class Unplannable(ValueError):
    """The schema uses something this module does not plan."""


class _Reader:
    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)

    def long(self) -> int:
        pos = self.pos
        if pos < self.end:
            byte = self.data[pos]
            if byte < 0x80:  # one byte: most lengths, counts and indexes
                self.pos = pos + 1
                return (byte >> 1) ^ -(byte & 1)
        return self._long()

    def _long(self) -> int:
        data = self.data
        pos = self.pos
        end = self.end
        shift = 0
        result = 0
        count = 0
        while True:
            if pos >= end:
                raise DatumError("the datum ends inside a number")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            count += 1
            if not byte & 0x80:
                break
            if count >= _MAX_VARINT_BYTES:
                raise DatumError("a number is longer than 64 bits")
            shift += 7
        self.pos = pos
        value = (result >> 1) ^ -(result & 1)
        if value < _LONG_MIN or value > _LONG_MAX:
            raise DatumError("a number is longer than 64 bits")
        return value

    def size(self) -> int:
        size = self.long()
        if size < 0:
            raise DatumError("a negative length")
        if self.pos + size > self.end:
            raise DatumError("the datum ends inside a string or bytes")
        return size

    def raw(self) -> bytes:
        size = self.size()
        start = self.pos
        self.pos = start + size
        return self.data[start:start + size]

    def text(self) -> str:
        size = self.size()
        start = self.pos
        self.pos = start + size
        try:
            return self.data[start:start + size].decode("utf-8")
        except UnicodeDecodeError:
            raise DatumError("a string is not UTF-8") from None


class _Node:
    """One schema type: reads its value from a `_Reader`, writes its bytes to a list."""

    def read(self, r: _Reader) -> Any:
        raise NotImplementedError

    def write(self, out: list[bytes], value: Any) -> None:
        raise NotImplementedError

    def kind(self) -> str:
        """What Python value the node writes: null, boolean, number, text, list, mapping."""
        raise NotImplementedError


# The one-byte varints: zigzag 0..127, the longs -64..63.
_ONE_BYTE: Final = [bytes([n]) for n in range(128)]


def write_long(out: list[bytes], value: int) -> None:
    """A long's bytes, appended to `out` (as a plan of "long" writes them)."""
    if -64 <= value < 64:  # lengths, counts, indexes: one byte
        out.append(_ONE_BYTE[(value << 1) ^ (value >> 63)])
        return
    # Compared first with bounds that fit mypyc's short integers (cheap), then exactly.
    if (value > 0x3FFFFFFFFFFFFFFF or value < -0x4000000000000000) and (
            value < _LONG_MIN or value > _LONG_MAX):
        raise ValueError("a long must fit 64 bits")
    n = (value << 1) ^ (value >> 63)
    digits: list[int] = []
    while n > 0x7F:
        digits.append((n & 0x7F) | 0x80)
        n >>= 7
    digits.append(n)
    out.append(bytes(digits))


def write_text(out: list[bytes], value: str) -> None:
    """A string's bytes, appended to `out` (as a plan of "string" writes them)."""
    encoded = value.encode("utf-8")
    write_long(out, len(encoded))
    out.append(encoded)


class _Null(_Node):
    def read(self, r: _Reader) -> Any:
        return None

    def write(self, out: list[bytes], value: Any) -> None:
        if value is not None:
            raise TypeError("null expected")

    def kind(self) -> str:
        return "null"


class _Boolean(_Node):
    def read(self, r: _Reader) -> Any:
        if r.pos >= r.end:
            raise DatumError("the datum ends inside a boolean")
        byte = r.data[r.pos]
        r.pos += 1
        if byte > 1:
            raise DatumError("a boolean is neither 0 nor 1")
        return byte == 1

    def write(self, out: list[bytes], value: Any) -> None:
        if type(value) is not bool:
            raise TypeError("boolean expected")
        out.append(_ONE_BYTE[1] if value else _ONE_BYTE[0])

    def kind(self) -> str:
        return "boolean"


class _Long(_Node):
    def read(self, r: _Reader) -> Any:
        return r.long()

    def write(self, out: list[bytes], value: Any) -> None:
        if type(value) is not int:
            raise TypeError("integer expected")
        write_long(out, value)

    def kind(self) -> str:
        return "number"


class _Int(_Node):
    def read(self, r: _Reader) -> Any:
        value = r.long()
        if value < _INT_MIN or value > _INT_MAX:
            raise DatumError("an int is longer than 32 bits")
        return value

    def write(self, out: list[bytes], value: Any) -> None:
        if type(value) is not int:
            raise TypeError("integer expected")
        if value < _INT_MIN or value > _INT_MAX:
            raise ValueError("an int must fit 32 bits")
        write_long(out, value)

    def kind(self) -> str:
        return "number"


class _String(_Node):
    def read(self, r: _Reader) -> Any:
        return r.text()

    def write(self, out: list[bytes], value: Any) -> None:
        if type(value) is not str:
            raise TypeError("string expected")
        write_text(out, value)

    def kind(self) -> str:
        return "text"


class _Bytes(_Node):
    def read(self, r: _Reader) -> Any:
        return r.raw()

    def write(self, out: list[bytes], value: Any) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError("bytes expected")
        write_long(out, len(value))
        out.append(bytes(value))

    def kind(self) -> str:
        return "bytes"


class _Enum(_Node):
    def __init__(self, symbols: list[str]) -> None:
        self.symbols = symbols
        self.index = {symbol: n for n, symbol in enumerate(symbols)}

    def read(self, r: _Reader) -> Any:
        n = r.long()
        if n < 0 or n >= len(self.symbols):
            raise DatumError("an enum index out of range")
        return self.symbols[n]

    def write(self, out: list[bytes], value: Any) -> None:
        n = self.index.get(value) if type(value) is str else None
        if n is None:
            raise ValueError("not a symbol of the enum")
        write_long(out, n)

    def kind(self) -> str:
        return "text"


def _block_count(r: _Reader) -> int:
    """The item count of the next block (a negative count is followed by its size)."""
    count = r.long()
    if count < 0:
        count = -count
        r.size()  # the block's size in bytes, which a reader may use to skip it
    return count


class _Array(_Node):
    def __init__(self, items: _Node) -> None:
        self.items = items

    def read(self, r: _Reader) -> Any:
        items = self.items
        values: list[Any] = []
        count = _block_count(r)
        while count:
            for _ in range(count):
                values.append(items.read(r))
            count = _block_count(r)
        return values

    def write(self, out: list[bytes], value: Any) -> None:
        if not isinstance(value, (list, tuple)):
            raise TypeError("array expected")
        if value:
            write_long(out, len(value))
            items = self.items
            for item in value:
                items.write(out, item)
        out.append(_ONE_BYTE[0])

    def kind(self) -> str:
        return "list"


class _Map(_Node):
    def __init__(self, values: _Node) -> None:
        self.values = values

    def read(self, r: _Reader) -> Any:
        values = self.values
        result: dict[str, Any] = {}
        count = _block_count(r)
        while count:
            for _ in range(count):
                key = r.text()
                result[key] = values.read(r)
            count = _block_count(r)
        return result

    def write(self, out: list[bytes], value: Any) -> None:
        if not isinstance(value, dict):
            raise TypeError("map expected")
        if value:
            write_long(out, len(value))
            values = self.values
            for key, item in value.items():
                if type(key) is not str:
                    raise TypeError("map keys must be strings")
                write_text(out, key)
                values.write(out, item)
        out.append(_ONE_BYTE[0])

    def kind(self) -> str:
        return "mapping"


class _Record(_Node):
    def __init__(self, name: str) -> None:
        self.name = name
        self.names: list[str] = []
        self.fields: list[_Node] = []
        self.defaults: list[Any] = []  # a default, or _NO_DEFAULT

    def read(self, r: _Reader) -> Any:
        record: dict[str, Any] = {}
        names = self.names
        fields = self.fields
        for n in range(len(names)):
            record[names[n]] = fields[n].read(r)
        return record

    def read_values(self, r: _Reader) -> list[Any]:
        """The record's field values, in the order of its fields."""
        return [field.read(r) for field in self.fields]

    def write_values(self, out: list[bytes], values: Any) -> None:
        fields = self.fields
        if not isinstance(values, (list, tuple)) or len(values) != len(fields):
            raise TypeError(f"{self.name}: a value per field expected")
        for n in range(len(fields)):
            fields[n].write(out, values[n])

    def write(self, out: list[bytes], value: Any) -> None:
        if not isinstance(value, dict):
            raise TypeError("record expected")
        names = self.names
        fields = self.fields
        defaults = self.defaults
        for n in range(len(names)):
            item = value.get(names[n], _NO_DEFAULT)
            if item is _NO_DEFAULT:
                item = defaults[n]
                if item is _NO_DEFAULT:
                    raise ValueError(f"{self.name}: field {names[n]} is missing")
            fields[n].write(out, item)

    def kind(self) -> str:
        return "mapping"


class _Union(_Node):
    def __init__(self, branches: list[_Node]) -> None:
        self.branches = branches
        self.by_kind: dict[str, int] = {}
        for n, branch in enumerate(branches):
            kind = branch.kind()
            if kind in self.by_kind:
                raise Unplannable("a union with two branches of one kind of value")
            self.by_kind[kind] = n

    def read(self, r: _Reader) -> Any:
        n = r.long()
        if n < 0 or n >= len(self.branches):
            raise DatumError("a union index out of range")
        return self.branches[n].read(r)

    def write(self, out: list[bytes], value: Any) -> None:
        n = self.by_kind.get(_kind_of(value), -1)
        if n < 0:
            raise TypeError("no branch of the union takes this value")
        write_long(out, n)
        self.branches[n].write(out, value)

    def kind(self) -> str:
        raise Unplannable("a union inside a union")


class _Values(_Node):
    """A record read as the list of its field values (see `plan_for`)."""

    def __init__(self, record: _Record) -> None:
        self.record = record

    def read(self, r: _Reader) -> Any:
        return self.record.read_values(r)

    def write(self, out: list[bytes], value: Any) -> None:
        self.record.write_values(out, value)

    def kind(self) -> str:
        return "list"


class _NamedUnion(_Node):
    """The top level of a container of several record types: (the record's full name, the
    record), as fastavro's reader gives it with `return_record_name=True`; or (full name,
    its field values) for the records named in `as_values`."""

    def __init__(self, branches: list[_Record], as_values: frozenset[str]) -> None:
        self.branches = branches
        self.as_values = [branch.name in as_values for branch in branches]

    def read(self, r: _Reader) -> Any:
        n = r.long()
        if n < 0 or n >= len(self.branches):
            raise DatumError("a union index out of range")
        branch = self.branches[n]
        if self.as_values[n]:
            return (branch.name, branch.read_values(r))
        return (branch.name, branch.read(r))

    def write(self, out: list[bytes], value: Any) -> None:
        raise Unplannable("a container plan only reads")

    def kind(self) -> str:
        raise Unplannable("a union inside a union")


class _Sentinel:
    pass


_NO_DEFAULT: Final = _Sentinel()


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    if type(value) is int:
        return "number"
    if type(value) is str:
        return "text"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    return "?"


class Plan:
    """Reads and writes the datums of one schema."""

    def __init__(self, root: _Node) -> None:
        self._root = root

    def decode(self, data: bytes, offset: int = 0) -> Any:
        """The datum that `data[offset:]` holds, all of it; DatumError otherwise."""
        r = _Reader(data, offset)
        value = self._root.read(r)
        if r.pos != r.end:
            raise TrailingBytes(r.end - r.pos)
        return value

    def read_next(self, data: bytes, offset: int) -> tuple[Any, int]:
        """The datum that starts at `data[offset]`, and where the next one starts (a block
        of a container file holds datums one after the other)."""
        r = _Reader(data, offset)
        value = self._root.read(r)
        return value, r.pos

    def encode(self, value: Any) -> bytes:
        """The Avro binary encoding of `value`; TypeError or ValueError when it does not
        fit the schema."""
        out: list[bytes] = []
        self._root.write(out, value)
        return b"".join(out)

    def write(self, out: list[bytes], value: Any) -> None:
        """`encode`, appended to `out` in pieces: for a writer that puts a datum together
        from the datums of its parts (a record's encoding is its fields', in order)."""
        self._root.write(out, value)


_PRIMITIVES: Final[dict[str, type[_Node]]] = {
    "null": _Null, "boolean": _Boolean, "int": _Int, "long": _Long, "string": _String,
    "bytes": _Bytes,
}


def plan_for(schema: Any, as_values: bool = False) -> Plan:
    """The plan of a schema (as JSON-like data, parsed by fastavro or not).

    `as_values`: the schema is a record, read (and written) as the list of its field
    values in the schema's order, not as a dict: for a reader that takes the fields by
    position (the event validator), a dict built only to be looked up again costs a
    fifth of the decoding (`benchmarks/foundation.py`, replay from Avro).
    """
    root = _plan(schema, {}, "")
    if as_values:
        if not isinstance(root, _Record):
            raise Unplannable("only a record is read as its values")
        root = _Values(root)
    return Plan(root)


def container_plan(schema: Any, as_values: frozenset[str] = frozenset()) -> Plan:
    """The plan of a container file's datums, read as fastavro's reader reads them with
    `return_record_name=True`: a record, or for a union of records (record name, record).

    Unplannable where that reader would give something else: a union nested anywhere
    that may hold a record (fastavro gives it as a (name, record) tuple too), or a top
    level union with a branch that is not a record. A top-level record whose full name is
    in `as_values` is read as the list of its field values instead (see `plan_for`).
    """
    if isinstance(schema, list):
        named: dict[str, _Node] = {}
        branches: list[_Record] = []
        for branch in schema:
            if not (isinstance(branch, dict) and branch.get("type") == "record"):
                raise Unplannable("a container union of something else than records")
            _no_record_in_unions(branch)
            node = _plan(branch, named, "")
            assert isinstance(node, _Record)
            branches.append(node)
        return Plan(_NamedUnion(branches, as_values))
    _no_record_in_unions(schema)
    root = _plan(schema, {}, "")
    if isinstance(root, _Record) and root.name in as_values:
        root = _Values(root)
    return Plan(root)


_UNION_SAFE: Final = frozenset({"null", "boolean", "int", "long", "string", "bytes"})
_UNION_SAFE_TYPES: Final = _UNION_SAFE | {"array", "map", "enum"}


def _no_record_in_unions(schema: Any) -> None:
    """Unplannable for a union below the top that is not only of primitives, arrays, maps
    and enums (a name there may be a record)."""
    if isinstance(schema, list):
        for branch in schema:
            if isinstance(branch, str) and branch in _UNION_SAFE:
                continue
            if isinstance(branch, dict) and branch.get("type") in _UNION_SAFE_TYPES:
                _no_record_in_unions(branch)
                continue
            raise Unplannable("a union that may hold a record")
    elif isinstance(schema, dict):
        for field in schema.get("fields") or ():
            if isinstance(field, dict):
                _no_record_in_unions(field.get("type"))
        for key in ("items", "values"):
            if key in schema:
                _no_record_in_unions(schema[key])


def _plan(schema: Any, named: dict[str, _Node], namespace: str) -> _Node:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]()
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        if full in named:
            return named[full]
        if schema in named:
            return named[schema]
        raise Unplannable(f"unknown type {schema}")
    if isinstance(schema, list):
        return _Union([_plan(branch, named, namespace) for branch in schema])
    if not isinstance(schema, dict):
        raise Unplannable(f"not a schema: {schema!r}")
    kind = schema.get("type")
    if kind in _PRIMITIVES:
        return _PRIMITIVES[str(kind)]()
    if kind == "array":
        return _Array(_plan(schema["items"], named, namespace))
    if kind == "map":
        return _Map(_plan(schema["values"], named, namespace))
    if kind == "enum":
        node: _Node = _Enum([str(symbol) for symbol in schema["symbols"]])
        named[_full_name(schema, namespace)] = node
        return node
    if kind in ("record", "error"):
        full = _full_name(schema, namespace)
        record = _Record(full)
        named[full] = record  # before its fields: they may refer to it
        inner = full.rpartition(".")[0]
        for field in schema["fields"]:
            # Interned, as the validator's own field names are: lookups match by identity.
            record.names.append(sys.intern(str(field["name"])))
            record.fields.append(_plan(field["type"], named, inner))
            record.defaults.append(field.get("default", _NO_DEFAULT))
        return record
    raise Unplannable(f"unsupported type {kind!r}")


def _full_name(schema: dict[str, Any], namespace: str) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name
