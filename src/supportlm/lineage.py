"""Data/code versions for reports: git sha, DVC output hashes from dvc.lock, params hash."""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
from pathlib import Path
from typing import Any

import yaml


def git_sha(root: Path = Path(".")) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dvc_hashes(stages: list[str], root: Path = Path(".")) -> dict[str, str]:
    """md5 of each out of the named stages, as recorded in dvc.lock (what `dvc pull` restores)."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    data = yaml.safe_load(lock.read_text()) or {}
    hashes: dict[str, str] = {}
    for name in stages:
        for out in data.get("stages", {}).get(name, {}).get("outs", []):
            hashes[out["path"]] = out.get("md5", "")
    return hashes


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: dotted keys as params.yaml, DVC and MLflow spell them."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, key + ".")
        else:
            out[key] = v
    return out


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def params_hash(section: Any) -> str:
    """Stable short hash of a params block (pydantic model or dict)."""
    data = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
