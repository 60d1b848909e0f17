"""Drift of a child object: how the live object differs from what the operator rendered. Pure.

Only what the operator rendered is compared (metadata and spec): fields the API server defaults
(a container's terminationMessagePath, a Service's clusterIP) or others add (annotations of
`kubectl rollout restart`) are not drift. The one exception is a container's environment, which is
rendered whole (spec.env and the operator's variables): a variable added there is drift too
(`kubectl set env NVIDIA_VISIBLE_DEVICES=all` where dra pinning does not set it). A list of named
items (containers, env, ports, volumes) is matched by name, as server-side apply merges it; other
lists are compared item by item.
Resource quantities compare by value ("1000m" is "1"), as the API server normalises them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vram_operator.api.quantity import quantity_value

COMPARED = ("metadata", "spec")
# Event messages are bounded: list this many reverted fields, then a count.
MAX_LISTED = 6
MAX_SHOWN_VALUE = 40
ZERO_VALUES: tuple[Any, ...] = ("", 0, False, {}, [])


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Difference:
    """One rendered field the live object lacks or holds another value in."""

    path: tuple[str, ...]  # keys, and "[name]" / "[index]" for list items
    rendered: Any  # MISSING for an env variable the live object has and the render has not
    live: Any  # MISSING when the live object lacks the field

    def describe(self) -> str:
        """ "replicas 3→1", "env NVIDIA_VISIBLE_DEVICES" (values of env are never shown), "image a→b"."""
        if "env" in self.path[:-1]:
            item = self.path[self.path.index("env") + 1]
            return f"env {item.strip('[]')}" + (" (added)" if self.rendered is MISSING else "")
        shown = self.path[1:] if self.path[0] == "spec" else self.path
        where = ".".join(shown).replace(".[", "[")
        if self.live is MISSING:
            return f"{where} (removed)"
        if _short(self.rendered) and _short(self.live):
            return f"{where} {self.live}→{self.rendered}"
        return where


def _short(value: Any) -> bool:
    return isinstance(value, bool | int | float | str) and len(str(value)) <= MAX_SHOWN_VALUE


def differences(rendered: Mapping[str, Any], live: Mapping[str, Any]) -> list[Difference]:
    """Every rendered field (metadata and spec) the live object does not hold as rendered."""
    found: list[Difference] = []
    for key in COMPARED:
        if key in rendered:
            _compare(rendered[key], live.get(key, MISSING), (key,), found)
    return found


def _compare(rendered: Any, live: Any, path: tuple[str, ...], found: list[Difference]) -> None:
    if live is MISSING:
        if not _stored_as_absent(rendered):
            found.append(Difference(path, rendered, MISSING))
    elif isinstance(rendered, Mapping):
        if not isinstance(live, Mapping):
            found.append(Difference(path, rendered, live))
            return
        for key, value in rendered.items():
            _compare(value, live.get(key, MISSING), (*path, key), found)
    elif isinstance(rendered, Sequence) and not isinstance(rendered, str):
        _compare_list(rendered, live, path, found)
    elif not _same_leaf(rendered, live, path):
        found.append(Difference(path, rendered, live))


def _stored_as_absent(value: Any) -> bool:
    """A zero value the API server leaves out when it stores an object (Go's omitempty: "", 0,
    false, empty maps and lists, null): rendered that way, it is absent from the live object."""
    return value is None or any(value == zero for zero in ZERO_VALUES)


def _named(items: Sequence[Any]) -> bool:
    return bool(items) and all(isinstance(item, Mapping) and isinstance(item.get("name"), str) for item in items)


def _compare_list(rendered: Sequence[Any], live: Any, path: tuple[str, ...], found: list[Difference]) -> None:
    if not isinstance(live, Sequence) or isinstance(live, str):
        found.append(Difference(path, rendered, live))
    elif _named(rendered) and all(isinstance(item, Mapping) for item in live):
        by_name = {item.get("name"): item for item in live}
        for item in rendered:
            _compare(item, by_name.get(item["name"], MISSING), (*path, f"[{item['name']}]"), found)
        if path[-1] == "env":  # the whole environment is rendered (spec.env and the operator's)
            ours = {item["name"] for item in rendered}
            found.extend(
                Difference((*path, f"[{item.get('name')}]"), MISSING, item)
                for item in live
                if item.get("name") not in ours
            )
    elif len(rendered) != len(live) or not all(isinstance(item, Mapping) for item in rendered):
        if list(rendered) != list(live):
            found.append(Difference(path, list(rendered), list(live)))
    else:
        for index, (mine, theirs) in enumerate(zip(rendered, live, strict=True)):
            _compare(mine, theirs, (*path, f"[{index}]"), found)


def _same_leaf(rendered: Any, live: Any, path: tuple[str, ...]) -> bool:
    if rendered == live:
        return True
    if "resources" in path or path[-1] == "sizeLimit":
        try:
            return quantity_value(rendered) == quantity_value(live)
        except ValueError:
            return False
    return False


def env_removal_patch(found: Sequence[Difference]) -> dict[str, Any] | None:
    """A strategic merge patch deleting the env variables added to rendered containers (server-side
    apply leaves fields other managers own), or None when there are none."""
    removals: dict[str, list[str]] = {}
    for difference in found:
        path = difference.path
        if difference.rendered is MISSING and len(path) >= 4 and path[-2] == "env" and path[-4] == "containers":
            removals.setdefault(path[-3].strip("[]"), []).append(path[-1].strip("[]"))
    if not removals:
        return None
    containers = [
        {"name": container, "env": [{"name": name, "$patch": "delete"} for name in names]}
        for container, names in removals.items()
    ]
    return {"spec": {"template": {"spec": {"containers": containers}}}}


def comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What of a live object drift is judged on (metadata without managedFields, spec): what a
    watch keeps in memory for it."""
    meta = {key: value for key, value in (obj.get("metadata") or {}).items() if key != "managedFields"}
    return {"metadata": meta, "spec": obj.get("spec") or {}}


def drifted_fields(rendered: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """What differs, described once each, in the order of the rendered object."""
    return list(dict.fromkeys(d.describe() for d in differences(rendered, live)))


def drift_message(
    rendered: Mapping[str, Any], live: Mapping[str, Any] | None, *, besides: Collection[str] = ()
) -> str | None:
    """The Event text for a child that drifted ("Deployment web: reverted env X, replicas 3→1";
    "Deployment web: recreated (it was deleted)"), or None when the live object is as rendered.
    `besides`: drifted fields to leave out (the ones a restore could not revert)."""
    what = f"{rendered['kind']} {rendered['metadata']['name']}"
    if live is None:
        return f"{what}: recreated (it was deleted)"
    described = [field for field in drifted_fields(rendered, live) if field not in besides]
    if not described:
        return None
    listed = ", ".join(described[:MAX_LISTED])
    more = len(described) - MAX_LISTED
    return f"{what}: reverted {listed}" + (f" and {more} more" if more > 0 else "")
