"""`consentwatch rules`: the rule catalogue, for people and for scripts."""

from __future__ import annotations

import click
import orjson

from streams.catalogue import load_catalogue

__all__ = ["rules"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rule.")
def rules(as_json: bool) -> int:
    """List the rules: id, severity, title and the regulations each cites."""
    catalogue = load_catalogue()
    if as_json:
        for rule in catalogue.rules:
            record = {
                "id": rule.id,
                "severity": rule.severity,
                "title": rule.title,
                "explanation": rule.explanation,
                "regulations": [
                    {"law": r.law, "article": r.article, "title": r.title}
                    for r in rule.regulations
                ],
                "catalogue_version": catalogue.version,
            }
            click.echo(orjson.dumps(record).decode())
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"consentwatch rule catalogue {catalogue.version}")
    table.add_column("rule", no_wrap=True)
    table.add_column("severity")
    table.add_column("title")
    table.add_column("cites")
    for rule in catalogue.rules:
        table.add_row(rule.id, rule.severity, rule.title,
                      "; ".join(r.cite() for r in rule.regulations))
    Console().print(table)
    return 0
