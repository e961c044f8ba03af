"""The model repository of a `raystore serve --model` server, as the Open Inference Protocol's
repository extension offers it: every model of the store with its state, and models loaded and
unloaded while the server runs.

A loaded model runs as a Serve application of its own, `SERVICE:NAME:VERSION` (the separator is in
no service, model or version name), which the ingress deploys through Serve's controller: unloading
deletes it and frees its replicas. Serve's list of applications is the one record of what is
loaded, so every ingress replica sees the same models, and a restarted ingress finds them again.
The models the server was started with belong to its own application and stay while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Collection
from typing import Any

from raystore._private.runner.model import Model
from raystore._private.runner.runner import Runner
from raystore._private.runner.served import runner_applications
from raystore._private.store import default_store
from raystore.exceptions import BadInput, InvalidTag, NotFound, RaystoreError, RunnerNotReady
from raystore.tag import Tag

logger = logging.getLogger("raystore.serve")

SEPARATOR = ":"
LOAD_TIMEOUT_S = 120.0  # a model whose replica has not started by then is taken down again
MIN_CPUS = 0.01  # Ray places fractions of a CPU to 0.0001
_POLL_S = 0.25
_ROUTABLE = ("RUNNING", "UNHEALTHY")  # Serve's application statuses in which a loaded model answers
_STATES = {"DEPLOYING": "LOADING", "DELETING": "UNLOADING", "RUNNING": "READY", "UNHEALTHY": "READY"}


class StoreRepository:
    """The store's models for the server `service` (a Serve application of that name): those
    loaded over the V2 API ask for `cpus_per_model` CPUs a replica (with `fit_to_free`, on one
    machine: half of what is free when that is less, so that it fills up slowly), and GPUs as
    `to_runner`'s `resources="auto"` decides."""

    def __init__(
        self, service: str, cpus_per_model: float, *, fit_to_free: bool = False, load_timeout_s: float = LOAD_TIMEOUT_S
    ):
        self.service = service
        self.cpus_per_model = cpus_per_model
        self.fit_to_free = fit_to_free  # local: ask for half the free CPUs when less than cpus_per_model
        self.load_timeout_s = load_timeout_s
        self._runners: dict[str, Runner] = {}  # by application: reached through its handle
        self._loads: dict[str, asyncio.Future] = {}  # by NAME:VERSION: one load at a time in this replica

    def __getstate__(self) -> dict[str, Any]:  # the live state stays in the replica that built it
        return {
            "service": self.service,
            "cpus_per_model": self.cpus_per_model,
            "fit_to_free": self.fit_to_free,
            "load_timeout_s": self.load_timeout_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def application(self, tag: Tag) -> str:
        return SEPARATOR.join((self.service, tag.name, str(tag.version)))

    def tag_of(self, application: str) -> Tag | None:
        return loaded_model_of(self.service, application)

    # ---- what is loaded -------------------------------------------------------------------------

    async def loaded(self) -> list[Runner]:
        statuses = await asyncio.to_thread(application_statuses)
        runners = {}
        for application, (status, _) in statuses.items():
            tag = self.tag_of(application)
            if tag is None or status not in _ROUTABLE:
                continue
            runner = self._runners.get(application)
            if runner is None:
                try:
                    runner = await asyncio.to_thread(self._runner_of, tag, application)
                except Exception as exc:  # deleted since the status was read (an unload on its way)
                    logger.warning("model application %r is gone: %s", application, exc)
                    continue
            runners[application] = runner
        self._runners = runners
        return list(runners.values())

    def _runner_of(self, tag: Tag, application: str) -> Runner:
        from ray import serve

        runner = model_runner(Model.of(default_store().get(tag)), self.cpus_per_model)
        return runner.served_through(serve.get_app_handle(application))

    async def index(self, served: Any) -> list[dict[str, str]]:
        statuses, stored = await asyncio.gather(
            asyncio.to_thread(application_statuses), asyncio.to_thread(default_store().list)
        )
        own = set(served)
        every_version = {key.split(":")[0] for key in own if key.endswith(":*")}  # served on demand
        states: dict[str, tuple[str, str]] = {key: ("READY", "") for key in own if not key.endswith(":*")}
        states.update({str(m.tag): ("READY", "") for m in stored if m.tag.name in every_version})
        for application, (status, message) in statuses.items():
            tag = self.tag_of(application)
            if tag is not None:
                state = _STATES.get(status, "UNAVAILABLE")
                states[str(tag)] = (state, message if state == "UNAVAILABLE" else "")
        entries = []
        listed = set()
        for model in stored:
            key = str(model.tag)
            listed.add(key)
            state, reason = states.get(key, ("UNAVAILABLE", "not loaded"))
            entries.append({"name": model.tag.name, "version": model.tag.version, "state": state, "reason": reason})
        for key, (state, reason) in sorted(states.items()):  # served, but deleted from the store since
            if key not in listed:
                name, _, version = key.partition(":")
                entries.append({"name": name, "version": version, "state": state, "reason": reason})
        return entries

    # ---- load and unload ------------------------------------------------------------------------

    async def load(self, tag: str, own: Collection[str]) -> str:
        stored = await asyncio.to_thread(default_store().get, tag)  # NotFound, AmbiguousTag
        key = str(stored.tag)
        if _own(own, stored.tag):
            return key  # served by the server's own application already
        task = self._loads.get(key)
        if task is None or task.done():
            task = self._loads[key] = asyncio.ensure_future(self._load(Model.of(stored)))
        # The load goes on, and cleans up after itself, when the client gives up (tritonclient
        # waits 60 s by default) and Serve cancels this request.
        await asyncio.shield(task)
        return key

    async def _load(self, model: Model) -> None:
        key, application = str(model.tag), self.application(model.tag)
        status, _ = (await asyncio.to_thread(application_statuses)).get(application, (None, ""))
        if status in _ROUTABLE:
            return
        runner = None
        # Deploying: another ingress replica is loading it (two replicas that both see nothing
        # both deploy; the second deploy only restarts the model's replica).
        if status != "DEPLOYING":
            runner = await asyncio.to_thread(model_runner, model, await asyncio.to_thread(self._cpus_to_ask))
            await asyncio.to_thread(_deploy, runner, application)
            logger.info("loading model %s as application %r", key, application)
        try:
            await self._wait_until_running(key, application, runner)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_delete, application))  # a failed load leaves nothing running
            raise

    def _cpus_to_ask(self) -> float:
        if not self.fit_to_free:
            return self.cpus_per_model
        import ray

        free = ray.available_resources().get("CPU", 0.0)
        return min(self.cpus_per_model, max(MIN_CPUS, math.floor(100 * free / 2) / 100))

    async def _wait_until_running(self, key: str, application: str, runner: Runner | None) -> None:
        deadline = time.monotonic() + self.load_timeout_s
        while True:
            status, message = (await asyncio.to_thread(application_statuses)).get(application, (None, ""))
            if status in _ROUTABLE:
                return
            if status == "DEPLOY_FAILED" or status is None:
                raise RaystoreError(f"model {key} failed to load: {message or 'its application was deleted'}")
            if time.monotonic() > deadline:
                asks = f" (a replica asks for {_asks(runner)})" if runner is not None else ""
                raise RunnerNotReady(
                    f"model {key} did not start within {self.load_timeout_s:g} s{asks}; it is unloaded again. "
                    "The cluster may have no room for it: unload another model or add nodes"
                )
            await asyncio.sleep(_POLL_S)

    async def unload(self, tag: str, own: Collection[str]) -> list[str]:
        """Unload what `tag` names: NAME every loaded version, NAME:VERSION (a prefix, `latest`, an
        alias) that one. Versions of the server's own stay; naming one explicitly is refused.
        Nothing loaded by that name is no error, as Triton answers."""
        wanted = Tag.from_str(tag)
        statuses = await asyncio.to_thread(application_statuses)
        loaded = {
            application: found
            for application in statuses
            if (found := self.tag_of(application)) is not None and found.name == wanted.name
        }
        if wanted.version is not None:
            try:
                version = (await asyncio.to_thread(default_store().resolve, wanted)).version
            except NotFound:
                version = str(wanted.version)  # deleted from the store since it was loaded: a prefix then
            if _own(own, Tag(wanted.name, version)):
                raise BadInput(
                    f"{wanted.name}:{version} is served by the server's own application (given when it started) "
                    "and stays while it runs; only models loaded over this API unload"
                )
            loaded = {a: t for a, t in loaded.items() if str(t.version).startswith(version)}
        for application in loaded:
            await asyncio.to_thread(_delete, application)
            self._runners.pop(application, None)
            logger.info("unloading model %s (application %r)", loaded[application], application)
        return sorted(str(t) for t in loaded.values())


def loaded_model_of(service: str, application: str) -> Tag | None:
    """The model a Serve application loaded into the server `service` holds, or None for any
    other application."""
    owner, _, rest = application.partition(SEPARATOR)
    name, _, version = rest.partition(SEPARATOR)
    if owner != service or not name or not version:
        return None
    try:
        return Tag(name, version)
    except InvalidTag:
        return None  # named like ours, but not a model's application


def model_runner(model: Model, cpus: float, name: str | None = None) -> Runner:
    """A store model's runner as a `--model` server runs it: every signature in one deployment,
    `cpus` CPUs a replica, GPUs "auto" (one where the framework uses it and the cluster has one)."""
    return model.to_runner(name=name, colocate=True, resources={"num_cpus": cpus})


def _own(own: Collection[str], tag: Tag) -> bool:
    """Whether the server's own application serves `tag` (`own`: NAME:VERSION, or NAME:* for every version)."""
    return f"{tag.name}:{tag.version}" in own or f"{tag.name}:*" in own


def _asks(runner: Runner) -> str:
    resources = runner.spec.methods[next(iter(runner.spec.methods))].resources
    return f"{resources.num_cpus:g} CPUs" + (f" and {resources.num_gpus:g} GPUs" if resources.num_gpus else "")


def _deploy(runner: Runner, application: str) -> None:
    from ray import serve

    (app,) = {id(a): a for a in runner_applications(runner.spec).values()}.values()  # colocated: one
    serve.run_many(
        [serve.RunTarget(target=app, name=application, route_prefix=None)],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )


def _delete(application: str) -> None:
    from ray import serve

    serve.delete(application, _blocking=False)


def application_statuses() -> dict[str, tuple[str, str]]:
    """Serve's applications now: name -> (status, message). A failed application's message says
    why its deployments failed (the last line of each one's error), not only that they did."""
    from ray import serve

    statuses = {}
    for name, app in serve.status().applications.items():
        status = getattr(app.status, "value", str(app.status))
        message = app.message or ""
        if status == "DEPLOY_FAILED":
            causes = [_last_line(d.message) for d in (app.deployments or {}).values() if d.message]
            message = "; ".join([message, *causes]) if causes else message
        statuses[name] = (status, message)
    return statuses


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def delete_loaded_models(service: str) -> list[str]:
    """Delete the applications of the models loaded into the server `service` (when it stops on a
    Ray it did not start); the names of those deleted."""
    deleted = []
    for application in application_statuses():
        if loaded_model_of(service, application) is not None:
            _delete(application)
            deleted.append(application)
    return deleted
