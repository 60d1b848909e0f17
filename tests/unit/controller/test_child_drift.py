"""child_drift: a live child against what was rendered, and the Event text naming what is reverted."""

from __future__ import annotations

import copy
from typing import Any

from controller_builders import generic
from hypothesis import assume, given
from hypothesis import strategies as st

from vram_operator.api.inference_server import PlacedGpu, PlacementStatus
from vram_operator.controller.child_drift import (
    MAX_LISTED,
    comparable,
    differences,
    drift_message,
    env_removal_patch,
)
from vram_operator.render import PlacedReplica, RenderSettings, render


def rendered_deployment() -> dict[str, Any]:
    placement = PlacementStatus(node="ws", gpus=[PlacedGpu(index=0, uuid="GPU-ws-0", total_mib=24564)], budget_mib=4096)
    server = generic("web")
    server = server.model_copy(
        update={"spec": server.spec.model_copy(update={"resources": {"limits": {"cpu": "1", "memory": "2Gi"}}})}
    )
    return render(server, [PlacedReplica(0, placement)], RenderSettings()).deployment


def stored(rendered: dict[str, Any]) -> dict[str, Any]:
    """What the API server keeps: defaults added, managedFields, a status, quantities normalised."""
    live = copy.deepcopy(rendered)
    live["metadata"].update(uid="u1", resourceVersion="7", managedFields=[{"manager": "vram-operator"}])
    live["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "1"}
    live["spec"].update(revisionHistoryLimit=10, progressDeadlineSeconds=600)
    pod = live["spec"]["template"]["spec"]
    pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst")
    pod["containers"][0].update(terminationMessagePath="/dev/termination-log")
    pod["containers"][0]["resources"]["limits"]["cpu"] = "1000m"
    live["status"] = {"replicas": 1}
    return live


def container(live: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = live["spec"]["template"]["spec"]["containers"][0]
    return found


def test_a_stored_copy_with_defaults_and_extras_is_not_drift() -> None:
    rendered = rendered_deployment()
    live = stored(rendered)
    live["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "now"
    assert differences(rendered, live) == []
    assert drift_message(rendered, comparable(live)) is None


def test_scale_and_set_env_are_named_and_env_values_are_not_shown() -> None:
    rendered = rendered_deployment()
    live = stored(rendered)
    live["spec"]["replicas"] = 3
    env = {item["name"]: item for item in container(live)["env"]}
    env["NVIDIA_VISIBLE_DEVICES"]["value"] = "all"
    message = drift_message(rendered, comparable(live))
    assert message == "Deployment web: reverted replicas 3→1, env NVIDIA_VISIBLE_DEVICES"


def test_a_deleted_child_is_recreated() -> None:
    assert drift_message(rendered_deployment(), None) == "Deployment web: recreated (it was deleted)"


def test_a_removed_env_variable_label_or_container_field_is_drift() -> None:
    rendered = rendered_deployment()
    live = stored(rendered)
    container(live)["env"] = [e for e in container(live)["env"] if e["name"] != "VRAM_BUDGET_MIB"]
    del live["metadata"]["labels"]["vram.dev/server"]
    container(live)["image"] = "evil:1"
    message = drift_message(rendered, comparable(live))
    assert message is not None
    assert "env VRAM_BUDGET_MIB" in message
    assert "metadata.labels.vram.dev/server (removed)" in message
    assert "template.spec.containers[engine].image evil:1→img" in message


def test_quantities_compare_by_value_only_under_resources() -> None:
    rendered = rendered_deployment()
    live = stored(rendered)
    container(live)["resources"]["limits"]["memory"] = "2048Mi"  # the same amount
    assert differences(rendered, live) == []
    container(live)["resources"]["limits"]["memory"] = "2049Mi"
    [difference] = differences(rendered, live)
    assert difference.path[-2:] == ("limits", "memory")
    assert (difference.rendered, difference.live) == ("2Gi", "2049Mi")


def test_a_list_without_names_compares_item_by_item_and_a_shorter_one_as_a_whole() -> None:
    rendered = {"kind": "Deployment", "metadata": {"name": "a"}, "spec": {"args": ["--a", "1"], "terms": [{"k": 1}]}}
    meta = {"name": "a", "uid": "u"}
    assert differences(rendered, {"metadata": meta, "spec": {"args": ["--a", "1"], "terms": [{"k": 1, "x": 2}]}}) == []
    [args] = differences(rendered, {"metadata": meta, "spec": {"args": ["--a"], "terms": [{"k": 1}]}})
    assert args.path == ("spec", "args") and args.live == ["--a"]
    [term] = differences(rendered, {"metadata": meta, "spec": {"args": ["--a", "1"], "terms": [{"k": 2}]}})
    assert term.path == ("spec", "terms", "[0]", "k")


def test_the_message_lists_a_bounded_number_of_fields() -> None:
    labels = {f"l{i}": "v" for i in range(MAX_LISTED + 3)}
    rendered = {"kind": "Service", "metadata": {"name": "s", "labels": labels}, "spec": {}}
    message = drift_message(rendered, {"metadata": {"name": "s", "labels": {"other": "v"}}, "spec": {}})
    assert message is not None and message.endswith(" and 3 more")
    assert message.count("(removed)") == MAX_LISTED
    one_less = {"kind": "Service", "metadata": {"name": "s", "labels": dict(list(labels.items())[:MAX_LISTED])}}
    assert "more" not in (drift_message(one_less, {"metadata": {"name": "s", "labels": {}}}) or "")


# Trees of maps and lists, with keys that no special rule (names, env, quantities) applies to.
KEYS = st.sampled_from(["a", "b", "c", "spec2", "x"])
LEAVES = st.one_of(st.integers(-3, 3), st.text("xyz", max_size=3), st.booleans())
TREES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=12,
)


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in leaf_paths(item, (*path, key))]
    if isinstance(value, list):
        return (
            [path]
            if not value or not all(isinstance(v, dict) for v in value)
            else [p for i, item in enumerate(value) for p in leaf_paths(item, (*path, i))]
        )
    return [path]


@given(tree=st.dictionaries(KEYS, TREES, max_size=4), extra=st.dictionaries(st.just("added"), LEAVES))
def test_an_object_never_drifts_from_itself_or_from_a_copy_with_more_fields(
    tree: dict[str, Any], extra: dict[str, Any]
) -> None:
    rendered = {"kind": "Deployment", "metadata": {"name": "n"}, "spec": tree}
    assert differences(rendered, copy.deepcopy(rendered)) == []
    assert differences(rendered, {**rendered, "spec": {**tree, **extra}}) == []


@given(tree=st.dictionaries(KEYS, TREES, min_size=1, max_size=4), pick=st.integers(0, 50))
def test_changing_one_rendered_value_is_exactly_one_difference_at_its_path(tree: dict[str, Any], pick: int) -> None:
    rendered = {"kind": "Deployment", "metadata": {"name": "n"}, "spec": tree}
    paths = leaf_paths(tree)
    assume(paths)
    path = paths[pick % len(paths)]
    live = copy.deepcopy(rendered)
    holder: Any = live["spec"]
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = "changed" if isinstance(holder[path[-1]], list) else ["changed"]
    [difference] = differences(rendered, live)
    shown = tuple(f"[{step}]" if isinstance(step, int) else step for step in path)
    assert difference.path == ("spec", *shown)


def test_an_env_variable_added_to_a_rendered_container_is_drift_and_removed_by_name() -> None:
    rendered = rendered_deployment()
    live = stored(rendered)
    container(live)["env"].append({"name": "NVIDIA_DRIVER_LIB", "value": "x"})
    found = differences(rendered, live)
    assert [d.describe() for d in found] == ["env NVIDIA_DRIVER_LIB (added)"]
    patch = env_removal_patch(found)
    assert patch == {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "engine", "env": [{"name": "NVIDIA_DRIVER_LIB", "$patch": "delete"}]}]}
            }
        }
    }
    assert env_removal_patch(differences(rendered, stored(rendered))) is None


def test_zero_values_the_api_server_leaves_out_are_not_drift() -> None:
    rendered = {
        "kind": "Deployment",
        "metadata": {"name": "a"},
        "spec": {"env": [{"name": "EMPTY", "value": ""}], "hostPort": 0, "flag": False, "opts": {}, "none": None},
    }
    live = {"metadata": {"name": "a"}, "spec": {"env": [{"name": "EMPTY"}]}}
    assert differences(rendered, live) == []
    [one] = differences({**rendered, "spec": {**rendered["spec"], "hostPort": 1}}, live)
    assert one.path == ("spec", "hostPort")
