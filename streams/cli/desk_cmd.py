"""`consentwatch desk`: the review desk's web server and its users."""

from __future__ import annotations

import ipaddress
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streams.cli.evidence_cmds import ledger_option, load_signing_key, signing_key_option
from streams.cli.options import engine_options, make_params

if TYPE_CHECKING:
    from streams.desk import Database

__all__ = ["desk"]


@click.group()
def desk() -> None:
    """The review desk: a web application over the evidence ledger."""


def _open(ledger_url: str) -> Database:
    from streams.desk import Database
    from streams.errors import ConfigError
    from streams.evidence.ledger import is_postgres_url

    if not is_postgres_url(ledger_url) and not Path(ledger_url).is_file():
        # Opening would create an empty ledger: a typo must not serve an empty desk.
        raise ConfigError(f"no ledger at {ledger_url}")
    return Database(ledger_url)


def _bind(_ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
        if not sep or not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise click.BadParameter("HOST:PORT with an IP address, e.g. 127.0.0.1:8080 or "
                                 "[::1]:8080", param=param) from None
    return host, number


@desk.command()
@ledger_option
@click.option("--bind", default="127.0.0.1:8080", show_default=True, callback=_bind,
              metavar="HOST:PORT", help="Address to listen on (an IP address and a port).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              metavar="FILE", help="Serve https with this certificate (PEM); needs --tls-key.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              metavar="FILE", help="The private key (PEM) of --tls-cert.")
@click.option("--behind-https-proxy", is_flag=True,
              help="Plain http on a non-loopback address, for a TLS-terminating proxy in "
                   "front: session cookies are then marked Secure.")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="ADDRESS",
              help="With --behind-https-proxy: the proxy's address (repeatable), whose "
                   "X-Forwarded-For names the client. Without it every login comes from "
                   "the proxy's address and the per-address login limit counts all users "
                   "together.")
@signing_key_option(required=False,
                    help="Ed25519 private key (PEM) the desk signs exports with, the one "
                         "`consentwatch export` takes (or CONSENTWATCH_SIGNING_KEY); "
                         "without it the desk does not export.")
@engine_options
def serve(ledger_url: str, bind: tuple[str, int], tls_cert: Path | None,
          tls_key: Path | None, behind_https_proxy: bool, trusted_proxies: tuple[str, ...],
          private_key: Path | None,
          allowed_lateness: float, notice_grace: float, notice_validity: float) -> None:
    """Serve the desk over the ledger (Ctrl-C stops it).

    With --private-key, users of role exporter and admin export evidence bundles from
    the desk, as `consentwatch export` does (the engine options are written to their
    manifests, as export's).

    On a loopback address plain http is allowed (the connection never leaves the
    machine) and the session cookie is not marked Secure, which a browser would refuse
    to send back over http. Any other address needs --tls-cert and --tls-key, or
    --behind-https-proxy.
    """
    import logging

    import uvicorn

    from streams.desk import DeskConfig, create_app
    from streams.errors import ConfigError

    host, port = bind
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    tls = tls_cert is not None
    if not tls and not behind_https_proxy and not ipaddress.ip_address(host).is_loopback:
        raise ConfigError(f"{host} is not a loopback address: serve https (--tls-cert, "
                          "--tls-key) or put a TLS proxy in front (--behind-https-proxy)")
    if tls and behind_https_proxy:
        raise ConfigError("--behind-https-proxy is for plain http; with --tls-cert the desk "
                          "serves https itself")
    if trusted_proxies and not behind_https_proxy:
        raise ConfigError("--trusted-proxy goes with --behind-https-proxy")
    for proxy in trusted_proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            raise ConfigError(f"--trusted-proxy {proxy!r}: not an IP address") from None
    if tls_cert is not None and tls_key is not None:
        _check_tls(tls_cert, tls_key)
    key = None if private_key is None else load_signing_key(private_key)
    params = make_params(allowed_lateness, notice_grace, notice_validity)
    listener = _listen(host, port)
    try:
        db = _open(ledger_url)
    except BaseException:
        listener.close()
        raise
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(db, DeskConfig(secure_cookies=tls or behind_https_proxy,
                                    signing_key=key, engine_params=params))
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning",
                            proxy_headers=bool(trusted_proxies),
                            forwarded_allow_ips=list(trusted_proxies) or None,
                            server_header=False,
                            ssl_certfile=str(tls_cert) if tls_cert else None,
                            ssl_keyfile=str(tls_key) if tls_key else None)
    server = uvicorn.Server(config)
    click.echo(f"desk: serving the ledger at {'https' if tls else 'http'}://"
               f"{_shown(host)}:{port}/ (Ctrl-C stops it)", err=True)
    if key is None:
        click.echo("desk: no --private-key: exports from the desk are off", err=True)
    if behind_https_proxy and not trusted_proxies:
        click.echo("desk: no --trusted-proxy: the login limit per client address counts "
                   "every login through the proxy together", err=True)
    try:
        server.run(sockets=[listener])
    except SystemExit as exc:  # uvicorn exits when it cannot start (a bad TLS key, ...)
        raise ConfigError(f"the desk could not start (uvicorn exit status {exc.code})") from None
    finally:
        listener.close()
        db.close()


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts: a port in use is one line."""
    from streams.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"the desk cannot listen on {_shown(host)}:{port}: "
                          f"{exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@desk.group()
def user() -> None:
    """Users of the desk and their roles."""


@user.command("add")
@click.argument("name")
@click.option("--role", required=True,
              type=click.Choice(["viewer", "reviewer", "exporter", "admin"]),
              help="viewer reads; reviewer also reviews; exporter also exports; admin all, "
                   "and users.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of stdin instead of a prompt.")
@ledger_option
def add(name: str, role: str, password_stdin: bool, ledger_url: str) -> None:
    """Add the user NAME (password from a prompt, or --password-stdin)."""
    from streams.desk.users import add_user, check_name
    from streams.errors import ConfigError

    check_name(name)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True,
                                err=True)
    if not password:
        raise ConfigError("no password given")
    db = _open(ledger_url)
    try:
        add_user(db, name, role, password, now_ms=time.time_ns() // 1_000_000)
    finally:
        db.close()
    click.echo(f"added user {name} ({role})")


@user.command("list")
@ledger_option
def list_(ledger_url: str) -> None:
    """The users and their roles."""
    from streams.desk.users import list_users
    from streams.evidence.export.times import describe_ms

    db = _open(ledger_url)
    try:
        for name, role, created in list_users(db):
            click.echo(f"{name}\t{role}\t{describe_ms(created)}")
    finally:
        db.close()


def _check_tls(cert: Path, key: Path) -> None:
    """The certificate and key load as uvicorn will load them: one line now, not a
    traceback after the desk said it is serving."""
    import ssl

    from streams.errors import ConfigError

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: cannot be used ({reason})"
                          ) from None
