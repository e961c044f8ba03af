"""The web console (`raystore ui`): the catalog it reads, and its pages in a real browser (Debian's
chromium through Playwright), served by uvicorn from a store of real saved models."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from browser import page_of, served

import raystore
from raystore._private.console.catalog import Catalog, parse_label_filter
from raystore._private.deploy.local import free_port
from raystore._private.store import default_store
from raystore.exceptions import InvalidArgument, NotFound


class Weights:
    """A tiny model with a `predict` method, for signatures."""

    def __init__(self, values):
        self.values = values

    def predict(self, x):
        return x


def _save(name, value, **options):
    return raystore.picklable_model.save_model(name, value, **options)


def _three_versions_and_another():
    """iris_clf three times (the last one prod), and `table` of another owner."""
    saved = [
        _save(
            "iris_clf",
            Weights([i] * 100 * (i + 1)),
            labels={"owner": "nlp_team", "stage": "prod" if i == 2 else "dev"},
            metadata={"acc": 0.9 + i / 100, "data": {"version": f"2021082{i}", "rows": 150}},
            signatures={"predict": {"batchable": True, "batch_dim": [0, 1]}},
        )
        for i in range(3)
    ]
    other = _save("table", {"a": 1}, labels={"owner": "other"})
    return saved, other


# ---- the catalog -----------------------------------------------------------------------------


def test_the_catalog_filters_sorts_and_pages():
    saved, other = _three_versions_and_another()
    for i in range(5):
        _save(f"extra_{i}", {"i": i})
    catalog = Catalog(default_store())
    page = catalog.query(per_page=3)
    assert [r.name for r in page.rows] == ["extra_0", "extra_1", "extra_2"] and page.pages == 3 and page.total == 7
    assert [r.name for r in catalog.query(page=3, per_page=3).rows] == ["table"]
    iris = catalog.query("IRIS").rows
    assert [r.name for r in iris] == ["iris_clf"]
    assert iris[0].newest.tag == saved[2].tag and len(iris[0].versions) == 3
    assert iris[0].labels == {"owner": "nlp_team", "stage": "prod"}
    assert iris[0].total_size == sum(m.size for m in saved)
    assert [r.name for r in catalog.query(labels={"owner": "nlp_team"}).rows] == ["iris_clf"]
    assert [r.name for r in catalog.query(labels={"stage": "dev"}).rows] == ["iris_clf"]  # an older version's label
    assert [r.name for r in catalog.query(labels={"owner": None}).rows] == ["iris_clf", "table"]
    assert catalog.query(sort="date").rows[0].name == "extra_4"
    assert catalog.query(sort="size").rows[0].name == "iris_clf"
    with pytest.raises(InvalidArgument, match="sort must be one of name, date, size"):
        catalog.query(sort="colour")


def test_the_catalog_sees_deleted_and_replaced_versions():
    saved, _ = _three_versions_and_another()
    catalog = Catalog(default_store())
    assert len(catalog.model("iris_clf").versions) == 3
    raystore.models.delete(saved[0].tag)
    assert [v.tag for v in catalog.model("iris_clf").versions] == [saved[2].tag, saved[1].tag]
    with pytest.raises(NotFound):
        catalog.version("iris_clf", saved[0].tag.version)
    # a model.yaml written again (a version replaced in place) is read again
    info_path = Path(default_store().location_of(saved[1].tag)) / "model.yaml"
    text = info_path.read_text().replace("stage: dev", "stage: retired")
    info_path.write_text(text)
    os.utime(info_path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert catalog.version("iris_clf", saved[1].tag.version).info.labels["stage"] == "retired"


def test_a_corrupt_version_is_left_out_not_fatal():
    saved, _ = _three_versions_and_another()
    (Path(default_store().location_of(saved[0].tag)) / "model.yaml").write_text("name: [unclosed\n")
    catalog = Catalog(default_store())
    assert [v.tag for v in catalog.model("iris_clf").versions] == [saved[2].tag, saved[1].tag]


def test_label_filters_parse_and_say_what_is_wrong():
    assert parse_label_filter("owner=nlp_team, stage=dev") == {"owner": "nlp_team", "stage": "dev"}
    assert parse_label_filter("owner") == {"owner": None}
    with pytest.raises(InvalidArgument, match="has no key"):
        parse_label_filter("=dev")


# ---- in a browser ------------------------------------------------------------------------------


def _console(access=None):
    """The console of this test's store (read-only unless `access` says), served; yields its URL."""
    from raystore._private.console.app import console_app

    return served(console_app(default_store(), access=access))


_browser = page_of


def test_the_console_lists_filters_shows_and_compares_in_a_browser():
    saved, _ = _three_versions_and_another()
    newest = saved[2]
    with _console() as url, _browser(url) as (page, refused):
        page.goto(url)
        assert page.locator("#models tbody tr").count() == 2
        row = page.locator('#models tr[data-model="iris_clf"]')
        assert row.locator("td").nth(1).inner_text() == "3"
        assert newest.tag.version in row.inner_text() and "stage=prod" in row.inner_text()

        page.fill('input[name="label"]', "owner=other")
        page.click('button[type="submit"]')
        page.wait_for_url("**label=owner%3Dother**")
        assert [r.get_attribute("data-model") for r in page.locator("#models tbody tr").all()] == ["table"]

        page.goto(f"{url}/models/iris_clf/{newest.tag.version}")
        assert page.locator("#tag").inner_text().startswith(str(newest.tag))
        assert "owner=nlp_team" in page.locator("#labels").inner_text()
        metadata = page.locator("#metadata").inner_text()
        assert "20210822" in metadata and "rows" in metadata
        signature = page.locator('#signatures tr[data-method="predict"]').inner_text()
        assert "yes" in signature and "0, 1" in signature
        files = page.locator("#files").inner_text()
        for entry in newest.manifest:
            assert entry.path in files and entry.sha256 in files
        assert f'raystore.picklable_model.load_model("{newest.tag}")' in page.locator("#python").inner_text()

        page.goto(f"{url}/models/iris_clf")
        page.check(f'input[value="{saved[0].tag}"]')
        page.check(f'input[value="{newest.tag}"]')
        page.click("#compare")
        page.wait_for_selector("#compare-table")
        marked = {r.get_attribute("data-key") for r in page.locator("#compare-table tr.diff").all()}
        assert marked == {"labels.stage", "metadata.acc", "metadata.data.version"}
        assert "diff" not in (
            page.locator('#compare-table tr[data-key="metadata.data.rows"]').get_attribute("class") or ""
        )
        color = page.locator('#compare-table tr[data-key="metadata.acc"] td').first.evaluate(
            "el => getComputedStyle(el).backgroundColor"
        )
        assert color not in ("rgba(0, 0, 0, 0)", "transparent")  # highlighted, not just classed

        page.goto(f"{url}/models/nope")
        assert "no model named 'nope'" in page.locator("#error").inner_text()
    assert refused == []  # every asset came from the console itself


def test_an_empty_store_says_how_to_save_a_first_model():
    with _console() as url, _browser(url) as (page, _):
        page.goto(url)
        assert "save_model" in page.locator("#empty-store").inner_text()


def test_raystore_ui_serves_the_store_until_ctrl_c(subprocess_env):
    _save("served_model", {"x": 1})
    port = free_port()
    command = [str(Path(sys.executable).with_name("raystore")), "ui", "--port", str(port)]
    server = subprocess.Popen(command, env=subprocess_env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    body = response.read().decode()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "raystore ui never answered"
                time.sleep(0.2)
        assert "served_model" in body
        rebound = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": f"attacker.example:{port}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=5)
        assert refused.value.code == 421
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=20)
    assert server.returncode == 0 and f"Console of {subprocess_env['RAYSTORE_HOME']}" in stderr
    assert "(writes allowed)" in stderr  # on loopback, by default

    refused = subprocess.run(
        [*command, "--host", "0.0.0.0", "--allow-writes"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1 and "set RAYSTORE_UI_TOKEN" in refused.stderr


# ---- actions ------------------------------------------------------------------------------------


def _writable():
    from raystore._private.console.access import WriteAccess

    return WriteAccess(writes=True)


def test_delete_asks_first_then_removes_the_version_from_disk():
    saved, _ = _three_versions_and_another()
    doomed = saved[1]
    folder = Path(default_store().location_of(doomed.tag))
    assert folder.exists()
    with _console(_writable()) as url, _browser(url) as (page, refused):
        page.goto(f"{url}/models/iris_clf/{doomed.tag.version}")
        page.click("#delete")
        page.wait_for_selector("#delete-form")
        assert "cannot be undone" in page.inner_text("main")
        assert folder.exists()  # asking deleted nothing
        page.click("#confirm-delete")
        page.wait_for_url(f"{url}/models/iris_clf")
        shown = {r.get_attribute("data-version") for r in page.locator("#versions tbody tr").all()}
        assert shown == {saved[0].tag.version, saved[2].tag.version}
    assert not folder.exists()
    assert [m.tag for m in raystore.models.list("iris_clf")] == [saved[2].tag, saved[0].tag]
    assert refused == []


def test_a_download_is_an_archive_that_import_model_accepts(tmp_path):
    saved, _ = _three_versions_and_another()
    wanted = saved[0]
    with _console() as url, _browser(url) as (page, _):
        page.goto(f"{url}/models/iris_clf/{wanted.tag.version}")
        with page.expect_download() as download:
            page.click("#download")
        target = tmp_path / download.value.suggested_filename
        download.value.save_as(target)
    assert target.name == f"iris_clf-{wanted.tag.version}.raymodel"
    raystore.models.delete(wanted.tag)
    restored = raystore.models.import_model(str(target), quiet=True)
    assert restored.tag == wanted.tag and restored.info.metadata == wanted.info.metadata
    assert raystore.models.verify(restored.tag).tag == wanted.tag


def test_aliases_are_set_and_removed_from_a_version_page():
    saved, _ = _three_versions_and_another()
    with _console(_writable()) as url, _browser(url) as (page, _):
        page.goto(f"{url}/models/iris_clf/{saved[0].tag.version}")
        page.fill('#alias-form input[name="alias"]', "champion")
        page.click('#alias-form button[type="submit"]')
        page.wait_for_selector('[data-remove-alias="champion"]')
        assert raystore.models.aliases("iris_clf") == {"champion": saved[0].tag.version}
        page.click('[data-remove-alias="champion"]')
        page.wait_for_load_state()
        page.wait_for_selector('[data-remove-alias="champion"]', state="detached")
    assert raystore.models.aliases("iris_clf") == {}


def test_verify_tells_a_tampered_file():
    saved, _ = _three_versions_and_another()
    with _console() as url, _browser(url) as (page, _):
        page.goto(f"{url}/models/iris_clf/{saved[0].tag.version}/verify")
        assert page.get_attribute("#verify-result", "data-ok") == "yes"
        (Path(default_store().location_of(saved[0].tag)) / "saved_model.pkl").write_bytes(b"tampered")
        page.goto(f"{url}/models/iris_clf/{saved[0].tag.version}/verify")
        assert page.get_attribute("#verify-result", "data-ok") == "no"
        assert "saved_model.pkl" in page.inner_text("#verify-result")


def _post_form(url: str, fields: dict, headers: dict | None = None) -> tuple[int, str]:
    import urllib.error
    import urllib.parse

    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_writes_are_refused_read_only_cross_site_and_without_the_token():
    from raystore._private.console.access import WriteAccess

    saved, _ = _three_versions_and_another()
    version = saved[0].tag.version
    folder = Path(default_store().location_of(saved[0].tag))
    read_only = WriteAccess(writes=False)
    with _console(read_only) as url:
        status, body = _post_form(f"{url}/models/iris_clf/{version}/delete", {"form_token": read_only.form_token})
        assert status == 403 and "read-only" in body
        assert "/delete" not in urllib.request.urlopen(f"{url}/models/iris_clf/{version}").read().decode()

    guarded = WriteAccess(writes=True, token="s3cret-token")
    with _console(guarded) as url:
        delete = f"{url}/models/iris_clf/{version}/delete"
        status, body = _post_form(delete, {"form_token": guarded.form_token})
        assert status == 401 and "sign in first" in body
        status, _ = _post_form(delete, {"form_token": "guessed"})
        assert status == 403  # not the console's own form
        status, _ = _post_form(delete, {}, {"Authorization": "Bearer wrong-token"})
        assert status == 403  # a wrong token is no token, and there is no form token either
        status, _ = _post_form(
            delete,
            {"form_token": guarded.form_token},
            {"Authorization": "Bearer s3cret-token", "Origin": "http://evil.example"},
        )
        assert status == 403  # another site's page posting with the user's credentials
        assert folder.exists()
        # a script with the token needs no form token: a browser never adds that header itself
        other = saved[1].tag
        status, _ = _post_form(
            f"{url}/models/iris_clf/{other.version}/delete", {}, {"Authorization": "Bearer s3cret-token"}
        )
        assert status == 200 and other not in [m.tag for m in raystore.models.list("iris_clf")]

        with _browser(url) as (page, _):  # a person signs in once, then deletes
            page.goto(f"{url}/models/iris_clf/{version}")
            page.click("#sign-in")
            page.fill('#login-form input[name="token"]', "wrong")
            page.click('#login-form button[type="submit"]')
            assert "not the console's token" in page.inner_text("#login-error")
            page.fill('#login-form input[name="token"]', "s3cret-token")
            page.click('#login-form button[type="submit"]')
            page.goto(f"{url}/models/iris_clf/{version}/delete")
            page.click("#confirm-delete")
            page.wait_for_url(f"{url}/models/iris_clf")
    assert not folder.exists()


def test_only_exact_versions_are_deleted_and_bad_tags_are_a_clear_error():
    saved, _ = _three_versions_and_another()
    access = _writable()
    with _console(access) as url:
        for version in ("latest", saved[2].tag.version[:6]):  # `latest`, a prefix
            status, body = _post_form(f"{url}/models/iris_clf/{version}/delete", {"form_token": access.form_token})
            assert status == 404 and "not in" in body
        assert len(raystore.models.list("iris_clf")) == 3
        status, body = _post_form(f"{url}/models/..%2F..%2Fetc/x/delete", {"form_token": access.form_token})
        assert status == 404
        try:
            urllib.request.urlopen(f"{url}/compare?tag=bad%20name:1&tag=iris_clf:{saved[0].tag.version}")
        except urllib.error.HTTPError as err:
            assert err.code == 400
        else:
            raise AssertionError("a bad tag to compare was accepted")


def test_a_loopback_console_answers_only_to_loopback_names():
    """DNS rebinding: a page of attacker.example whose name now points at 127.0.0.1 reads nothing."""
    import http.client

    from raystore._private.console.app import console_app

    _three_versions_and_another()
    with served(console_app(default_store(), access=_writable(), loopback_only=True)) as url:
        port = int(url.rsplit(":", 1)[1])
        for host, status in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), (f"attacker.example:{port}", 421)):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/", headers={"Host": host})
            assert connection.getresponse().status == status, host
            connection.close()


def test_an_abandoned_download_frees_its_worker_thread(monkeypatch):
    """The response waits for the archive's next chunk on a worker thread; a client that leaves
    meanwhile must not leave that thread waiting for good (the pool is small and shared)."""
    import asyncio
    import concurrent.futures

    from raystore._private.console import app as console_module

    saved, _ = _three_versions_and_another()

    def slow_archive(model, out, **kwargs):
        out.write(b"first chunk")
        time.sleep(2)  # a slow disk or object store between two files
        out.write(b"second chunk")

    monkeypatch.setattr(console_module.archive, "write_archive", slow_archive)

    async def main():
        asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        chunks = console_module._archive_chunks(default_store().get(saved[0].tag))
        assert await anext(chunks) == b"first chunk"
        waiting = asyncio.ensure_future(anext(chunks))  # its worker thread waits for the next chunk
        await asyncio.sleep(0.2)
        waiting.cancel()  # the client went away
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await chunks.aclose()
        return await asyncio.wait_for(asyncio.to_thread(lambda: "the worker is free"), 5)

    assert asyncio.run(main()) == "the worker is free"


def test_writes_beyond_loopback_need_a_token():
    from raystore._private.console.access import WriteAccess

    assert WriteAccess.for_host("127.0.0.1", allow_writes=None, token=None).writes
    assert not WriteAccess.for_host("0.0.0.0", allow_writes=None, token=None).writes
    assert WriteAccess.for_host("0.0.0.0", allow_writes=True, token="t").writes
    with pytest.raises(InvalidArgument, match="set RAYSTORE_UI_TOKEN"):
        WriteAccess.for_host("0.0.0.0", allow_writes=True, token=None)


# ---- in a service: /ui ----------------------------------------------------------------------------


def _iris_service(iris, iris_clf):
    saved = raystore.sklearn.save_model(
        "iris_clf", iris_clf, labels={"owner": "svc"}, signatures={"predict": {"batchable": True}}
    )
    runner = raystore.models.get(saved.tag).to_runner(embedded=True)
    svc = raystore.Service("iris_ui", runners=[runner])

    @svc.api(input=raystore.io.NumpyNdarray(), output=raystore.io.NumpyNdarray())
    async def classify(x):
        return await runner.predict.async_run(x)

    runner.init_local()
    return svc, runner, saved


def _service_app(svc):
    """The service's ASGI app, served; yields its URL."""
    from raystore._private.service.app import ServiceApp

    class Metrics:
        def record(self, *args):
            pass

    async def ready():
        return True

    return served(ServiceApp(svc, ready, Metrics()))


def _classify(url: str) -> None:
    request = urllib.request.Request(
        f"{url}/classify", data=b"[[5.9, 3.0, 5.1, 1.8]]", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.read() == b"[2]"


def test_a_service_shows_its_runners_and_live_batch_statistics_at_ui(iris, iris_clf):
    import json

    svc, runner, saved = _iris_service(iris, iris_clf)
    _save("not_the_service_s", {"secret": 1})
    try:
        with _service_app(svc) as url:
            for _ in range(3):
                _classify(url)
            status = json.loads(urllib.request.urlopen(f"{url}/ui/service.json").read())
            (entry,) = status["runners"]
            assert entry["models"] == [str(saved.tag)] and entry["mode"] == "embedded"
            (method,) = entry["methods"]
            assert method["stats"]["requests"] == 3 and method["stats_from"] == "this replica"

            with _browser(url) as (page, refused):
                page.goto(f"{url}/ui")  # redirected to /ui/
                assert page.locator('#models tr[data-model="iris_clf"]').count() == 1
                assert page.locator("#read-only").count() == 1  # a service's console changes nothing
                page.click("#service-link")
                cell = page.locator('[data-runner="iris_clf"] tr[data-method="predict"] [data-stat="requests"]')
                assert cell.inner_text() == "3"
                for _ in range(2):
                    _classify(url)
                page.wait_for_function(
                    "() => document.querySelector('[data-stat=\"requests\"]').textContent === '5'", timeout=15_000
                )
                page.goto(f"{url}/ui/models/iris_clf/{saved.tag.version}")
                assert page.locator("#delete").count() == 0 and page.locator("#alias-form").count() == 0
                assert page.locator("#download").count() == 0  # a service's clients get its APIs, not files
                page.goto(f"{url}/ui/")
                assert page.locator("#models tbody tr").count() == 1  # its own model, not the whole store
            assert refused == []
            for path in ("/ui/models/not_the_service_s", f"/ui/models/iris_clf/{saved.tag.version}/download"):
                with pytest.raises(urllib.error.HTTPError) as refusal:
                    urllib.request.urlopen(f"{url}{path}")
                assert refusal.value.code == 404
    finally:
        runner.destroy_local()


def test_a_service_can_leave_the_console_out():
    svc = raystore.Service("no_console", ui=False)
    svc.api(input=raystore.io.Text(), output=raystore.io.Text(), name="echo")(str.upper)
    with _service_app(svc) as url:
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/ui/")
        assert missing.value.code == 404


def test_ui_routes_are_the_service_s_own():
    svc = raystore.Service("reserved")

    async def echo(x):
        return x

    for route in ("/ui", "/ui/models"):
        with pytest.raises(InvalidArgument, match="anything under /docs/ and /ui/"):
            svc.api(input=raystore.io.Text(), output=raystore.io.Text(), route=route)(echo)


@pytest.mark.s3
def test_the_console_of_a_remote_store(s3_bucket, monkeypatch):
    """`raystore ui --remote`: the same pages over object storage, its summaries re-read after
    `recheck_s` (a listing names versions, but says nothing of a model.yaml written again)."""
    from starlette.testclient import TestClient

    from raystore._private.console.app import console_app
    from raystore._private.store import remote_store

    monkeypatch.setenv("RAYSTORE_REMOTE", s3_bucket)
    saved, _ = _three_versions_and_another()
    for model in saved:
        raystore.models.push(model.tag, quiet=True)
    store = remote_store()
    clock = [0.0]
    catalog = Catalog(store, recheck_s=30, clock=lambda: clock[0])
    (row,) = catalog.query(labels={"owner": "nlp_team"}).rows
    assert [v.tag for v in row.versions] == [m.tag for m in reversed(saved)]
    assert row.total_size == sum(m.size for m in saved)

    client = TestClient(console_app(store))
    page = client.get(f"/models/iris_clf/{saved[0].tag.version}")
    assert page.status_code == 200 and s3_bucket in page.text and saved[0].manifest[0].sha256 in page.text
    download = client.get(f"/models/iris_clf/{saved[0].tag.version}/download")
    assert download.status_code == 200 and download.content[:512].startswith(b"iris_clf/")
