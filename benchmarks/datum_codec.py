"""The planned Avro codec (`streams/serde/datum_codec.py`) against fastavro, same run.

    .venv/bin/python benchmarks/datum_codec.py [--events 20000] [--repeat 5]

What the worker does per record, timed per call (best of `--repeat` passes):
* decode: an event's single-object payload to its Avro record (fastavro:
  `schemaless_reader` on a BytesIO, as `streams/serde/wire.py` did; the plan: `decode`);
* encode: a sealed finding's record to its Avro datum (fastavro: `schemaless_writer`
  with the union branches tagged, its fastest form; the plan: `encode`).

The plan is timed as this checkout runs it (compiled by `python -m streams.native build`
when built) and as the source file interpreted, so the figure shows what the compiled
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
from mix import generate  # noqa: E402

from streams.engine import Engine  # noqa: E402
from streams.engine.state import DictStore  # noqa: E402
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


def _interpreted() -> Any:
    spec = importlib.util.spec_from_file_location(
        "datum_codec_source", ROOT / "streams" / "serde" / "datum_codec.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _per_call(run: Callable[[], Any], calls: int, repeat: int) -> float:
    return min(timeit.repeat(run, number=1, repeat=repeat)) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.events < 1000 or args.repeat < 1:
        parser.error("--events must be at least 1000 and --repeat at least 1")

    events = list(generate(args.events, max(1, args.events // 10), 1))
    framing = wire.SingleObjectFraming()
    payloads = [framing.encode(event) for event in events]
    known = wire._known_by_fingerprint()
    source = _interpreted()
    schemas = [(known[p[2:10]].writer, p) for p in payloads]
    built = {id(s): (datum_codec.plan_for(s), source.plan_for(s)) for s, _ in schemas}

    def fastavro_decode() -> None:
        for schema, payload in schemas:
            stream = io.BytesIO(payload)
            stream.seek(10)
            fastavro.schemaless_reader(stream, schema, None)

    def plan_decode(which: int) -> Callable[[], None]:
        def run() -> None:
            for schema, payload in schemas:
                built[id(schema)][which].decode(payload, 10)
        return run

    engine = Engine(DictStore())
    outputs = [out for event in events for out in engine.process(event)] + engine.flush()
    pseudonymiser = default_pseudonymiser()
    records = [avro.finding_to_record(pseudonymiser.finding(out)) for out in outputs
               if isinstance(out, Finding)]
    tagged = [_tagged(record) for record in records]
    finding_schema = wire._current("Finding")
    compiled_plan = datum_codec.plan_for(finding_schema)
    source_plan = source.plan_for(finding_schema)
    for record, tag in zip(records, tagged, strict=True):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, finding_schema, tag)
        if compiled_plan.encode(record) != out.getvalue():
            raise SystemExit("the plan and fastavro write different bytes")

    def fastavro_encode() -> None:
        for record in tagged:
            fastavro.schemaless_writer(io.BytesIO(), finding_schema, record)

    def plan_encode(plan: Any) -> Callable[[], None]:
        def run() -> None:
            for record in records:
                plan.encode(record)
        return run

    compiled = str(datum_codec.__file__).endswith(".so")
    rows = [
        ("decode an event", len(schemas), fastavro_decode, plan_decode(0), plan_decode(1)),
        ("encode a finding", len(records), fastavro_encode, plan_encode(compiled_plan),
         plan_encode(source_plan)),
    ]
    print(f"{len(events):,} events, {len(records):,} findings; datum_codec "
          f"{'compiled' if compiled else 'NOT compiled (run python -m streams.native build)'}")
    print(f"{'':18} {'fastavro µs':>12} {'plan µs':>10} {'fastavro/plan':>14} "
          f"{'plan, sources µs':>17}")
    for name, calls, base, plan, plan_source in rows:
        base_us = _per_call(base, calls, args.repeat)
        plan_us = _per_call(plan, calls, args.repeat)
        source_us = _per_call(plan_source, calls, args.repeat)
        print(f"{name:18} {base_us:12.2f} {plan_us:10.2f} {base_us / plan_us:14.2f} "
              f"{source_us:17.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
