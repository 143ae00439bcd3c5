"""deploy/kubernetes/: valid against the Kubernetes schemas (kubernetes-validate, offline), its
objects fit together, the mirror starts with the settings they give it, and the DaemonSet's
script writes hosts.toml files that send containerd to a real mirror."""

from __future__ import annotations

import os
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from tests.deploy.conftest import StartMirror
from tests.deploy.files import DEPLOY, REPOSITORY, Dockerfile, kubernetes_objects, settings_in
from tests.deploy.tools import run_tool
from tests.e2e.daemons import http_ok

MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
# The oldest Kubernetes release still maintained when these were written, and the newest the
# validator knows (its default).
VERSIONS = ["1.31.0", None]

Objects = dict[tuple[str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def objects() -> Objects:
    return kubernetes_objects()


def pod(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = objects[kind, name]["spec"]["template"]["spec"]
    return spec


def container(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    (only,) = pod(objects, kind, name)["containers"]
    assert isinstance(only, dict)
    return only


# What the Secrets the manifests expect would hold (they ship none: they are made with kubectl).
PEER_SECRET = "0123456789abcdef0123456789abcdef"
SECRETS = {
    ("mirror-peer", "secret"): PEER_SECRET,
    ("mirror-s3", "access-key-id"): "AKIAEXAMPLE",
    ("mirror-s3", "secret-access-key"): "example-secret-access-key",
}


def container_env(
    spec: dict[str, Any], pod_name: str, secrets: dict[tuple[str, str], str]
) -> dict[str, str]:
    """The container's environment as the kubelet makes it: values from the pod's name and
    from Secrets (`secrets[name, key]`), `$(VAR)` replaced by the variables defined before."""
    env: dict[str, str] = {}
    for entry in spec["env"]:
        source = entry.get("valueFrom")
        if source is None:
            value = str(entry["value"])
            for name, defined in env.items():
                value = value.replace(f"$({name})", defined)
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", source
            value = pod_name
        else:
            ref = source["secretKeyRef"]
            value = secrets[ref["name"], ref["key"]]
        env[entry["name"]] = value
    return env


def secrets_created(text: str) -> set[tuple[str, str]]:
    """(Secret, key) of each `--from-literal` in the `kubectl create secret generic` commands
    of `text` (a command may go on over lines ending in a backslash)."""
    made = set()
    for line in text.replace("\\\n", " ").splitlines():
        if not line.lstrip().startswith("kubectl create secret generic "):
            continue
        words = shlex.split(line)
        names = [w for n, w in enumerate(words[4:], 4) if w[0] != "-" and words[n - 1] != "-n"]
        literals = [w.removeprefix("--from-literal=") for w in words if "--from-literal=" in w]
        made |= {(names[0], literal.split("=", 1)[0]) for literal in literals}
    return made


def validate(paths: list[Path], version: str | None) -> tuple[int, str]:
    # --strict: a property the schema does not have (a misspelt field) is an error too.
    args = ["--strict", *(["-k", version] if version else []), *paths]
    result = run_tool("kubernetes-validate", *args)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(
    version: str | None, objects: Objects
) -> None:
    """Every object in every file passes strict schema validation."""
    status, output = validate(MANIFESTS, version)
    assert status == 0, output
    assert output.count(" passed for resource ") == len(objects), output


def test_kubernetes_validate_as_run_here_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """The same validation refuses a copy with `replica:` for `replicas:`."""
    text = (DEPLOY / "kubernetes" / "mirror.yaml").read_text()
    (tmp_path / "mirror.yaml").write_text(text.replace("  replicas:", "  replica:", 1))
    status, output = validate([tmp_path / "mirror.yaml"], None)
    assert status != 0 and "'replica' was unexpected" in output, output


def test_service_volume_and_probes_fit_the_mirror(objects: Objects) -> None:
    """The Service selects the mirror's pods and targets its port; liveness asks /healthz,
    readiness /readyz; no pod gets service-link variables, which would land among the mirror's
    MIRROR_* settings."""
    statefulset = objects["StatefulSet", "mirror"]
    service = objects["Service", statefulset["spec"]["serviceName"]]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    mirror = container(objects, "StatefulSet", "mirror")
    port_names = {p["name"] for p in mirror["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert mirror[probe]["httpGet"]["path"] == path
        assert mirror[probe]["httpGet"]["port"] in port_names
    assert mirror["startupProbe"]["httpGet"]["path"] == "/healthz"

    for kind, name in objects:
        if kind in ("StatefulSet", "Deployment", "DaemonSet"):
            assert pod(objects, kind, name)["enableServiceLinks"] is False, (kind, name)


def test_the_mirror_starts_with_the_configmap_settings(objects: Objects, tmp_path: Path) -> None:
    """With the image's environment, the pod's and the ConfigMap's file where the pod mounts it,
    the settings load: replica mode, the content in a bucket with the key from its Secret, the
    cache on the claim of each replica and bounded, the container ports (the admin port where
    the scrape annotation says), Redis at its Service."""
    mirror = container(objects, "StatefulSet", "mirror")
    pod_env = container_env(mirror, "mirror-0", SECRETS)
    env = {**Dockerfile().env, **pod_env}
    config_dir = Path(env["MIRROR_CONFIG"]).parent
    (mount,) = (m for m in mirror["volumeMounts"] if Path(m["mountPath"]) == config_dir)
    (volume,) = (
        v for v in pod(objects, "StatefulSet", "mirror")["volumes"] if v["name"] == mount["name"]
    )
    config_map = objects["ConfigMap", volume["configMap"]["name"]]
    config_file = tmp_path / "mirror.toml"
    config_file.write_text(config_map["data"][Path(env["MIRROR_CONFIG"]).name])

    settings = settings_in(env, {env["MIRROR_CONFIG"]: config_file})
    assert (settings.peer_url, settings.peer_secret) == (
        f"http://mirror-0.{objects['StatefulSet', 'mirror']['spec']['serviceName']}:5000",
        PEER_SECRET,
    )
    assert settings.admin_listen is not None
    admin_port = settings.admin_listen[1]
    assert [p["containerPort"] for p in mirror["ports"]] == [settings.port, admin_port]
    template = objects["StatefulSet", "mirror"]["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(admin_port)
    assert settings.storage is not None
    assert (settings.storage.url, settings.storage.endpoint, settings.storage.region) == (
        "s3://mirror-cache/cluster",
        "https://s3.example.internal",
        "eu-west-1",
    )
    assert (settings.storage.access_key_id, settings.storage.secret_access_key) == (
        SECRETS["mirror-s3", "access-key-id"],
        SECRETS["mirror-s3", "secret-access-key"],
    )
    assert settings.storage.max_size == 2 << 40
    assert settings.max_size is not None
    mounts = {m["mountPath"]: m["name"] for m in mirror["volumeMounts"]}
    claims = objects["StatefulSet", "mirror"]["spec"]["volumeClaimTemplates"]
    assert mounts[str(settings.cache_dir)] in {c["metadata"]["name"] for c in claims}
    assert settings.redis_url is not None
    redis_url = URL(settings.redis_url)
    redis_service = objects["Service", redis_url.host or ""]
    assert [p["port"] for p in redis_service["spec"]["ports"]] == [redis_url.port]
    assert redis_service["spec"]["selector"].items() <= (
        objects["Deployment", "mirror-redis"]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_each_replica_reaches_the_others_at_its_name_under_a_headless_service(
    objects: Objects,
) -> None:
    """Three replicas; each one's peer URL is its own pod name under the StatefulSet's Service,
    which is headless (a name per pod), selects the pods, published before they are ready, on
    the mirror's port; the peer secret comes from a Secret."""
    statefulset = objects["StatefulSet", "mirror"]
    assert statefulset["spec"]["replicas"] == 3
    service_name = statefulset["spec"]["serviceName"]
    service = objects["Service", service_name]["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    mirror = container(objects, "StatefulSet", "mirror")
    (http,) = (p for p in mirror["ports"] if p["name"] == "http")
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [
        (http["containerPort"], "http")
    ]
    for pod_name in ("mirror-0", "mirror-2"):
        env = container_env(mirror, pod_name, SECRETS)
        peer = URL(env["MIRROR_PEER_URL"])
        assert (peer.scheme, peer.host, peer.port) == (
            "http",
            f"{pod_name}.{service_name}",
            http["containerPort"],
        )
        assert env["MIRROR_PEER_SECRET"] == PEER_SECRET


def test_the_readme_creates_every_secret_the_replicas_read(objects: Objects) -> None:
    """The manifests ship no Secret: the README's `kubectl create secret` commands make each
    (Secret, key) the mirror's environment reads, the peer secret and the bucket's key."""
    mirror = container(objects, "StatefulSet", "mirror")
    read = {
        (ref["name"], ref["key"])
        for entry in mirror["env"]
        if (ref := entry.get("valueFrom", {}).get("secretKeyRef"))
    }
    assert read == set(SECRETS)
    assert not [kind for kind, _ in objects if kind == "Secret"]
    assert secrets_created((REPOSITORY / "README.md").read_text()) >= read


def daemonset_script(objects: Objects) -> tuple[str, dict[str, str]]:
    """The script the DaemonSet runs (from its ConfigMap, where the pod mounts it) and its env."""
    spec = pod(objects, "DaemonSet", "mirror-containerd-hosts")
    (writer,) = spec["containers"]
    shell, script_path = writer["command"]
    assert shell == "/bin/sh"
    (mount,) = (m for m in writer["volumeMounts"] if script_path.startswith(m["mountPath"] + "/"))
    (volume,) = (v for v in spec["volumes"] if v["name"] == mount["name"])
    config_map = objects["ConfigMap", volume["configMap"]["name"]]
    env = {e["name"]: e["value"] for e in writer["env"]}
    return config_map["data"][Path(script_path).name], env


def write_hosts(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_daemonset_points_containerd_at_the_mirror_service(
    objects: Objects, start_mirror: StartMirror, tmp_path: Path
) -> None:
    """The DaemonSet names the mirror's Service and port; its script, run here with that name
    resolving to a real mirror, writes one hosts.toml per registry the mirror serves: the mirror
    first (pull, resolve), the registry itself as the fallback; the address answers /v2/."""
    script, env = daemonset_script(objects)
    service = objects["Service", env["SERVICE"]]
    assert [str(p["port"]) for p in service["spec"]["ports"]] == [env["SERVICE_PORT"]]

    mirror = start_mirror(["mirror", "serve"], {})
    port = URL(mirror.url).port
    hosts_dir = tmp_path / "certs.d"
    # 127.0.0.1 stands for the Service's name: getent resolves it as it would a cluster name.
    run = {**env, "SERVICE": "127.0.0.1", "SERVICE_PORT": str(port), "HOSTS_DIR": str(hosts_dir)}
    result = write_hosts(script, {**run, "INTERVAL": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"containerd pulls through {mirror.url}\n"

    config = objects["ConfigMap", "mirror-config"]["data"]["mirror.toml"]
    upstreams = tomllib.loads(config)["upstreams"]
    assert sorted(p.name for p in hosts_dir.iterdir()) == sorted(upstreams)
    for registry, upstream in upstreams.items():
        assert sorted(p.name for p in (hosts_dir / registry).iterdir()) == ["hosts.toml"]
        hosts = tomllib.loads((hosts_dir / registry / "hosts.toml").read_text())
        assert hosts == {
            "server": upstream["url"],
            "host": {mirror.url: {"capabilities": ["pull", "resolve"]}},
        }
    assert http_ok(f"{mirror.url}/v2/")


def test_daemonset_script_fails_loudly_when_the_service_does_not_resolve(
    objects: Objects, tmp_path: Path
) -> None:
    """A name that does not resolve writes nothing and says so (the DaemonSet retries)."""
    script, env = daemonset_script(objects)
    hosts_dir = tmp_path / "certs.d"
    run = {**env, "SERVICE": "no-such-service.invalid", "HOSTS_DIR": str(hosts_dir)}
    result = write_hosts(script, {**run, "INTERVAL": "0"})
    assert result.returncode != 0
    assert "cannot resolve no-such-service.invalid" in result.stderr
    assert not hosts_dir.exists()
