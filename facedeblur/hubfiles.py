"""Files of Hugging Face Hub repositories: ``hf_hub_download`` with the environment read at call time and its errors
mapped to facedeblur's typed errors.

A low-level module (it imports only :mod:`facedeblur.errors`): the model registry reads ``config.json`` of an
``hf-hub:`` name through it, and :mod:`facedeblur.weights` the weight files.

``huggingface_hub`` is imported only inside the functions that need it: it reads ``HF_HUB_OFFLINE``,
``HF_ENDPOINT`` and ``HF_HUB_CACHE`` at import time, so importing it when facedeblur is imported would
freeze them too early. On top of that, the environment is read again at call time here
(``HF_HUB_OFFLINE`` -> ``local_files_only=True``, ``HF_ENDPOINT`` -> ``endpoint=``, ``HF_HUB_CACHE``/
``HF_HOME`` -> ``cache_dir``), so setting them after ``huggingface_hub`` was imported by someone else
still works.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

from .errors import WeightsNotAvailableError

__all__ = ["hub_download", "hub_endpoint", "hub_offline"]

_TRUE = {"1", "on", "yes", "true"}


# ----------------------------------------------------------------------------------------------- env


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def hub_offline() -> bool:
    """Offline if the environment says so now, or said so when huggingface_hub was imported."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def hub_endpoint() -> str:
    """The Hub URL: ``HF_ENDPOINT`` as set now, else huggingface_hub's."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT


def _cache_dir(cache_dir: str | os.PathLike | None) -> str | None:
    """``cache_dir`` if given, else ``HF_HUB_CACHE`` / ``$HF_HOME/hub`` as set now, else the library default."""
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _cache_text(cache_dir: str | None) -> str:
    if cache_dir is not None:
        return cache_dir
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


# ----------------------------------------------------------------------------------------------- hub


def hub_download(repo_id: str, filename: str, revision: str | None, cache_dir: str | os.PathLike | None = None, *,
                 name: str | None = None, not_found: type[Exception] = WeightsNotAvailableError) -> pathlib.Path:
    """``huggingface_hub.hf_hub_download`` with the environment honoured at call time and its errors mapped to
    facedeblur's typed errors (``not_found`` for a missing repo/revision/file, WeightsNotAvailableError when
    offline and not cached). ``name`` is the model name used in the suggested fixes."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HFValidationError, HfHubHTTPError,
                                        LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    cache = _cache_dir(cache_dir)
    kwargs: dict[str, Any] = {"repo_id": repo_id, "filename": filename, "revision": revision, "cache_dir": cache}
    if os.environ.get("HF_ENDPOINT"):
        kwargs["endpoint"] = os.environ["HF_ENDPOINT"].rstrip("/")
    offline = hub_offline()
    if offline:
        kwargs["local_files_only"] = True
    rev = revision or "main"
    what = f"{filename!r} of Hugging Face Hub repository {repo_id!r} at revision {rev}"
    try:
        return pathlib.Path(hf_hub_download(**kwargs))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        why = ("downloads are disabled (HF_HUB_OFFLINE is set)" if offline else
               f"the Hub at {hub_endpoint()} could not be reached ({str(e).splitlines()[0][:200]})")
        local = ("load a local copy of the model folder with 'local-dir:PATH'" if filename == "config.json"
                 else "pass weights=PATH to a local .safetensors file")
        dl = (f"`facedeblur download {name}`" if name
              else f"hf_hub_download({repo_id!r}, {filename!r}, revision={rev!r})")
        raise WeightsNotAvailableError(
            f"{what} is not in the local cache ({_cache_text(cache)}) and {why}. Fix one of: unset HF_HUB_OFFLINE "
            f"and connect; set HF_ENDPOINT to a reachable Hub mirror; {local}; "
            f"or run {dl} on a connected machine and copy its Hugging Face cache folder (HF_HUB_CACHE, default "
            f"~/.cache/huggingface/hub) to this one.") from None
    except GatedRepoError:
        raise WeightsNotAvailableError(
            f"{what}: the repository is gated; accept its terms on {hub_endpoint()}/{repo_id} and log in "
            f"(`hf auth login`, or set HF_TOKEN).") from None
    except RepositoryNotFoundError:
        raise not_found(
            f"Hugging Face Hub repository {repo_id!r} does not exist at {hub_endpoint()} (or it is private: log in "
            f"with `hf auth login` / HF_TOKEN). Check the name in 'hf-hub:ORG/REPO[@REVISION]'.") from None
    except RevisionNotFoundError:
        raise not_found(
            f"revision {rev!r} does not exist in Hugging Face Hub repository {repo_id!r} ({hub_endpoint()}). Use a "
            f"branch, tag or full 40-character commit SHA from {hub_endpoint()}/{repo_id}/commits/main.") from None
    except EntryNotFoundError:
        raise not_found(f"{what}: the repository has no such file at that revision.") from None
    except HFValidationError as e:
        raise not_found(f"{repo_id!r} is not a valid Hugging Face Hub repository id ('ORG/NAME'): {e}") from None
    except HfHubHTTPError as e:
        raise WeightsNotAvailableError(f"downloading {what} from {hub_endpoint()} failed: "
                                       f"{str(e).splitlines()[0]}. Retry, or pass weights=PATH.") from None
    except Exception as e:  # transport errors (httpx) and interrupted downloads (OSError)
        if not (isinstance(e, OSError) or type(e).__module__.split(".")[0].startswith("httpx")):
            raise
        raise WeightsNotAvailableError(f"downloading {what} from {hub_endpoint()} failed ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''}). Retry, or pass "
                                       f"weights=PATH.") from None
