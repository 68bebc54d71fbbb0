"""Download one Kaggle dataset archive with the official `kaggle` client, or say how to fix why not."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from pathlib import Path

from pipeline.errors import DataError

log = logging.getLogger(__name__)

CREDENTIALS_HELP = (
    "To download from Kaggle, create an API token at https://www.kaggle.com/settings "
    "(section API), then either export KAGGLE_USERNAME=<user> and KAGGLE_KEY=<key>, "
    "or save the token file as ~/.kaggle/kaggle.json (or in $KAGGLE_CONFIG_DIR) and run "
    "`chmod 600 ~/.kaggle/kaggle.json`."
)


def download_dataset(dataset: str, dest: Path, offline_help: str) -> Path:
    """Downloads `owner/name` into `dest` as one .zip (not extracted) and returns its path.

    Every failure is a DataError saying how to fix the credentials, then `offline_help`.
    """
    def fail(problem: str) -> DataError:
        return DataError(f"{problem}.\n{CREDENTIALS_HELP}\n{offline_help}")

    if not credentials_found():
        raise fail(f"no Kaggle credentials found to download {dataset}")
    client_output = io.StringIO()  # the client prints banners and help: keep them out of our output
    try:
        with contextlib.redirect_stdout(client_output):
            # Importing `kaggle` authenticates at import time: kaggle 2.x swallows a failure (after
            # printing help), 1.x raises. Either way the import stays inside this try.
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
            api.dataset_download_files(dataset, path=str(dest), quiet=True, unzip=False)
    except ImportError as e:
        raise DataError(f"the kaggle package is not importable ({e}): pip install kaggle.\n"
                        + offline_help) from None
    except SystemExit:  # kaggle 2.x: authenticate() exits when no credential works (e.g. expired token)
        raise fail("the kaggle client found no usable credentials") from None
    except Exception as e:  # the client raises requests, urllib3 or its own errors: all mean "no data"
        raise fail(_describe_failure(e, dataset)) from e
    finally:
        if client_output.getvalue().strip():
            log.info("kaggle client said: %s", client_output.getvalue().strip())
    archives = sorted(dest.glob("*.zip"))
    if len(archives) != 1:
        raise DataError(f"Kaggle download of {dataset} left {len(archives)} .zip files in {dest}, "
                        "expected one.\n" + offline_help)
    return archives[0]


def credentials_found() -> bool:
    """True if the kaggle client would find a credential: checked first, so a missing one fails
    with our guidance instead of the client's help text and exit."""
    # kaggle 2.x also takes an access token (env var or file) or `kaggle auth login`'s OAuth file.
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    home_dir = Path(os.path.expanduser("~")) / ".kaggle"
    if any((home_dir / name).is_file() for name in ("access_token", "access_token.txt", "credentials.json")):
        return True
    # The documented pair: kaggle.json, with KAGGLE_USERNAME / KAGGLE_KEY overriding its values.
    config: object = {}
    path = _config_dir() / "kaggle.json"
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            config = json.loads(path.read_text())
    if not isinstance(config, dict):
        config = {}
    username = os.environ.get("KAGGLE_USERNAME") or config.get("username")
    key = os.environ.get("KAGGLE_KEY") or config.get("key")
    return bool(username and key)


def _config_dir() -> Path:
    """Where the client reads kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, else the XDG folder."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path(os.path.expanduser("~"))
    legacy = home / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return legacy


def _describe_failure(error: Exception, dataset: str) -> str:
    status = _http_status(error)
    if status == 401:
        return f"Kaggle refused the download of {dataset} (HTTP 401): the credentials were rejected"
    if status == 403:
        return (f"Kaggle refused the download of {dataset} (HTTP 403): the credentials were rejected, "
                "or this account has not accepted the dataset's terms on its Kaggle page")
    if status == 404:
        return (f"Kaggle has no dataset {dataset!r} (HTTP 404): check download.<dataset>.kaggle_dataset "
                "in params.yaml (owner/name)")
    if status is not None:
        return f"Kaggle download of {dataset} failed (HTTP {status}): {error}"
    return f"Kaggle download of {dataset} failed: {type(error).__name__}: {error}"


def _http_status(error: Exception) -> int | None:
    response = getattr(error, "response", None)  # requests.HTTPError (kaggle 2.x)
    status = getattr(response, "status_code", None) or getattr(error, "status", None)  # kaggle 1.x ApiException
    return status if isinstance(status, int) else None
