"""deploy/kubernetes: the manifests parse and agree with each other and with the server.

The ``single`` variant is rendered here (resources plus its configMapGenerator); the
overlays (``git-sync``, ``replicas-redis``) are rendered by the real kustomize in
``kubectl kustomize`` and skipped where kubectl is not installed. Each rendered variant is
cross-checked: selectors match pod labels, the container's flags parse with the real
``cronmetrics serve`` and agree with its port, probes and mounts, every volume exists,
the mounted config loads with ``load_config`` and the mounted job files validate.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
import yaml

from cronmetrics.cli.main import serve
from cronmetrics.config import load_config
from cronmetrics.jobs.repository import load_directory

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "kubernetes"
VARIANTS = ("single", "git-sync", "replicas-redis")
SERVER = {"app.kubernetes.io/name": "cronmetrics", "app.kubernetes.io/component": "server"}


# -- rendering -----------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render_single() -> list[dict[str, Any]]:
    """What kustomize makes of ``single``: its resources plus the generated ConfigMaps."""
    root = K8S / "single"
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    docs = [d for name in kustomization["resources"] for d in load_all(root / name)]
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
    for generator in kustomization["configMapGenerator"]:
        data = {Path(f).name: (root / f).read_text() for f in generator["files"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": generator["name"]}, "data": data})  # fmt: skip
    image = kustomization["images"][0]
    for doc in docs:
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if c["image"] == image["name"]:
                c["image"] = f"{image['newName']}:{image['newTag']}"
    return docs


def kustomize(variant: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the kustomize overlays are not rendered")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / variant)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(params=VARIANTS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    variant = request.param
    return variant, render_single() if variant == "single" else kustomize(variant)


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "cronmetrics")


def serve_params(args: list[str]) -> dict[str, Any]:
    """The container's arguments as the real ``cronmetrics serve`` parses them."""
    assert args[0] == "serve"
    ctx = serve.make_context("serve", list(args[1:]))
    return dict(ctx.params)


def mount_of(container: dict[str, Any], path: PurePosixPath) -> dict[str, Any]:
    """The volume mount a path lives on (the deepest mount path above it)."""
    mounts = [
        m for m in container["volumeMounts"] if path.is_relative_to(PurePosixPath(m["mountPath"]))
    ]
    assert mounts, f"{path} is on no volume of {container['name']}"
    return max(mounts, key=lambda m: len(m["mountPath"]))


def volume(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == name)


# -- every variant -------------------------------------------------------------------------


def test_every_manifest_file_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 12
    for path in files:
        assert load_all(path), path


def test_kustomizations_name_files_that_exist() -> None:
    for kfile in K8S.rglob("kustomization.yaml"):
        data = yaml.safe_load(kfile.read_text())
        names = list(data.get("resources", []))
        names += [p["path"] for p in data.get("patches", []) if "path" in p]
        names += [f for g in data.get("configMapGenerator", []) for f in g["files"]]
        for name in names:
            assert (kfile.parent / name).exists(), f"{kfile}: {name}"


def test_selectors_match_pod_labels(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    deployment = one(docs, "Deployment", "cronmetrics")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert SERVER.items() <= pod_labels.items()
    service = one(docs, "Service", "cronmetrics")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for other in (d for d in docs if d["kind"] in ("StatefulSet",)):
        labels = other["spec"]["template"]["metadata"]["labels"]
        assert not service["spec"]["selector"].items() <= labels.items(), "Service selects Redis"


def test_ports_and_probes_match_the_server(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    deployment = one(docs, "Deployment", "cronmetrics")
    container = server_container(deployment)
    params = serve_params(container["args"])
    port = int(params["bind"].rpartition(":")[2])
    (http,) = [p for p in container["ports"] if p["name"] == "http"]
    assert http["containerPort"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/deep", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    service = one(docs, "Service", "cronmetrics")
    (sport,) = service["spec"]["ports"]
    assert sport["targetPort"] == "http" and sport["port"] == port


def test_volumes_exist_and_hold_what_the_flags_say(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    variant, docs = rendered
    deployment = one(docs, "Deployment", "cronmetrics")
    spec = deployment["spec"]["template"]["spec"]
    names = {v["name"] for v in spec["volumes"]}
    used = set()
    for container in spec["containers"] + spec.get("initContainers", []):
        for mount in container["volumeMounts"]:
            assert mount["name"] in names, f"{container['name']}: no volume {mount['name']}"
            used.add(mount["name"])
    assert used == names, f"unused volumes: {names - used}"
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for v in spec["volumes"]:
        if "configMap" in v:
            assert v["configMap"]["name"] in config_maps
        if "persistentVolumeClaim" in v:
            assert v["persistentVolumeClaim"]["claimName"] in claims
    assert set(config_maps) <= {
        v["configMap"]["name"]
        for d in docs
        for v in d.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", [])
        if "configMap" in v
    }, "a ConfigMap no pod mounts"

    container = server_container(deployment)
    params = serve_params(container["args"])
    # the config file: on a ConfigMap directory mount (subPath mounts never update)
    config_path = PurePosixPath(str(params["config_path"]))
    mount = mount_of(container, config_path)
    assert "subPath" not in mount and mount.get("readOnly") is True
    data = config_maps[volume(deployment, mount["name"])["configMap"]["name"]]["data"]
    text = data[str(config_path.relative_to(mount["mountPath"]))]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text)
    config = load_config(
        config_file, jobs_dir=params["jobs_dir"], state_dir=params["state_dir"], bind=params["bind"]
    )
    assert config.auth.tokens, "the server refuses to start without tokens"
    # the state dir: a PVC with one replica and Recreate, else (Redis) an emptyDir
    state = volume(deployment, mount_of(container, PurePosixPath(str(params["state_dir"])))["name"])
    if "persistentVolumeClaim" in state:
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
    else:
        assert variant == "replicas-redis" and "emptyDir" in state
    # the jobs dir: a ConfigMap of valid job files, or the git-sync worktree
    jobs_dir = PurePosixPath(str(params["jobs_dir"]))
    jobs_mount = mount_of(container, jobs_dir)
    assert jobs_mount.get("readOnly") is True
    jobs_volume = volume(deployment, jobs_mount["name"])
    if "configMap" in jobs_volume:
        assert jobs_dir == PurePosixPath(jobs_mount["mountPath"])
        target = tmp_path / "jobs.d"
        target.mkdir()
        for name, body in config_maps[jobs_volume["configMap"]["name"]]["data"].items():
            (target / name).write_text(body)
        result = load_directory(target)
        assert not result.problems and result.jobs
    else:
        check_git_sync(spec, jobs_dir, jobs_mount)


def check_git_sync(spec: dict[str, Any], jobs_dir: PurePosixPath, mount: dict[str, Any]) -> None:
    sidecar = next(c for c in spec["containers"] if c["name"] == "git-sync")
    init = next(c for c in spec["initContainers"] if c["name"] == "git-sync-init")
    assert init["args"] == [*sidecar["args"], "--one-time"], "init clone = the sidecar's sync"
    flags = dict(a.removeprefix("--").partition("=")[::2] for a in sidecar["args"])
    root = PurePosixPath(flags["root"])
    assert jobs_dir == root / flags["link"] / "jobs.d"
    assert PurePosixPath(mount["mountPath"]) == root
    git_mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == str(root))
    assert git_mount["name"] == mount["name"] and not git_mount.get("readOnly")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == mount["name"])


def test_pods_run_as_the_images_user(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert user is not None
    pod = one(docs, "Deployment", "cronmetrics")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(user.group(1))
    assert pod["securityContext"]["fsGroup"] == int(user.group(2))
    container = server_container(one(docs, "Deployment", "cronmetrics"))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    tmp = mount_of(container, PurePosixPath("/tmp/x"))  # gunicorn's heartbeat files
    assert "emptyDir" in volume(one(docs, "Deployment", "cronmetrics"), tmp["name"])


# -- replicas with Redis -------------------------------------------------------------------


def test_replicas_share_a_durable_redis() -> None:
    docs = kustomize("replicas-redis")
    deployment = one(docs, "Deployment", "cronmetrics")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(docs, "PodDisruptionBudget")
    assert 1 <= pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]

    config = yaml.safe_load(one(docs, "ConfigMap", "cronmetrics-config")["data"]["config.yaml"])
    store = re.fullmatch(r"redis://([^:/]+):(\d+)/\d+", config["store"])
    assert store, config["store"]
    service = one(docs, "Service", store.group(1))
    (port,) = service["spec"]["ports"]
    assert port["port"] == int(store.group(2))
    redis = one(docs, "StatefulSet", "cronmetrics-redis")
    pod_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert port["targetPort"] in [p["name"] for p in container["ports"]]
    conf_path = PurePosixPath(container["args"][1])
    conf_mount = mount_of(container, conf_path)
    conf_volume = next(
        v for v in redis["spec"]["template"]["spec"]["volumes"] if v["name"] == conf_mount["name"]
    )
    conf = one(docs, "ConfigMap", conf_volume["configMap"]["name"])["data"][conf_path.name]
    assert re.search(r"^appendfsync always$", conf, re.MULTILINE)
    assert re.search(r"^appendonly yes$", conf, re.MULTILINE)
    data_dir = re.search(r"^dir (\S+)$", conf, re.MULTILINE)
    assert data_dir is not None
    data_mount = mount_of(container, PurePosixPath(data_dir.group(1)))
    templates = [t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]]
    assert data_mount["name"] in templates
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def resp(sock: socket.socket, *words: str) -> bytes:
    sock.sendall(b"".join([f"*{len(words)}\r\n".encode()] + [
        f"${len(w)}\r\n{w}\r\n".encode() for w in words]))  # fmt: skip
    time.sleep(0.05)
    return sock.recv(65536)


@pytest.fixture
def redis_server(tmp_path: Path, redis_server_bin: str) -> Iterator[int]:
    """A real redis-server started from deploy's redis.conf (port and dir moved to tmp)."""
    binary = redis_server_bin
    from liveserver import free_port, wait_for

    port = free_port()
    text = (K8S / "replicas-redis" / "redis.conf").read_text()
    text, moved = re.subn(r"^dir /data$", f"dir {tmp_path}", text, flags=re.MULTILINE)
    assert moved == 1  # Redis applies `dir` while reading the file: the volume must exist
    conf = tmp_path / "redis.conf"
    conf.write_text(text)
    args = [binary, str(conf), "--port", str(port), "--bind", "127.0.0.1"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _connects(port), "redis-server", timeout=20, process=process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=20)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_the_redis_conf_is_accepted_by_redis_and_fsyncs_every_write(redis_server: int) -> None:
    with socket.create_connection(("127.0.0.1", redis_server), timeout=5) as sock:
        assert b"always" in resp(sock, "CONFIG", "GET", "appendfsync")
        assert b"yes" in resp(sock, "CONFIG", "GET", "appendonly")
        assert b"noeviction" in resp(sock, "CONFIG", "GET", "maxmemory-policy")


# -- monitoring ----------------------------------------------------------------------------


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_prometheusrule", K8S / "make_prometheusrule.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_is_generated_from_docs_alerts() -> None:
    done = subprocess.run(
        [sys.executable, str(K8S / "make_prometheusrule.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rule = yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text())
    alerts = yaml.safe_load((REPO / "docs" / "alerts.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == alerts  # the same groups, rules, expressions and templates


def test_prometheusrule_check_fails_when_the_alerts_change(tmp_path: Path) -> None:
    module = _generator()
    alerts = (REPO / "docs" / "alerts.yaml").read_text()
    changed = alerts.replace("for: 1m", "for: 2m", 1)
    assert module.render(changed) != (K8S / "monitoring" / "prometheusrule.yaml").read_text()
    assert yaml.safe_load(module.render(changed))["spec"] == yaml.safe_load(changed)


def test_prometheusrule_spec_passes_promtool(promtool: str, tmp_path: Path) -> None:
    rule = yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text())
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_servicemonitor_scrapes_the_service_port() -> None:
    monitor = one(load_all(K8S / "monitoring" / "servicemonitor.yaml"), "ServiceMonitor")
    service = one(load_all(K8S / "single" / "service.yaml"), "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    rule = yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text())
    assert rule["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]


def test_click_rejects_what_the_manifests_must_not_say() -> None:
    """The flag check above can fail: an unknown flag is an error, not ignored."""
    with pytest.raises(click.NoSuchOption):
        serve_params(["serve", "--jobsdir=/x"])
