"""The worker's per-record pieces against the libraries they replace, same run.

    .venv/bin/python benchmarks/hot_path.py [--events 20000] [--repeat 5]

Timed per call (best of `--repeat` passes):
* decode an event: its single-object payload to its Avro record; fastavro
  (`schemaless_reader` on a BytesIO, as `streams/serde/wire.py` did) against the planned
  codec (`streams/serde/datum_codec.py`, `Plan.decode`);
* encode a finding: a sealed finding's record to its Avro datum; fastavro
  (`schemaless_writer` with the union branches tagged, its fastest form) against
  `Plan.encode`;
* partition a finding: murmur2 of its key; aiokafka's `murmur2` against ours
  (`streams/kafka/murmur2.py`).

Ours are timed as this checkout runs them (compiled by `python -m streams.native build`
when built) and as their source files interpreted, so the figures show what the compiled
build pays. The events are the benchmark mix (`mix.py`); the findings are the engine's on it.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

import fastavro  # noqa: E402
from aiokafka.partitioner import murmur2 as aiokafka_murmur2  # noqa: E402
from mix import generate  # noqa: E402

from streams.engine import Engine  # noqa: E402
from streams.engine.state import DictStore  # noqa: E402
from streams.kafka import murmur2  # noqa: E402
from streams.model.findings import Finding  # noqa: E402
from streams.privacy.pseudonymise import default_pseudonymiser  # noqa: E402
from streams.serde import avro, datum_codec, wire  # noqa: E402

_BRANCH = {type(None): "null", bool: "boolean", int: "long", str: "string", list: "array"}


def _tagged(record: dict[str, Any]) -> dict[str, Any]:
    """fastavro's tuple notation for the evidence map's union (no branch search)."""
    record = dict(record)
    record["evidence"] = [{**item, "fields": {name: (_BRANCH[type(value)], value)
                                              for name, value in item["fields"].items()}}
                          for item in record["evidence"]]
    return record


def _interpreted(path: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        Path(path).stem + "_source", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _per_call(run: Callable[[], Any], calls: int, repeat: int) -> float:
    return min(timeit.repeat(run, number=1, repeat=repeat)) / calls * 1e6


_Row = tuple[str, int, Callable[[], None], Callable[[], None], Callable[[], None]]


def _each(function: Callable[[Any], Any], items: list[Any]) -> Callable[[], None]:
    def run() -> None:
        for item in items:
            function(item)
    return run


def _decode_row(events: list[Any], source: Any) -> _Row:
    framing = wire.SingleObjectFraming()
    known = wire._known_by_fingerprint()
    payloads = [framing.encode(event) for event in events]
    schemas = [(known[p[2:10]].writer, p) for p in payloads]
    built = {id(s): (datum_codec.plan_for(s), source.plan_for(s)) for s, _ in schemas}

    def fastavro_decode(item: tuple[Any, bytes]) -> None:
        stream = io.BytesIO(item[1])
        stream.seek(10)
        fastavro.schemaless_reader(stream, item[0], None)

    return ("decode an event", len(schemas), _each(fastavro_decode, schemas),
            _each(lambda item: built[id(item[0])][0].decode(item[1], 10), schemas),
            _each(lambda item: built[id(item[0])][1].decode(item[1], 10), schemas))


def _finding_records(events: list[Any]) -> list[dict[str, Any]]:
    engine = Engine(DictStore())
    outputs = [out for event in events for out in engine.process(event)] + engine.flush()
    pseudonymiser = default_pseudonymiser()
    return [avro.finding_to_record(pseudonymiser.finding(out)) for out in outputs
            if isinstance(out, Finding)]


def _encode_row(records: list[dict[str, Any]], source: Any) -> _Row:
    tagged = [_tagged(record) for record in records]
    schema = wire._current("Finding")
    compiled_plan = datum_codec.plan_for(schema)
    for record, tag in zip(records, tagged, strict=True):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, tag)
        if compiled_plan.encode(record) != out.getvalue():
            raise SystemExit("the plan and fastavro write different bytes")
    return ("encode a finding", len(records),
            _each(lambda record: fastavro.schemaless_writer(io.BytesIO(), schema, record),
                  tagged),
            _each(compiled_plan.encode, records),
            _each(source.plan_for(schema).encode, records))


def _partition_row(records: list[dict[str, Any]]) -> _Row:
    keys = [record["finding_id"].encode() for record in records]
    if any(murmur2.murmur2(key) != aiokafka_murmur2(key) & 0xFFFFFFFF for key in keys):
        raise SystemExit("our murmur2 and aiokafka's disagree")
    return ("partition a finding", len(keys), _each(aiokafka_murmur2, keys),
            _each(murmur2.murmur2, keys),
            _each(_interpreted("streams/kafka/murmur2.py").murmur2, keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.events < 1000 or args.repeat < 1:
        parser.error("--events must be at least 1000 and --repeat at least 1")

    events = list(generate(args.events, max(1, args.events // 10), 1))
    source = _interpreted("streams/serde/datum_codec.py")
    records = _finding_records(events)
    rows = [_decode_row(events, source), _encode_row(records, source), _partition_row(records)]
    compiled = all(str(module.__file__).endswith(".so") for module in (datum_codec, murmur2))
    print(f"{len(events):,} events, {len(records):,} findings; ours "
          f"{'compiled' if compiled else 'NOT compiled (run python -m streams.native build)'}")
    print(f"{'':20} {'library µs':>11} {'ours µs':>8} {'library/ours':>13} "
          f"{'ours, sources µs':>17}")
    for name, calls, library, ours, ours_source in rows:
        library_us = _per_call(library, calls, args.repeat)
        ours_us = _per_call(ours, calls, args.repeat)
        source_us = _per_call(ours_source, calls, args.repeat)
        print(f"{name:20} {library_us:11.2f} {ours_us:8.2f} {library_us / ours_us:13.2f} "
              f"{source_us:17.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
