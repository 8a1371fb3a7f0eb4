"""The generated reference pages (docs/rules.md, docs/configuration.md) and the links of
the hand-written docs: they must say what the code does, and point at files that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from streams.catalogue import load_catalogue
from streams.cli import docs_cmd
from streams.cli.app import cli
from tests.conftest import ROOT

DOCS = ROOT / "docs"
# Another engineer's pages, or pages this suite does not own.
NOT_CHECKED = {"verifying.md", "evidence-bundle.md", "consentwatch-dead-letters.md"}


@pytest.mark.parametrize("name", sorted(docs_cmd.PAGES))
def test_committed_page_is_what_the_generator_writes(name: str) -> None:
    assert (DOCS / name).read_text(encoding="utf-8") == docs_cmd.render(name), (
        f"docs/{name} is stale: run python -m streams.cli.docs_cmd and commit it")


def test_check_flags_a_stale_page(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "streams.cli.docs_cmd", "--out", str(tmp_path)]
    assert subprocess.run(command, capture_output=True, timeout=60,
                          check=False, cwd=ROOT).returncode == 0
    assert subprocess.run([*command, "--check"], capture_output=True, timeout=60,
                          check=False, cwd=ROOT).returncode == 0
    (tmp_path / "rules.md").write_text("# old\n", encoding="utf-8")
    stale = subprocess.run([*command, "--check"], capture_output=True, text=True, timeout=60,
                           check=False, cwd=ROOT)
    assert stale.returncode == 1
    assert "stale: rules.md" in stale.stderr


def test_rules_page_has_every_rule_with_its_definition_and_citations() -> None:
    page = docs_cmd.render("rules.md")
    for rule in load_catalogue().rules:
        section = page.split(f"## `{rule.id}`\n", 1)[1].split("\n## ", 1)[0]
        assert rule.severity in section and rule.title in section
        for part in (rule.trigger, rule.fires_when, rule.evidence):
            assert part and part in section, rule.id
        for regulation in rule.regulations:
            assert f"| {regulation.law} | {regulation.article} |" in section


def test_rules_page_says_when_notice_findings_appear() -> None:
    page = docs_cmd.render("rules.md")
    assert "`notice_grace`" in page and "--end-of-input" in page


def _commands(command: click.Command, path: str) -> list[tuple[str, click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _commands(sub, f"{path} {name}")
    return found


def test_configuration_page_has_every_option_and_variable_of_every_command() -> None:
    page = docs_cmd.render("configuration.md")
    for path, command in _commands(cli, "consentwatch"):
        if isinstance(command, click.Group) and path != "consentwatch":
            continue
        section = page.split(f"### `{path}`\n", 1)[1].split("\n### ", 1)[0]
        for param in command.params:
            if param.name in {"help", "version"}:
                continue
            for opt in param.opts if isinstance(param, click.Option) else []:
                assert f"`{opt}`" in section, f"{path} {opt}"
            if isinstance(param.envvar, str):
                assert f"`{param.envvar}`" in section, f"{path} {param.envvar}"


def test_configuration_page_gives_defaults() -> None:
    page = docs_cmd.render("configuration.md")
    worker = page.split("### `consentwatch worker`\n", 1)[1].split("\n### ", 1)[0]
    assert re.search(r"\| `--notice-grace` \|  \| `300` \|", worker)
    assert re.search(r"\| `--web-host` \| `CONSENTWATCH_WEB_HOST` \| `127.0.0.1` \|", worker)
    assert "| `connect_timeout` | `CONSENTWATCH_KAFKA_CONNECT_TIMEOUT` | `30.0` |" in page


def _markdown_files() -> list[Path]:
    files = [*DOCS.rglob("*.md"), ROOT / "dashboards" / "README.md",
             *(ROOT / "deploy").rglob("*.md")]
    return sorted(f for f in files if f.name not in NOT_CHECKED
                  and ".bin" not in f.parts and "node_modules" not in f.parts)


def test_docs_never_point_at_the_spec_outside_the_repository() -> None:
    """A clone has no spec/events.md: the rules are in docs/rules.md."""
    citing = [str(f.relative_to(ROOT)) for f in _markdown_files()
              if "spec/events.md" in f.read_text(encoding="utf-8")]
    assert citing == []


def test_relative_links_of_the_docs_resolve() -> None:
    dead = []
    for path in _markdown_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            if not (path.parent / target.split("#")[0]).exists():
                dead.append(f"{path.relative_to(ROOT)}: {target}")
    assert dead == []


def test_check_flags_a_stale_findings_alert_group(tmp_path: Path) -> None:
    """The findings alerts of alerts.yml are the rules' own: an alerts file whose group
    differs is stale, and writing mends it (another --out never touches the checkout's)."""
    alerts = tmp_path / "alerts.yml"
    committed = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    alerts.write_text(committed.replace("> 10", "> 99"), encoding="utf-8")
    command = [sys.executable, "-m", "streams.cli.docs_cmd", "--out", str(tmp_path),
               "--alerts", str(alerts)]
    subprocess.run(command[:5], capture_output=True, timeout=60, check=True, cwd=ROOT)
    stale = subprocess.run([*command, "--check"], capture_output=True, text=True, timeout=60,
                           check=False, cwd=ROOT)
    assert stale.returncode == 1
    assert "alerts.yml" in stale.stderr
    subprocess.run(command, capture_output=True, timeout=60, check=True, cwd=ROOT)
    assert alerts.read_text(encoding="utf-8") == committed
