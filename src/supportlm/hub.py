"""Hugging Face Hub access for the online (GPU) profile: pinned, gated, offline.

Every hub read goes through here so that the three ways it goes wrong on a fresh host fail at
once, before any download, with the repo id, the reason and the fix:
- no pinned revision: `main` moves, so a rerun could train on other weights or rows;
- a gated repo (Llama-2, Gemma, Mistral) without `HF_TOKEN`, or with a token not yet granted;
- no route to the Hub (offline host, proxy): names the repo and how to use a local copy.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Literal

from supportlm.errors import ConfigError, DataError

RepoType = Literal["model", "dataset"]
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
DEFAULT_OPEN_MODEL = "Qwen/Qwen2.5-7B-Instruct"  # the GPU profile's default: Apache-2.0, not gated


def token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def url(repo_id: str, repo_type: RepoType) -> str:
    return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def require_pinned(repo_id: str, revision: str | None, key: str, repo_type: RepoType = "model") -> str:
    """The revision, if it is a full commit sha; else ConfigError saying how to find one."""
    if revision and COMMIT_SHA.fullmatch(revision):
        return revision
    info_fn = "model_info" if repo_type == "model" else "dataset_info"
    raise ConfigError(
        f"{key}: `{repo_id}` is read from the Hugging Face Hub, so it needs a pinned revision "
        f"(a 40-hex commit sha; got {revision!r}): a branch such as `main` moves and the rerun would "
        f'read other files. Find the current one with: python -c "from huggingface_hub import '
        f"{info_fn}; print({info_fn}('{repo_id}').sha)\""
    )


def _gated_error(repo_id: str, repo_type: RepoType, key: str, gated: Any, have_token: bool) -> ConfigError:
    what = (
        "HF_TOKEN is not set" if not have_token else "the account behind HF_TOKEN has not been granted access"
    )
    return ConfigError(
        f"{key}: `{repo_id}` is gated on the Hugging Face Hub (approval: {gated}) and {what}. "
        f"Fix: accept its licence at {url(repo_id, repo_type)} while logged in, create a read token at "
        f"https://huggingface.co/settings/tokens and `export HF_TOKEN=...` before the run (the container "
        f"gets it by name). Or use a model that is not gated, such as {DEFAULT_OPEN_MODEL}."
    )


def unreachable(repo_id: str, repo_type: RepoType, key: str, exc: BaseException) -> DataError:
    local = "a local HF model dir" if repo_type == "model" else "a local dataset dir or data file"
    return DataError(
        f"{key}: cannot reach the Hugging Face Hub for {repo_type} `{repo_id}` "
        f"({type(exc).__name__}: {exc}). Nothing was switched to other data. To use a local copy, "
        f"download it on a connected machine (`hf download {repo_id}"
        f"{' --repo-type dataset' if repo_type == 'dataset' else ''} --revision <sha> --local-dir DIR`), "
        f"copy DIR here and set {key} to DIR ({local})."
    )


def check_access(repo_id: str, revision: str, key: str, repo_type: RepoType = "model") -> Any:
    """The repo's info at `revision`; raises ConfigError/DataError before anything is downloaded."""
    from huggingface_hub import dataset_info, model_info
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    fetch = model_info if repo_type == "model" else dataset_info
    try:
        info = fetch(repo_id, revision=revision, token=token(), timeout=30)
    except GatedRepoError:
        raise _gated_error(repo_id, repo_type, key, "required", token() is not None) from None
    except RevisionNotFoundError:
        raise ConfigError(
            f"{key}: revision {revision} does not exist in {repo_type} `{repo_id}` ({url(repo_id, repo_type)})"
        ) from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"{key}: `{repo_id}` is not a {repo_type} on the Hugging Face Hub (or it is private and "
            f"HF_TOKEN cannot see it); a local copy must exist as a path"
        ) from None
    except HfHubHTTPError as exc:
        raise unreachable(repo_id, repo_type, key, exc) from None
    except Exception as exc:  # noqa: BLE001 - connection refused/timeouts (httpx), HF_HUB_OFFLINE, proxies
        raise unreachable(repo_id, repo_type, key, exc) from None
    gated = getattr(info, "gated", False)
    if gated and token() is None:
        raise _gated_error(repo_id, repo_type, key, gated, have_token=False)
    return info


def download(
    repo_id: str,
    revision: str,
    out_dir: Path,
    key: str,
    repo_type: RepoType = "model",
    allow_patterns: list[str] | None = None,
) -> Path:
    """Snapshot the repo at `revision` straight into `out_dir` (no second copy in the HF cache)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError

    check_access(repo_id, revision, key, repo_type)
    try:
        snapshot_download(
            repo_id,
            repo_type=repo_type,
            revision=revision,
            local_dir=str(out_dir),
            allow_patterns=allow_patterns,
            token=token(),
        )
    except GatedRepoError:
        raise _gated_error(repo_id, repo_type, key, "required", token() is not None) from None
    except OSError as exc:
        raise unreachable(repo_id, repo_type, key, exc) from None
    shutil.rmtree(out_dir / ".cache", ignore_errors=True)  # huggingface_hub's download metadata
    return out_dir
