"""Talking to a running Ray cluster's Serve REST API (the dashboard, port 8265): deploy a built
config, read the status of applications, delete one. Ray 2.60 protects that API with a token
(`~/.ray/auth_token` on the head node); it is sent when found, and its absence explained."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from raystore._private.deploy.repository import loaded_model_of
from raystore.exceptions import ClusterError

APPLICATIONS = "/api/serve/applications/"


def auth_token() -> str | None:
    """The Ray auth token: $RAY_AUTH_TOKEN, the file $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token:
        return token.strip()
    path = Path(os.path.expanduser(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")))
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _request(address: str, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    url = address.rstrip("/") + path
    headers = {"Content-Type": "application/json"}
    token = auth_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace").strip()[:500]
        if err.code == 401:
            raise ClusterError(
                f"{address} wants a Ray auth token and none was found: copy ~/.ray/auth_token from the "
                "head node, or set RAY_AUTH_TOKEN"
            ) from None
        if err.code == 403:
            raise ClusterError(f"{address} refused the Ray auth token (wrong cluster?): {detail}") from None
        raise ClusterError(f"{method} {url} failed with {err.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ClusterError(
            f"cannot reach the Ray dashboard at {address} ({reason}); is the cluster up and the address "
            "http://HEAD:8265?"
        ) from None
    return json.loads(text) if text.strip() else None


def serve_status(address: str) -> dict[str, Any]:
    """Serve's view of the cluster: applications with their status and deployments."""
    return _request(address, "GET", APPLICATIONS) or {}


def deploy_config(
    address: str, config: dict[str, Any], *, wait_s: float = 300, poll_s: float = 1.0, on_progress: Any = None
) -> dict[str, Any]:
    """Deploy a Serve config (`raystore build` output) and wait until its applications are RUNNING.

    A PUT replaces the cluster's whole set of declaratively deployed applications, so applications
    already there and not in `config` are kept by merging them in.
    """
    current = serve_status(address)
    names = [app["name"] for app in config["applications"]]
    kept = [
        app_status["deployed_app_config"]
        for name, app_status in (current.get("applications") or {}).items()
        if name not in names and app_status.get("deployed_app_config")
    ]
    body = {**config, "applications": kept + list(config["applications"])}
    _request(address, "PUT", APPLICATIONS, body)
    deadline = time.time() + wait_s
    while True:
        applications = serve_status(address).get("applications") or {}
        states = {name: (applications.get(name) or {}).get("status", "NOT_STARTED") for name in names}
        if on_progress:
            on_progress(states)
        failed = {
            n: applications[n].get("message", "") for n, s in states.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")
        }
        if failed:
            details = "; ".join(
                f"{n}: {m.strip().splitlines()[-1] if m.strip() else 'no message'}" for n, m in failed.items()
            )
            raise ClusterError(f"deployment failed: {details}")
        if all(s == "RUNNING" for s in states.values()):
            return {n: applications[n] for n in names}
        if time.time() > deadline:
            raise ClusterError(f"not running after {wait_s:.0f} s: {states}; see `raystore status --address {address}`")
        time.sleep(poll_s)


def delete_application(address: str, name: str, *, keep_loaded: bool = False) -> None:
    """Remove one application, keeping the others deployed.

    The models loaded into a `--model` server over the V2 repository API are applications of
    their own, which Serve's REST API cannot delete one by one: while the server has any, it is
    not deleted (unless `keep_loaded`), so that they can still be unloaded through it."""
    current = serve_status(address).get("applications") or {}
    if name not in current:
        raise ClusterError(f"no application {name!r} on {address}; it has {sorted(current)}")
    if (current[name] or {}).get("status") == "DELETING":
        raise ClusterError(f"no application {name!r} on {address}: it is being deleted")
    models = sorted(
        str(tag)
        for n, s in current.items()
        if (tag := loaded_model_of(name, n)) is not None and s.get("status") != "DELETING"
    )
    if models and not keep_loaded:
        raise ClusterError(
            f"{name!r} has models loaded over the V2 repository API, each an application of its own: {models}. "
            f"Unload them through it first (POST /v2/repository/models/NAME/unload, or tritonclient's "
            "unload_model), or pass --keep-loaded to delete only the server and leave them running"
        )
    kept = [s["deployed_app_config"] for n, s in current.items() if n != name and s.get("deployed_app_config")]
    # A PUT, even of no applications: it deletes only config-deployed ones, where a DELETE shuts
    # Serve down with every application, the loaded models and others' `serve.run` ones too.
    _request(address, "PUT", APPLICATIONS, {"applications": kept})
