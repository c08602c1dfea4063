"""Profiles: overlays in profiles/<name>.yaml merged into params.yaml, comments kept.

A profile changes values, never code paths. The merged file is validated before it
is written, so a bad overlay never leaves a broken params.yaml behind. Mappings merge key
by key; a list of named mappings (ingest.sources) merges by `name`, another list of mappings
of the same length item by item (comments kept), any other list is replaced whole. profiles/cpu.yaml
holds the CPU value of every key another profile sets, so `apply-profile cpu`
restores the defaults exactly, and every profile is applied on top of it, so the
result never depends on the profile applied before.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from supportlm.config import parse_params
from supportlm.errors import ConfigError


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    # write None as `null` (ruamel's default is an empty value), as params.yaml spells it
    y.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return y


def _same_shape_list_of_maps(old: Any, new: Any) -> bool:
    return (
        isinstance(old, list)
        and isinstance(new, list)
        and len(old) == len(new)
        and all(isinstance(x, dict) for x in old + new)
    )


def _named_maps(x: Any) -> bool:
    """A list of mappings with unique `name`s (ingest.sources): matched by name, not by position."""
    if not (isinstance(x, list) and x and all(isinstance(i, dict) and "name" in i for i in x)):
        return False
    return len({i["name"] for i in x}) == len(x)


def _merge_named(old: list, new: list, key: str) -> list[str]:
    """Items of `new` in its order; an item whose name was there before is merged into the old one
    (its comments survive; keys the new item lacks are removed), others are taken as they are."""
    by_name = {o["name"]: o for o in old}
    changed: list[str] = []
    items = []
    for n in new:
        o = by_name.get(n["name"])
        if o is None:
            items.append(n)
            changed.append(f"{key}.{n['name']}")
            continue
        for gone in [k for k in o if k not in n]:
            del o[gone]
            changed.append(f"{key}.{n['name']}.{gone}")
        changed += merge(o, n, f"{key}.{n['name']}.")
        items.append(o)
    if [id(i) for i in items] != [id(o) for o in old]:
        del old[:]  # in place: the list keeps its own comments
        old.extend(items)
    return changed


def merge(target: CommentedMap, overlay: dict[str, Any], prefix: str = "") -> list[str]:
    """Deep-merge overlay into target in place; return the dotted keys whose value changed."""
    changed: list[str] = []
    for k, v in overlay.items():
        key = f"{prefix}{k}"
        old = target.get(k)
        if isinstance(v, dict) and isinstance(old, dict):
            changed += merge(old, v, key + ".")
        elif _named_maps(old) and _named_maps(v):
            changed += _merge_named(old, v, key)
        elif _same_shape_list_of_maps(old, v):
            # merge item by item so comments attached to the list survive a round trip
            for i, (o, n) in enumerate(zip(old, v, strict=True)):
                changed += merge(o, n, f"{key}.{i}.")
        elif target.get(k) != v:
            target[k] = v
            changed.append(key)
    return changed


def load_overlay(name: str, profiles_dir: Path) -> dict[str, Any]:
    path = profiles_dir / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
        raise ConfigError(f"profile `{name}`: {path} not found. Known profiles: {known}")
    data = _yaml().load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of stage blocks")
    return data


def apply_profile(name: str, params_path: Path = Path("params.yaml"), sets: list[str] | None = None) -> list[str]:
    """Overlay profiles/<name>.yaml on the CPU defaults (profiles/cpu.yaml) and write params.yaml.

    The defaults go first so the result does not depend on what was applied before: a GPU run after a
    smoke run must not keep the smoke profile's 2 training steps for a key gpu.yaml does not set.
    `sets` ("train.num_processes=4", YAML values) go on top (`make all PROFILE=gpu GPUS=4`).
    Returns the dotted keys whose value changed.
    """
    params_path = Path(params_path)
    profiles_dir = params_path.parent / "profiles"
    y = _yaml()
    doc = y.load(params_path.read_text())
    before = _flat_values(doc)
    if name != "cpu":
        merge(doc, load_overlay("cpu", profiles_dir))
    merge(doc, load_overlay(name, profiles_dir))
    merge(doc, parse_sets(sets or []))
    doc["profile"] = name
    after = _flat_values(doc)
    changed = [k for k in after if after[k] != before.get(k)] + [k for k in before if k not in after]
    buf = io.StringIO()
    y.dump(doc, buf)
    text = buf.getvalue()
    parse_params(
        YAML(typ="safe").load(text), f"{params_path} + profiles/{name}.yaml"
    )  # validate before writing
    tmp = params_path.with_name(params_path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(params_path)
    return changed


def parse_sets(sets: list[str]) -> dict[str, Any]:
    """["train.num_processes=4"] -> {"train": {"num_processes": 4}} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or "." not in key:
            raise ConfigError(f"--set {item!r}: expected BLOCK.KEY=VALUE, e.g. train.num_processes=4")
        *parents, leaf = key.strip().split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = YAML(typ="safe").load(value)
    return out


def _flat_values(d: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value}; lists are leaves except lists of mappings (merged item by item)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat_values(v, f"{prefix}{k}."))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, x in enumerate(d):
            out.update(_flat_values(x, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = list(d) if isinstance(d, list) else d
    return out
