"""The Helm chart: strict lint, renders with defaults and with every toggle, what the objects say."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from tool_helpers import run

from ship_helpers import ALL_TOGGLES, CHART, RenderChart, by_kind, one, strict_load_all

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


@pytest.mark.parametrize("values", [(), ALL_TOGGLES], ids=["defaults", "all-toggles"])
def test_helm_lint_strict_passes(helm: Path, values: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for value in values:
        args += ["--set", value]
    done = run(helm, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_default_render_has_the_core_objects_and_no_monitoring(render_chart: RenderChart) -> None:
    started = time.perf_counter()
    documents = render_chart()
    elapsed = time.perf_counter() - started
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds == sorted(
        ["ServiceAccount"] * 2
        + ["ClusterRole"] * 4  # the operator's, the agent's, and the two aggregated into view/edit/admin
        + ["ClusterRoleBinding"] * 2
        + ["Role", "RoleBinding"]  # the operator's ConfigMap of measured runs, in its own namespace
        + ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * 4
        + ["Service"] * 2
        + ["NetworkPolicy"] * 2
        + ["Deployment", "DaemonSet"]
        + ["CustomResourceDefinition"] * 3  # templates, so that helm upgrade upgrades them
    )
    cluster_scoped = ("Cluster", "ValidatingAdmissionPolicy", "CustomResourceDefinition")
    assert all(
        doc["metadata"].get("namespace") == "vram-system"
        for doc in documents
        if not doc["kind"].startswith(cluster_scoped)
    )
    assert not any("namespace" in doc["metadata"] for doc in documents if doc["kind"].startswith(cluster_scoped))
    assert elapsed < 10, f"helm template took {elapsed:.2f}s"


def test_all_toggles_add_monitoring_objects(render_chart: RenderChart) -> None:
    documents = render_chart(*ALL_TOGGLES)
    assert one(documents, "Namespace")["metadata"]["name"] == "vram-system"
    monitors = by_kind(documents, "ServiceMonitor")
    assert sorted(m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors) == ["agent", "operator"]
    services = {s["metadata"]["labels"]["app.kubernetes.io/component"]: s for s in by_kind(documents, "Service")}
    for monitor in monitors:
        selected = monitor["spec"]["selector"]["matchLabels"]
        service = services[selected["app.kubernetes.io/component"]]
        assert selected.items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
        # per-server series carry the server's namespace, the agent's the pods': keep them (not exported_*)
        assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_prometheus_rule_embeds_the_alerts_file(render_chart: RenderChart) -> None:
    rule = one(render_chart("prometheusRule.enabled=true", "prometheusRule.labels.release=kps"), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["metadata"]["labels"]["release"] == "kps"


def test_dashboards_become_sidecar_configmaps(render_chart: RenderChart) -> None:
    documents = render_chart("grafanaDashboards.enabled=true", "grafanaDashboards.namespace=monitoring")
    maps = [m for m in by_kind(documents, "ConfigMap") if "dashboard" in m["metadata"]["name"]]
    assert len(maps) == len(DASHBOARDS) > 0
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        ((key, text),) = config_map["data"].items()
        assert json.loads(text) == json.loads((CHART / "dashboards" / key).read_text())


def test_operator_deployment_is_hardened_and_probed(render_chart: RenderChart) -> None:
    documents = render_chart("operator.strategy=Balanced", "operator.marginMiB=1024", "operator.pinningMode=dra")
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(deployment)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsUser"] == 65532
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    args = container["args"]
    assert f"--health-port={ports['health']}" in args
    assert f"--metrics-port={ports['metrics']}" in args
    assert {"--strategy=Balanced", "--margin-mib=1024", "--pinning-mode=dra", "--standalone"} <= set(args)
    # /tmp is the only writable path under a read-only root filesystem
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]


def test_operator_flags_are_ones_the_operator_accepts(render_chart: RenderChart) -> None:
    import argparse

    from vram_operator.controller.main import add_arguments

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    args = _container(one(render_chart("operator.watchNamespaces={a,b}", "operator.verbose=true"), "Deployment"))[
        "args"
    ]
    parsed = parser.parse_args(args)
    assert parsed.namespace == ["a", "b"]
    assert parsed.verbose is True


def test_server_tolerations_value_reaches_the_operator(render_chart: RenderChart) -> None:
    import argparse

    from vram_operator.controller.main import add_arguments, settings_from

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    default = settings_from(parser.parse_args(_container(one(render_chart(), "Deployment"))["args"]))
    assert default.render.tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    emptied = _container(one(render_chart("operator.serverTolerations=null"), "Deployment"))["args"]
    assert settings_from(parser.parse_args(emptied)).render.tolerations == ()


def test_nvidia_stack_values_reach_the_operator(render_chart: RenderChart) -> None:
    import argparse

    from vram_operator.controller.main import add_arguments, settings_from

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    default = settings_from(parser.parse_args(_container(one(render_chart(), "Deployment"))["args"]))
    assert default.device_plugin_label is True
    assert (default.render.device_class, default.render.mig_device_class) == ("gpu.nvidia.com", "mig.nvidia.com")
    values = ("operator.disableDevicePlugin=false", "operator.deviceClass=gpu.example.com", "operator.migDeviceClass=m")
    chosen = settings_from(parser.parse_args(_container(one(render_chart(*values), "Deployment"))["args"]))
    assert chosen.device_plugin_label is False
    assert (chosen.render.device_class, chosen.render.mig_device_class) == ("gpu.example.com", "m")


def test_agent_flags_are_ones_the_agent_accepts(render_chart: RenderChart) -> None:
    import argparse

    from vram_operator.agent.main import add_arguments

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    daemonset = one(render_chart("agent.intervalSeconds=5", "agent.metricsPort=9500"), "DaemonSet")
    parsed = parser.parse_args(_container(daemonset)["args"])
    assert (parsed.interval, parsed.metrics_port, parsed.backend, str(parsed.proc_root)) == (
        5,
        9500,
        "nvml",
        "/host/proc",
    )


def test_agent_daemonset_reads_host_proc_on_gpu_nodes(render_chart: RenderChart) -> None:
    daemonset = one(render_chart(), "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["runtimeClassName"] == "nvidia"
    assert "nodeSelector" not in pod  # no label only the GPU Operator sets is required
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    keys = {expression["key"] for term in terms for expression in term["matchExpressions"]}
    assert {
        "nvidia.com/gpu.present",
        "feature.node.kubernetes.io/pci-10de.present",
        "cloud.google.com/gke-accelerator",
    } <= keys
    assert all(len(term["matchExpressions"]) == 1 for term in terms)  # terms are ORed: any one label suffices
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["priorityClassName"] == "system-node-critical"
    container = _container(daemonset)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["host-proc"]["hostPath"]["path"] == "/proc"
    assert mounts["host-proc"] == {"name": "host-proc", "mountPath": "/host/proc", "readOnly": True}
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_simulated_agent_mounts_its_profile_and_needs_one(helm: Path, render_chart: RenderChart) -> None:
    profile = "gpus:\n  - name: NVIDIA RTX A5500\n    memoryTotalMiB: 24564\n"  # --set splits on commas
    documents = render_chart("agent.backend=simulated", f"agent.simulatedProfile={profile}")
    config_map = one(documents, "ConfigMap")
    assert yaml.safe_load(config_map["data"]["profile.yaml"]) == yaml.safe_load(profile)
    args = _container(one(documents, "DaemonSet"))["args"]
    assert "--profile=/etc/vram-agent/profile.yaml" in args

    done = run(helm, "template", "x", str(CHART), "--set", "agent.backend=simulated")
    assert done.returncode != 0
    assert "agent.simulatedProfile: required" in done.stderr


def test_agent_can_be_disabled(render_chart: RenderChart) -> None:
    documents = render_chart("agent.enabled=false", *ALL_TOGGLES)
    components = {doc["metadata"]["labels"].get("app.kubernetes.io/component") for doc in documents}
    assert "agent" not in components
    assert not by_kind(documents, "DaemonSet")


def _rules(documents: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    (role,) = [
        r
        for r in by_kind(documents, "ClusterRole")
        if r["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_rbac_is_least_privilege(render_chart: RenderChart) -> None:
    documents = render_chart()
    for component in ("operator", "agent"):
        grants = _grants(_rules(documents, component))
        assert not any("*" in grant for grant in grants), component
        assert not any(resource in {"secrets", "clusterroles"} for _, resource, _ in grants), component
        # Nodes are read (cordons); only the operator patches them (the device-plugin label)
        node_verbs = {"list", "watch", "patch"} if component == "operator" else {"list", "watch"}
        assert {verb for _, resource, verb in grants if resource == "nodes"} <= node_verbs, component
        assert not any(verb in {"escalate", "bind", "impersonate", "deletecollection"} for *_, verb in grants)
    agent = _grants(_rules(documents, "agent"))
    assert agent == {
        ("vram.dev", "gpunodes", "create"),
        ("vram.dev", "gpunodes/status", "patch"),
        ("", "pods", "list"),
    }
    operator = _grants(_rules(documents, "operator"))
    assert ("vram.dev", "gpunodes", "patch") not in operator  # the agents own GpuNodes
    assert ("vram.dev", "gpunodes/status", "patch") in operator  # a silent agent's node marked stale
    assert ("vram.dev", "inferenceservers/status", "patch") in operator
    assert ("", "pods", "delete") not in operator


def test_bindings_name_the_service_accounts_the_workloads_use(render_chart: RenderChart) -> None:
    documents = render_chart(release="ship")
    accounts = {sa["metadata"]["name"] for sa in by_kind(documents, "ServiceAccount")}
    used = {w["spec"]["template"]["spec"]["serviceAccountName"] for w in by_kind(documents, "Deployment")}
    used |= {w["spec"]["template"]["spec"]["serviceAccountName"] for w in by_kind(documents, "DaemonSet")}
    bound = {s["name"] for b in by_kind(documents, "ClusterRoleBinding") for s in b["subjects"]}
    roles = {
        r["metadata"]["name"]
        for r in by_kind(documents, "ClusterRole")
        if r["metadata"]["labels"]["app.kubernetes.io/component"] != "user-roles"  # aggregated, not bound
    }
    assert accounts == used == bound
    assert {b["roleRef"]["name"] for b in by_kind(documents, "ClusterRoleBinding")} == roles
    assert all(name.startswith("ship-vram-operator") for name in accounts | roles)


def test_network_policy_admits_metrics_only_from_monitoring(render_chart: RenderChart) -> None:
    documents = render_chart("networkPolicy.metricsNamespaceSelector.team=observability")
    policies = by_kind(documents, "NetworkPolicy")
    assert len(policies) == 2
    workloads = [one(documents, "Deployment"), one(documents, "DaemonSet")]
    for policy in policies:
        selected = policy["spec"]["podSelector"]["matchLabels"]
        (workload,) = [w for w in workloads if selected.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        metrics_port = next(p for p in _container(workload)["ports"] if p["name"] == "metrics")["containerPort"]
        (ingress,) = policy["spec"]["ingress"]
        assert ingress["ports"] == [{"protocol": "TCP", "port": metrics_port}]
        assert ingress["from"] == [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "monitoring", "team": "observability"}
                }
            }
        ]
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        api_ports = {p["port"] for p in policy["spec"]["egress"][0]["ports"]}
        assert api_ports == {443, 6443}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("operator.bogus=1", "additional properties 'bogus' not allowed"),
        ("operator.strategy=Fastest", "operator/strategy"),
        ("operator.pinningMode=mig", "operator/pinningMode"),
        ("operator.marginMiB=-1", "operator/marginMiB"),
        ("agent.metricsPort=70000", "agent/metricsPort"),
        ("serviceMonitor.interval=often", "serviceMonitor/interval"),
    ],
)
def test_schema_rejects_bad_values(helm: Path, value: str, message: str) -> None:
    done = run(helm, "template", "x", str(CHART), "--set", value)
    assert done.returncode != 0
    assert message in done.stderr


def test_values_file_satisfies_its_own_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**values, "typo": True}, schema)


def test_pod_templates_carry_their_selector_labels_once(helm: Path) -> None:
    """Helm's own parser keeps the last of a repeated key; the strict loader refuses one."""
    done = run(
        helm, "template", "vram-operator", str(CHART), *[arg for value in ALL_TOGGLES for arg in ("--set", value)]
    )
    assert done.returncode == 0, done.stderr
    documents = strict_load_all(done.stdout)
    for workload in by_kind(documents, "Deployment") + by_kind(documents, "DaemonSet"):
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()


def test_crds_are_templates_helm_upgrades_and_keeps(render_chart: RenderChart) -> None:
    """Helm never upgrades a chart's crds/; rendered as templates they upgrade with the release."""
    assert not (CHART / "crds").exists()
    rendered = {crd["metadata"]["name"]: crd for crd in by_kind(render_chart(), "CustomResourceDefinition")}
    shipped = {
        crd["metadata"]["name"]: crd
        for crd in (yaml.safe_load(p.read_text()) for p in (CHART / "files" / "crds").glob("*.yaml"))
    }
    assert (
        rendered.keys()
        == shipped.keys()
        == {"inferenceservers.vram.dev", "gpunodes.vram.dev", "gpuassignments.vram.dev"}
    )
    for name, crd in rendered.items():
        assert crd["spec"] == shipped[name]["spec"]  # nothing lost in Helm's YAML round trip (integers stay integers)
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert by_kind(render_chart("crds.install=false"), "CustomResourceDefinition") == []
    unkept = by_kind(render_chart("crds.keep=false"), "CustomResourceDefinition")
    assert all("annotations" not in crd["metadata"] for crd in unkept)
