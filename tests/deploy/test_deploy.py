"""The deployment files (issue 7): Docker Compose, the image, Kubernetes manifests.

Nothing here can start a container (CI has no Docker engine and no cluster), so each
file is checked against the schema its consumer uses, and every reference from one
file to another is followed: files Compose mounts, the rules the PrometheusRule
carries, the ConfigMap keys the probes and flags use, and the `consentwatch` command
lines the containers run, parsed by the real CLI.

Tools: kustomize (built once from the Go module proxy by deploy/k8s/install-kustomize.sh)
and the Prometheus Operator CRD validator (npm, deploy/k8s/install-crd-validator.sh),
both cached under deploy/k8s/.bin/; kubernetes-validate (bundled schemas), jsonschema,
promtool (deploy/packages.sh).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml

from streams.cli.app import cli
from streams.kafka.connection import BROKER_ENV, KafkaConnection
from tests.conftest import SPEC_DIR

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
COMPOSE_SCHEMA = COMPOSE_DIR / "schema" / "compose-spec.json"
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
KUBERNETES_VERSION = "1.33.0"  # the oldest release the manifests must be valid for
CRD_GROUP = "monitoring.coreos.com/v1"
# Variables the manifests set that the program does not read: they are expanded into
# flags by Kubernetes ($(VAR) in args), or read by a library (libpq's PGPASSWORD).
NOT_PROGRAM_VARIABLES = {"PGPASSWORD"}


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


# --- Docker Compose -------------------------------------------------------------------


def test_vendored_compose_schema_is_the_one_its_source_note_names() -> None:
    noted = re.search(r"sha256: `([0-9a-f]{64})`",
                      (COMPOSE_SCHEMA.parent / "SOURCE.md").read_text(encoding="utf-8"))
    assert noted, "deploy/compose/schema/SOURCE.md must give the schema's sha256"
    assert hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest() == noted.group(1)


def _compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    assert "draft-07" in schema["$schema"]  # spelt without the '#' jsonschema looks up
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in _compose_validator().iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize("breakage", [
    lambda c: c["services"]["worker-1"].update(depends_on={"topics": {"condition": "done"}}),
    lambda c: c["services"]["kafka"].update(healthcheck={"test": "x", "intervall": "5s"}),
    lambda c: c.update(secret={}),
])
def test_compose_schema_check_catches_mistakes(compose: dict[str, Any], breakage: Any) -> None:
    broken = json.loads(json.dumps(compose))
    breakage(broken)
    assert list(_compose_validator().iter_errors(broken))


_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?::?-([^}]*))?\}|(\w+))")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """The value as Compose sees it with the environment `env`: `$$` is a `$`, `${V}`
    and `$V` the variable, `${V:-default}` and `${V-default}` with a default."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        dollar, braced, default, bare = match.groups()
        if dollar:
            return "$"
        return env.get(braced or bare) or (default or "")

    return _VARIABLE.sub(one, value)


def _published_host_ips(compose: dict[str, Any]) -> dict[str, str]:
    """"service port" -> the host address it is published on ("" for every interface)."""
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                published[f"{name} {port.get('published')}"] = port.get("host_ip", "")
                continue
            text = str(port).split("/")[0]
            host, _, rest = text.rpartition("]:") if text.startswith("[") else ("", "", "")
            if host:
                published[f"{name} {rest}"] = host.lstrip("[")
                continue
            parts = text.split(":")
            ip = parts[0] if len(parts) == 3 else ""
            published[f"{name} {':'.join(parts[-2:])}"] = ip
    return published


def test_compose_publishes_every_port_on_loopback_only(compose: dict[str, Any]) -> None:
    """Kafka is plaintext and Grafana anonymous: nothing is reachable from the network
    unless CONSENTWATCH_BIND_ADDRESS says so."""
    published = _published_host_ips(_interpolate(compose, {}))
    assert {"kafka 29092:29092", "grafana 3000:3000", "prometheus 9090:9090"} <= set(published)
    exposed = {where: ip for where, ip in published.items()
               if ip not in {"127.0.0.1", "::1", "localhost"}}
    assert exposed == {}


def test_compose_bind_address_is_one_variable(compose: dict[str, Any]) -> None:
    chosen = _interpolate(compose, {"CONSENTWATCH_BIND_ADDRESS": "192.0.2.7"})
    assert set(_published_host_ips(chosen).values()) == {"192.0.2.7"}
    assert list(_compose_validator().iter_errors(chosen)) == []
    # `$$` stays a literal `$` (the ledger's shell command)
    assert "$(cat /run/secrets/postgres_password)" in chosen["services"]["ledger"]["entrypoint"][2]


def test_loopback_check_catches_a_port_on_every_interface(compose: dict[str, Any]) -> None:
    for port in ("3000:3000", "0.0.0.0:3000:3000", {"target": 3000, "published": 3000}):
        broken = json.loads(json.dumps(compose))
        broken["services"]["grafana"]["ports"] = [port]
        published = _published_host_ips(_interpolate(broken, {}))
        assert published["grafana 3000:3000" if not isinstance(port, dict)
                         else "grafana 3000"] in {"", "0.0.0.0"}


def _bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each bind mount; named volumes are not files of the repo."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            if source.startswith((".", "/", "~")):
                yield source, target
        elif volume.get("type") == "bind":
            yield volume["source"], volume["target"]


def _repo_path(relative: str) -> Path:
    path = (COMPOSE_DIR / relative).resolve()
    assert path.is_relative_to(ROOT), f"{relative} points outside the repository"
    return path


def test_every_file_compose_mounts_or_builds_from_exists(compose: dict[str, Any]) -> None:
    missing = []
    for name, service in compose["services"].items():
        for source, _ in _bind_mounts(service):
            if not _repo_path(source).exists():
                missing.append(f"{name}: volume {source}")
        build = service.get("build")
        if build:
            context = _repo_path(build["context"] if isinstance(build, dict) else build)
            if not context.is_dir():
                missing.append(f"{name}: build context {context}")
            if isinstance(build, dict) and not (context / build.get("dockerfile",
                                                                    "Dockerfile")).is_file():
                missing.append(f"{name}: Dockerfile {build.get('dockerfile')}")
        for env_file in service.get("env_file", []):
            if not _repo_path(env_file).is_file():
                missing.append(f"{name}: env_file {env_file}")
    for config_name, config in compose.get("configs", {}).items():
        if "file" in config and not _repo_path(config["file"]).is_file():
            missing.append(f"config {config_name}: {config['file']}")
    assert missing == []


def test_compose_secrets_are_ignored_files_that_init_secrets_creates(
        compose: dict[str, Any], tmp_path: Path) -> None:
    """Secrets are not in the repository: init-secrets.sh makes exactly the mounted files."""
    secret_files = {name: _repo_path(s["file"]) for name, s in compose["secrets"].items()}
    secrets_dir = COMPOSE_DIR / "secrets"
    assert all(path.parent == secrets_dir for path in secret_files.values())
    assert "deploy/compose/secrets/*" in (ROOT / ".gitignore").read_text().splitlines()
    result = subprocess.run([str(COMPOSE_DIR / "init-secrets.sh"), str(tmp_path)],
                            env={"PATH": "/usr/bin:/bin",
                                 "CONSENTWATCH": str(Path(sys.executable).parent
                                                     / "consentwatch")},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for name, path in secret_files.items():
        made = tmp_path / path.name
        assert made.is_file() and made.stat().st_size > 0, name
        # compose bind-mounts file secrets as they are; the containers' users must read them
        assert made.stat().st_mode & stat.S_IROTH, name
    from streams.evidence.keys import load_private_key
    load_private_key(tmp_path / "consentwatch.key")
    # a second run keeps what exists
    before = (tmp_path / "postgres-password").read_bytes()
    subprocess.run([str(COMPOSE_DIR / "init-secrets.sh"), str(tmp_path)], check=True,
                   capture_output=True, timeout=60,
                   env={"PATH": "/usr/bin:/bin",
                        "CONSENTWATCH": str(Path(sys.executable).parent / "consentwatch")})
    assert (tmp_path / "postgres-password").read_bytes() == before


def test_compose_runs_the_projects_kafka_version(compose: dict[str, Any]) -> None:
    pom = (ROOT / "deploy" / "kafka" / "pom.xml").read_text(encoding="utf-8")
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert version
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{version.group(1)}"


def test_compose_seed_events_are_the_specs(compose: dict[str, Any]) -> None:
    shipped = COMPOSE_DIR / "data" / "seed-scenario.jsonl"
    spec = SPEC_DIR / "examples" / "seed-scenario" / "events.jsonl"
    assert shipped.read_bytes() == spec.read_bytes()


def _config_targets(service: dict[str, Any], configs: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository file, for a service's configs."""
    return {entry["target"]: _repo_path(configs[entry["source"]]["file"])
            for entry in service.get("configs", [])}


def test_compose_prometheus_config_passes_promtool(compose: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """Lay the files out as the container sees them, then `promtool check config`."""
    service = compose["services"]["prometheus"]
    files = _config_targets(service, compose["configs"])
    for target, source in files.items():
        staged = tmp_path / target.lstrip("/")
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, staged)
    flag = next(a for a in service["command"] if a.startswith("--config.file="))
    config_path = tmp_path / flag.split("=", 1)[1].lstrip("/")
    result = subprocess.run(["promtool", "check", "config", str(config_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rules found" not in result.stdout  # the project's rules were loaded
    config = _load_yaml(config_path)
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "consentwatch")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    workers = {name for name, s in compose["services"].items()
               if s.get("command", [None])[0] == "worker"}
    assert len(workers) >= 2
    assert targets == {f"{name}:{compose['services'][name]['environment']['CONSENTWATCH_WEB_PORT']}"
                       for name in workers}


def test_grafana_provisioning_finds_the_mounted_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict((target, _repo_path(source)) for source, target in _bind_mounts(grafana))
    provisioning = mounts["/etc/grafana/provisioning"]
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
                 for p in _load_yaml(f).get("providers", [])]
    assert providers, "no dashboard provider under deploy/grafana/provisioning/dashboards"
    for provider in providers:
        folder = mounts.get(provider["options"]["path"])
        assert folder is not None, f"{provider['options']['path']} is not mounted"
        assert sorted(folder.glob("*.json")), f"no dashboards in {folder}"
    sources = [d for f in sorted((provisioning / "datasources").glob("*.y*ml"))
               for d in _load_yaml(f).get("datasources", [])]
    prometheus = next(d for d in sources if d["type"] == "prometheus")
    assert re.fullmatch(r"http://prometheus:9090/?", prometheus["url"]), prometheus["url"]


def test_grafana_reaches_the_ledger_database_compose_runs(compose: dict[str, Any]) -> None:
    """Every setting the ledger datasource reads is set, to the postgres service's
    database, user and password (the secret, read by the entrypoint)."""
    grafana = compose["services"]["grafana"]
    mounts = dict((target, _repo_path(source)) for source, target in _bind_mounts(grafana))
    ledger_yml = mounts["/etc/grafana/provisioning"] / "datasources" / "ledger.yml"
    (source,) = _load_yaml(ledger_yml)["datasources"]
    read = set(re.findall(r"\$\{(\w+)\}", ledger_yml.read_text(encoding="utf-8")))
    env = grafana["environment"]
    entrypoint = " ".join(grafana["entrypoint"])
    from_secret = "CONSENTWATCH_LEDGER_DB_PASSWORD=\"$$(cat /run/secrets/postgres_password)\""
    assert from_secret in entrypoint and entrypoint.endswith("exec /run.sh")
    assert "postgres_password" in grafana["secrets"]
    assert read == set(env) - {k for k in env if k.startswith("GF_")} | {
        "CONSENTWATCH_LEDGER_DB_PASSWORD"}
    postgres = compose["services"]["postgres"]["environment"]
    assert env["CONSENTWATCH_LEDGER_DB_HOST"] == "postgres:5432"
    assert env["CONSENTWATCH_LEDGER_DB_NAME"] == postgres["POSTGRES_DB"]
    assert env["CONSENTWATCH_LEDGER_DB_USER"] == postgres["POSTGRES_USER"]
    ledger_url = compose["services"]["ledger"]["command"][-1]
    assert ledger_url == (f"postgresql://{env['CONSENTWATCH_LEDGER_DB_USER']}@"
                          f"{env['CONSENTWATCH_LEDGER_DB_HOST']}/"
                          f"{env['CONSENTWATCH_LEDGER_DB_NAME']}")
    assert source["type"] == "grafana-postgresql-datasource"
    assert "postgres" in grafana["depends_on"]


# --- the image -------------------------------------------------------------------------


def test_image_is_built_from_files_of_the_repository_and_runs_unprivileged() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    sources = [word for line in text.splitlines() if line.startswith("COPY ")
               and "--from=" not in line for word in shlex.split(line)[1:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
    kept = [line[1:].rstrip("/") for line in
            (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
            if line.startswith("!")]
    assert sorted(kept) == sorted(s.rstrip("/.") or s for s in sources)
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r'^ENTRYPOINT \["consentwatch"\]', text, re.MULTILINE)
    assert text.startswith("# syntax=") and "FROM python:3.11-slim" in text


def test_the_files_the_image_copies_build_the_consentwatch_wheel(tmp_path: Path) -> None:
    """What `pip install .` sees in the image: only the files the Dockerfile copies."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, target = shlex.split(line)[1:]
            for source in sources:
                destination = tmp_path / "src" / target / (Path(source).name
                                                            if target.endswith("/") else "")
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, destination,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(ROOT / source, destination)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                             "-w", str(tmp_path / "out"), str(tmp_path / "src")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / "out").glob("consentwatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("streams/_schemas/") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "consentwatch = streams.cli.app:run" in entry_points


# --- Kubernetes ------------------------------------------------------------------------


def _tool(script: str) -> str:
    result = subprocess.run([str(K8S / script)], capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay, rendered by the pinned kustomize."""
    kustomize = _tool("install-kustomize.sh")
    out = {}
    for overlay in OVERLAYS:
        result = subprocess.run([kustomize, "build", str(K8S / "overlays" / overlay)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return out


def test_there_are_dev_and_production_overlays() -> None:
    assert {"dev", "production"} <= set(OVERLAYS)


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)}"
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_manifests_are_valid_kubernetes(rendered: dict[str, Any], overlay: str) -> None:
    problems = []
    for doc in rendered[overlay]:
        if doc["apiVersion"] == CRD_GROUP:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert problems == []
    assert not [d for d in rendered[overlay] if d["kind"] == "Secret"], \
        "secrets are created outside the repository"


def test_kubernetes_validation_catches_mistakes(rendered: dict[str, Any]) -> None:
    sts = json.loads(json.dumps(_one(rendered["production"], "StatefulSet")))
    sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES_VERSION, strict=True)


def _crd_validate(docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", _tool("install-crd-validator.sh")], input=json.dumps(docs),
                          capture_output=True, text=True, timeout=60, check=False)


def test_prometheus_operator_resources_match_their_crds(rendered: dict[str, Any]) -> None:
    docs = [d for overlay in OVERLAYS for d in rendered[overlay]
            if d["apiVersion"] == CRD_GROUP]
    assert sorted({d["kind"] for d in docs}) == ["PrometheusRule", "ServiceMonitor"]
    result = _crd_validate(docs)
    assert result.returncode == 0, result.stdout + result.stderr
    for kind, spec in (("PrometheusRule", {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}),
                       ("ServiceMonitor", {"selector": {}, "endpoints": [{"interval": "15 s"}]})):
        broken = {**next(d for d in docs if d["kind"] == kind), "spec": spec}
        assert _crd_validate([broken]).returncode == 1, kind


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheusrule_carries_exactly_the_alerting_rules(rendered: dict[str, Any],
                                                           overlay: str) -> None:
    rule = _one(rendered[overlay], "PrometheusRule")
    assert rule["spec"] == {"groups": _load_yaml(ALERTS)["groups"]}


def test_committed_prometheusrule_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(K8S / "prometheusrule.py"), "--check"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_prometheusrule_runbook_base_is_a_setting(tmp_path: Path) -> None:
    """The committed resource links to runbook files of the repository; a deployment
    renders it with the URL its copy of the repository is published at."""
    committed = _load_yaml(K8S / "base" / "prometheusrule.yaml")
    urls = [r["annotations"]["runbook_url"] for g in committed["spec"]["groups"]
            for r in g["rules"] if "alert" in r]
    assert urls and all((ROOT / url).is_file() for url in urls), urls
    out = tmp_path / "prometheusrule.yaml"
    base = "https://git.example.com/org/consentwatch/blob/main/"
    result = subprocess.run([sys.executable, str(K8S / "prometheusrule.py"), "--runbook-base",
                             base, "--out", str(out)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    published = _load_yaml(out)
    assert [r["annotations"]["runbook_url"] for g in published["spec"]["groups"]
            for r in g["rules"] if "alert" in r] == [base + url for url in urls]
    assert published["metadata"] == committed["metadata"]


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_keep_state_on_volumes_and_are_probed_and_scraped(rendered: dict[str, Any],
                                                                  overlay: str) -> None:
    docs = rendered[overlay]
    config = _one(docs, "ConfigMap", "consentwatch-config")["data"]
    sts = _one(docs, "StatefulSet")
    pod = sts["spec"]["template"]
    container = pod["spec"]["containers"][0]
    # state: a claim per pod, mounted where the worker keeps it
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert any(mounts.get(c) == config["CONSENTWATCH_DATA_DIR"] for c in claims)
    # probes hit the port the worker listens on, on all interfaces
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["web"] == int(config["CONSENTWATCH_WEB_PORT"])
    assert config["CONSENTWATCH_WEB_HOST"] == "0.0.0.0"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "web", probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/metrics"
    # the PDB, the Service and the ServiceMonitor all find these pods
    pod_labels = pod["metadata"]["labels"]
    pdb = _one(docs, "PodDisruptionBudget")
    assert _labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    service = _one(docs, "Service", sts["spec"]["serviceName"])
    assert _labels_match(service["spec"]["selector"], pod_labels)
    monitor = _one(docs, "ServiceMonitor", "consentwatch-worker")
    assert _labels_match(monitor["spec"]["selector"]["matchLabels"],
                         service["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= \
        {p["name"] for p in service["spec"]["ports"]}
    # the job is named as the alerting rules expect: up{job="consentwatch"}
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "consentwatch"
    # secrets come from Secrets, by reference
    ledger = _one(docs, "Deployment", "consentwatch-ledger")
    assert ledger["spec"]["replicas"] == 1
    volumes = ledger["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("secret", {}).get("secretName") == "consentwatch-signing-key"
               for v in volumes)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_creates_the_namespace_it_deploys_into(rendered: dict[str, Any],
                                                            overlay: str) -> None:
    docs = rendered[overlay]
    namespace = _one(docs, "Namespace")["metadata"]["name"]
    placed = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert placed == {namespace}
    assert docs[0]["kind"] == "Namespace"  # applied before what it holds


def _kustomization(path: Path) -> dict[str, Any]:
    data = _load_yaml(path / "kustomization.yaml")
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_the_image_the_overlay_names(rendered: dict[str, Any],
                                                          overlay: str) -> None:
    (image,) = _kustomization(K8S / "overlays" / overlay)["images"]
    assert image["name"] == "consentwatch"
    expected = f"{image['newName']}:{image['newTag']}"
    images = {c["image"] for d in rendered[overlay]
              if d["kind"] in {"StatefulSet", "Deployment", "Job"}
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {expected}


def test_the_image_build_is_documented_with_the_dockerfile_and_the_dev_tag(
        compose: dict[str, Any]) -> None:
    """The dev overlay runs the image the documented build makes (as compose does)."""
    dev = _kustomization(K8S / "overlays" / "dev")["images"][0]
    dev_image = f"{dev['newName']}:{dev['newTag']}"
    build = f"docker build -f deploy/docker/Dockerfile -t {dev_image} ."
    for doc in (K8S / "README.md", K8S / "base" / "kustomization.yaml",
                ROOT / "docs" / "operations.md"):
        assert build in doc.read_text(encoding="utf-8"), doc
    assert DOCKERFILE.is_file()
    assert compose["x-consentwatch-image"]["image"] == dev_image
    production = _kustomization(K8S / "overlays" / "production")["images"][0]
    pushed = f"docker push {production['newName']}:{production['newTag']}"
    assert pushed in (K8S / "README.md").read_text(encoding="utf-8")


def test_production_takes_kafka_credentials_from_a_secret(rendered: dict[str, Any]) -> None:
    docs = rendered["production"]
    assert _one(docs, "ConfigMap")["data"]["CONSENTWATCH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    for workload in [d for d in docs if d["kind"] in {"StatefulSet", "Deployment", "Job"}]:
        env = {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]
               .get("env", [])}
        if workload["metadata"]["name"] == "consentwatch-desk":  # it never talks to Kafka
            assert not [name for name in env if name.startswith("CONSENTWATCH_KAFKA_")]
            continue
        for name in ("CONSENTWATCH_KAFKA_SASL_USERNAME", "CONSENTWATCH_KAFKA_SASL_PASSWORD"):
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "consentwatch-kafka", workload["metadata"]["name"]


def _desk_bind(args: list[str]) -> tuple[str, int]:
    """The desk's listening address from its `desk serve` command line, checked as the
    desk checks it: a non-loopback address only with TLS or behind an https proxy."""
    assert args[:2] == ["desk", "serve"], args
    host, _, port = args[args.index("--bind") + 1].rpartition(":")
    assert "--behind-https-proxy" in args or "--tls-cert" in args, args
    return host, int(port)


def _scrape_targets(config: Path, job: str) -> set[str]:
    (found,) = [j for j in _load_yaml(config)["scrape_configs"] if j["job_name"] == job]
    assert found.get("metrics_path", "/metrics") == "/metrics"
    return {t for sc in found["static_configs"] for t in sc["targets"]}


def test_compose_runs_the_desk_where_prometheus_scrapes_it(compose: dict[str, Any]) -> None:
    desk = compose["services"]["desk"]
    host, port = _desk_bind(desk["command"])
    assert host == "0.0.0.0"  # reachable from the other containers and the published port
    for config in (COMPOSE_DIR / "prometheus.yml", ROOT / "deploy/prometheus/prometheus.yml"):
        assert _scrape_targets(config, "consentwatch-desk") == {f"desk:{port}"}, config
    assert _published_host_ips(_interpolate(compose, {}))[f"desk {port}:{port}"] == \
        "127.0.0.1"
    assert desk["environment"]["CONSENTWATCH_LEDGER"] == \
        compose["services"]["ledger"]["command"][-1]
    assert "postgres_password" in desk["secrets"]
    assert desk["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert f"127.0.0.1:{port}/healthz" in " ".join(desk["healthcheck"]["test"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_desk_is_served_probed_and_scraped_as_job_consentwatch_desk(
        rendered: dict[str, Any], overlay: str) -> None:
    docs = rendered[overlay]
    deployment = _one(docs, "Deployment", "consentwatch-desk")
    assert deployment["spec"]["replicas"] == 1  # sessions live in the process
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    host, port = _desk_bind(container["args"])
    assert host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    config = _one(docs, "ConfigMap", "consentwatch-config")["data"]
    assert config["CONSENTWATCH_LEDGER"].startswith("postgresql://")
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "consentwatch-ledger-db"
    service = _one(docs, "Service", "consentwatch-desk")
    assert _labels_match(service["spec"]["selector"], pod["metadata"]["labels"])
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http"}
    monitor = _one(docs, "ServiceMonitor", "consentwatch-desk")
    assert _labels_match(monitor["spec"]["selector"]["matchLabels"],
                         service["metadata"]["labels"])
    worker_monitor = _one(docs, "ServiceMonitor", "consentwatch-worker")
    assert not _labels_match(worker_monitor["spec"]["selector"]["matchLabels"],
                             service["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # The job: the Service's name unless jobLabel names one of its labels.
    job = service["metadata"]["labels"].get(monitor["spec"].get("jobLabel", ""),
                                            service["metadata"]["name"])
    assert job == "consentwatch-desk"


# --- the commands the containers run -------------------------------------------------------


def _walk(command: click.Command) -> Iterator[click.Command]:
    yield command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _walk(sub)


def _program_variables() -> set[str]:
    """Every environment variable consentwatch reads."""
    names = {BROKER_ENV, "CONSENTWATCH_KAFKA_CONFIG"}
    names |= {f"CONSENTWATCH_KAFKA_{f.upper()}" for f in KafkaConnection.__dataclass_fields__}
    for command in _walk(cli):
        for param in command.params:
            envvar = param.envvar
            names |= {envvar} if isinstance(envvar, str) else set(envvar or ())
    return names


def _parse(argv: list[str], env: dict[str, str], scratch: Path,
           monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse argv as `consentwatch` would, with the container's environment.

    Raises click.UsageError for an unknown command, option or bad value. Paths that
    exist only in the container (secrets, the data dir) are replaced by stand-ins of the
    right kind, so click's existence checks see something.
    """
    command: click.Command = cli
    ctx = click.Context(cli, info_name="consentwatch")
    args = list(argv)
    while isinstance(command, click.Group):
        assert args, f"{argv}: no subcommand"
        name, *args = args
        sub = command.get_command(ctx, name)
        assert sub is not None, f"{argv}: consentwatch has no command {name!r}"
        command = sub
        ctx = click.Context(command, info_name=name, parent=ctx)
    for key in [k for k in os.environ if k.startswith("CONSENTWATCH_")]:
        monkeypatch.delenv(key)
    path_params = {p.envvar: p for p in command.params
                   if isinstance(p.type, click.Path) and isinstance(p.envvar, str)}
    for key, value in env.items():
        kind = path_params[key].type if key in path_params else None
        if isinstance(kind, click.Path) and value.startswith("/"):
            monkeypatch.setenv(key, str(scratch if not kind.file_okay else scratch / "stand-in"))
        else:
            monkeypatch.setenv(key, value)
    command.make_context(ctx.info_name, args, parent=ctx.parent)


def _compose_command_lines(compose: dict[str, Any]) -> Iterator[tuple[str, list[str],
                                                                      dict[str, str]]]:
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        entrypoint = service.get("entrypoint", ["consentwatch"])
        argv = [*entrypoint, *service.get("command", [])]
        if argv[:2] == ["/bin/sh", "-c"]:  # sh -c 'exec consentwatch "$@"' consentwatch ARGS
            assert 'exec consentwatch "$$@"' in argv[2], name
            argv = argv[3:]
        assert argv[0] == "consentwatch", name
        mounts = {target: _repo_path(source) for source, target in _bind_mounts(service)}
        args = [next((str(source / arg[len(target) + 1:]) for target, source in mounts.items()
                      if arg.startswith(target + "/")), arg)
                for arg in argv[1:]]
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        yield f"compose {name}", args, env


def _k8s_command_lines(docs: list[dict[str, Any]]) -> Iterator[tuple[str, list[str],
                                                                    dict[str, str]]]:
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    for doc in docs:
        if doc["kind"] not in {"StatefulSet", "Deployment", "Job"}:
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                env |= maps[source["configMapRef"]["name"]]
            for item in container.get("env", []):
                env[item["name"]] = item.get("value", "secret")
            unresolved: list[str] = []

            def expand(match: re.Match[str], env: dict[str, str] = env,
                       unresolved: list[str] = unresolved) -> str:
                if match.group(1) not in env:
                    unresolved.append(match.group(1))
                return env.get(match.group(1), match.group(0))

            args = [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", expand, a)
                    for a in container.get("args", [])]
            assert not unresolved, f"{doc['metadata']['name']}: {unresolved}"
            assert "command" not in container  # the image's entrypoint is consentwatch
            yield f"{doc['kind']}/{doc['metadata']['name']}", args, env


def test_every_consentwatch_command_line_parses(compose: dict[str, Any],
                                                rendered: dict[str, Any], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [*_compose_command_lines(compose),
             *(line for overlay in OVERLAYS for line in _k8s_command_lines(rendered[overlay]))]
    assert len(lines) >= 9
    (tmp_path / "stand-in").write_text("x")
    failures = []
    for where, args, env in lines:
        try:
            with monkeypatch.context() as patch:
                _parse(args, env, tmp_path, patch)
        except (click.UsageError, AssertionError) as exc:
            failures.append(f"{where}: consentwatch {shlex.join(args)}: "
                            f"{str(exc).splitlines()[0]}")
    assert not failures, "\n".join(failures)


def test_the_command_line_check_catches_mistakes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for args in (["worker", "--partition", "4"], ["worker", "--store", "lmdb"],
                 ["topics", "delete"], ["worker", "--partitions", "$(UNSET)"]):
        with monkeypatch.context() as patch, pytest.raises((click.UsageError, AssertionError)):
            _parse(args, {}, tmp_path, patch)


def test_every_variable_the_deployments_set_is_read(compose: dict[str, Any],
                                                    rendered: dict[str, Any]) -> None:
    """A misspelt variable is silently ignored by the program: catch it here."""
    known = _program_variables()
    used: dict[str, str] = {}
    for where, _, env in _compose_command_lines(compose):
        used |= {k: where for k in env}
    for overlay in OVERLAYS:
        docs = rendered[overlay]
        expanded = {m for d in docs if d["kind"] in {"StatefulSet", "Deployment", "Job"}
                    for c in d["spec"]["template"]["spec"]["containers"]
                    for a in c.get("args", []) for m in re.findall(r"\$\((\w+)\)", a)}
        for where, _, env in _k8s_command_lines(docs):
            used |= {k: f"{overlay} {where}" for k in env if k not in expanded}
    unknown = {k: where for k, where in used.items()
               if k not in known and k not in NOT_PROGRAM_VARIABLES}
    assert not unknown, f"variables consentwatch does not read: {unknown}"


def test_every_command_the_operations_guide_cites_exists() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    code = re.findall(r"```.*?```|`[^`\n]+`", text, re.DOTALL)
    # `consentwatch` followed by one or two words, not as part of a name or `-n NAMESPACE`
    command_line = re.compile(r"(?<![\w./-])(?<!-n )consentwatch((?: [a-z][a-z-]*){1,2})")
    cited = {tuple(m.split()) for block in code for m in command_line.findall(block)}
    assert len(cited) >= 8
    missing = []
    for words in sorted(cited):
        command: click.Command = cli
        for word in words:
            if not isinstance(command, click.Group):
                break
            sub = command.get_command(click.Context(command), word)
            if sub is None:
                missing.append(" ".join(words))
                break
            command = sub
    assert not missing, f"docs/operations.md cites commands that do not exist: {missing}"
