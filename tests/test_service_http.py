"""A service over real HTTP: every IO descriptor, every error status, docs, health, concurrency,
and Python handle calls to its APIs."""

import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from ray import serve

pytestmark = pytest.mark.ray


def post(url, body, content_type="application/json", timeout=60):
    data = (
        body
        if isinstance(body, bytes)
        else (json.dumps(body).encode() if content_type == "application/json" else body.encode())
    )
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def service_url(serve_http):
    from raystore.serving import build_application  # what built configs name as import_path

    serve.run(build_application({"service": "services:svc"}), name="everything", route_prefix="/everything")
    url = f"{serve_http}/everything"
    deadline = time.time() + 60
    while get(f"{url}/readyz")[0] != 200:
        assert time.time() < deadline, "service never became ready"
        time.sleep(0.5)
    yield url
    serve.delete("everything")


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def test_numpy_api_through_a_served_runner(service_url):
    status, headers, body = post(f"{service_url}/scale", [[1, 2, 3], [4, 5, 6]])
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body) == [[10, 20, 30], [40, 50, 60]]
    status, _, body = post(f"{service_url}/v2/scale-embedded", [1, 2])
    assert status == 200 and json.loads(body) == [10, 20]
    status, _, body = post(f"{service_url}/scale_direct/", [[1.5, 2]])  # a trailing slash is the same route
    assert status == 200 and json.loads(body) == [[15, 20]]


@pytest.mark.parametrize(
    "route, body, content_type, words",
    [
        ("/scale", [[1, 2]], "application/json", "expected an array of shape (any, 3), got (1, 2)"),
        ("/scale", [[1, 2, 3], [4, 5]], "application/json", "not a rectangular array"),
        ("/scale", [["a", "b", "c"]], "application/json", "cannot convert the array to float32"),
        ("/scale", b"{not json", "application/json", "not valid JSON"),
        ("/scale", b"", "application/json", "the request body is empty"),
        ("/v2/scale-embedded", [1.5, 2.5], "application/json", "expected an array of int64, got float64"),
        ("/order", {"item": "tea", "quantity": 0}, "application/json", "quantity: Input should be greater than 0"),
        ("/order", {"quantity": 2}, "application/json", "item: Field required"),
    ],
)
def test_bad_input_is_400_saying_what_was_expected(service_url, route, body, content_type, words):
    status, headers, raw = post(f"{service_url}{route}", body, content_type)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert words in error_of(raw)


@pytest.mark.parametrize(
    "route, body, content_type, words",
    [
        ("/scale", "1,2,3", "text/csv", "expected a body of type application/json, got 'text/csv'"),
        ("/grayscale", "x", "text/plain", "expected an image body"),
    ],
)
def test_a_wrong_content_type_is_415(service_url, route, body, content_type, words):
    status, headers, raw = post(f"{service_url}{route}", body, content_type)
    assert status == 415
    assert headers["content-type"].startswith("application/json")
    assert words in error_of(raw)


def test_json_text_and_file_apis(service_url):
    assert json.loads(post(f"{service_url}/order", {"item": "tea", "quantity": 3})[2]) == {"item": "TEA", "total": 6}
    assert json.loads(post(f"{service_url}/echo", {"a": [1, None]})[2]) == {"got": {"a": [1, None]}}
    status, headers, body = post(f"{service_url}/shout", "héllo", "text/plain")
    assert status == 200 and body.decode() == "HÉLLO!" and headers["content-type"].startswith("text/plain")
    status, headers, body = post(f"{service_url}/reverse_bytes", bytes(range(10)), "application/octet-stream")
    assert status == 200 and body == bytes(range(9, -1, -1))


def test_body_over_the_limit_is_413(service_url):
    status, _, body = post(f"{service_url}/echo", {"x": "y" * 5000})
    assert status == 413 and "at most 4096" in error_of(body)


def test_user_errors_are_500_and_the_server_keeps_serving(service_url):
    status, _, body = post(f"{service_url}/fail", "broken on purpose", "text/plain")
    assert status == 500
    assert "ValueError" in error_of(body) and "broken on purpose" in error_of(body)
    assert post(f"{service_url}/shout", "still here", "text/plain")[2] == b"STILL HERE!"


def test_overload_is_503_with_retry_after(service_url):
    status, headers, body = post(f"{service_url}/overloaded", "x", "text/plain")
    assert status == 503 and headers["retry-after"] == "2"
    assert "queue full" in error_of(body)


def test_health_readiness_docs_and_unknown_routes(service_url):
    from openapi_spec_validator import validate

    assert get(f"{service_url}/healthz") == (200, b'{"status":"ok"}')
    assert get(f"{service_url}/readyz")[0] == 200
    status, body = get(f"{service_url}/docs.json")
    spec = json.loads(body)
    validate(spec)
    assert {"/scale", "/v2/scale-embedded", "/order", "/echo", "/shout", "/reverse_bytes"} <= set(spec["paths"])
    order_schema = spec["paths"]["/order"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert order_schema["required"] == ["item", "quantity"]
    assert spec["servers"] == [{"url": "/everything"}]  # "Try it out" calls the mounted routes
    scale_out = spec["paths"]["/scale"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert scale_out == {"$ref": "#/components/schemas/NDArray"}  # a number or arrays of any depth
    assert spec["components"]["schemas"]["NDArray"]["anyOf"][0] == {"type": "number"}
    for page in ("/docs", "/docs/"):  # the page asks for the document by its absolute path
        status, body = get(f"{service_url}{page}")
        assert status == 200 and b"swagger-ui" in body and b'url: "/everything/docs.json"' in body
    status, body = get(f"{service_url}/nope")
    assert status == 404 and "/scale" in error_of(body)
    assert get(f"{service_url}/scale")[0] == 405
    assert get(f"{service_url}/healthz/") == (200, b'{"status":"ok"}')  # a trailing slash is the same route
    status, headers, body = post(f"{service_url}/healthz", {})
    assert status == 405 and headers["allow"] == "GET, HEAD" and "use GET" in error_of(body)
    options = urllib.request.Request(f"{service_url}/scale", method="OPTIONS")  # no CORS on this service
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(options, timeout=30)
    assert refused.value.code == 405 and refused.value.headers["allow"] == "POST"
    status, body = get(f"{service_url}/docs/assets/swagger-ui-bundle.js")  # Swagger UI ships with raystore
    assert status == 200 and b"SwaggerUIBundle" in body
    assert get(f"{service_url}/docs/assets/LICENSE")[1].lstrip().startswith(b"Apache License")
    for name in ("nope.js", "swagger-ui.css.map", "..%2F..%2Fservice.py"):  # only the files it ships
        status, body = get(f"{service_url}/docs/assets/{name}")
        assert status == 404 and ("docs' assets" in error_of(body) or "no route" in error_of(body))
    head = urllib.request.Request(f"{service_url}/readyz", method="HEAD")
    with urllib.request.urlopen(head, timeout=30) as response:
        assert response.status == 200


def test_200_parallel_requests_each_get_their_own_answer(service_url):
    results = {}

    def one(i):
        results[i] = post(f"{service_url}/scale", [[i, i + 1, i + 2]])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 200
    for i, (status, _, body) in results.items():
        assert status == 200, body
        assert json.loads(body) == [[10 * i, 10 * (i + 1), 10 * (i + 2)]]


def test_apis_are_callable_through_a_handle(service_url):
    handle = serve.get_app_handle("everything")
    out = handle.scale.remote(np.array([[1.0, 2.0, 3.0]], dtype=np.float32)).result()
    np.testing.assert_array_equal(out, [[10.0, 20.0, 30.0]])
    assert handle.shout.remote("hi").result() == "HI!"
    with pytest.raises(Exception, match=r"takes HTTP requests here; .*handle\.scale\.remote\(value\)"):
        handle.remote(np.ones((1, 3))).result()


def test_pandas_dataframe_api(service_url):
    status, _, body = post(f"{service_url}/add_columns", [{"a": 1, "b": 2}, {"a": 3, "b": 4, "c": 9}])
    assert status == 200 and json.loads(body) == [{"a": 1, "b": 2, "total": 3}, {"a": 3, "b": 4, "total": 7}]
    status, _, body = post(f"{service_url}/add_columns", "a,b\n5,6\n", "text/csv")
    assert status == 200 and json.loads(body) == [{"a": 5, "b": 6, "total": 11}]
    status, _, body = post(f"{service_url}/add_columns", [{"a": 1}])
    assert status == 400 and "lacks columns ['b']" in error_of(body)


def _png(width=3, height=2, color=(255, 0, 0)):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_api(service_url):
    import io

    from PIL import Image

    status, headers, body = post(f"{service_url}/grayscale", _png(), "image/png")
    assert status == 200 and headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(body))
    assert image.mode == "L" and image.size == (3, 2) and image.getpixel((0, 0)) == 76
    status, _, body = post(f"{service_url}/grayscale", b"not an image", "image/png")
    assert status == 400 and "not an image PIL can read" in error_of(body)


def _multipart(fields):
    boundary = "raystoretestboundary"
    chunks = []
    for name, (content_type, data) in fields.items():
        header = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        if content_type:
            header += f'; filename="{name}"\r\nContent-Type: {content_type}'
        chunks.append(header.encode() + b"\r\n\r\n" + data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_multipart_api(service_url):
    import email.parser

    body, content_type = _multipart({"image": ("image/png", _png(5, 4)), "factor": ("", b"[1.5, 2]")})
    status, headers, raw = post(f"{service_url}/describe_image", body, content_type)
    assert status == 200, raw
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {headers['content-type']}\r\n\r\n".encode() + raw)
    parts = {
        p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in message.get_payload()
    }
    assert json.loads(parts["size"]) == [5, 4] and json.loads(parts["factor"]) == [3.0, 4.0]
    body, content_type = _multipart({"image": ("image/png", _png())})
    status, _, raw = post(f"{service_url}/describe_image", body, content_type)
    assert status == 400 and "lacks fields ['factor']" in error_of(raw)
    body, content_type = _multipart({"image": ("image/png", b"junk"), "factor": ("", b"[1]")})
    status, _, raw = post(f"{service_url}/describe_image", body, content_type)
    assert status == 400 and error_of(raw).startswith("field 'image': ")


def test_serve_logs_each_request_with_its_api_path(service_url):
    """Serve's own access log (and the route label of its metrics) names the API, not `POST /`."""
    import ray

    post(f"{service_url}/shout", "logged", "text/plain")
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    deadline = time.time() + 30
    while True:
        text = "".join(p.read_text(errors="replace") for p in logs.glob("replica_everything_everything-ingress_*.log"))
        if re.search(r"POST /everything/shout 200 ", text):
            break
        assert time.time() < deadline, text[-2000:]
        time.sleep(0.5)
    assert not re.search(r"POST /everything 200 ", text)  # every API request has its route


def test_docs_page_renders_and_calls_an_api_with_the_network_cut(service_url):
    """/docs in headless Chromium, every request outside this server refused: Swagger UI loads
    from the service itself, lists the APIs, and "Try it out" reaches the mounted route."""
    from browser import page_of

    with page_of(service_url) as (page, refused):
        page.goto(f"{service_url}/docs/")
        page.wait_for_selector("#operations-default-shout", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert {"/scale", "/shout", "/v2/scale-embedded", "/healthz"} <= {p.strip() for p in paths}
        page.click("#operations-default-shout .opblock-summary-control")
        page.click("#operations-default-shout .try-out__btn")
        page.fill("#operations-default-shout textarea.body-param__text", "from the browser")
        page.click("#operations-default-shout .execute")
        status = page.locator("#operations-default-shout .live-responses-table tbody .response-col_status")
        status.wait_for(timeout=30_000)
        assert status.inner_text().strip() == "200"
        answer = page.locator("#operations-default-shout .live-responses-table tbody .response-col_description")
        assert "FROM THE BROWSER!" in answer.inner_text()
    assert refused == []  # nothing came from, or went to, the internet


def test_the_service_console_reads_a_served_runner_s_batch_statistics(service_url):
    """/ui/service.json asks the served runner's replica what its batch queue did."""
    before = json.loads(get(f"{service_url}/ui/service.json")[1])
    runners = {r["name"]: r for r in before["runners"]}
    assert runners["arith"]["mode"] == "per_method" and runners["arith_embedded"]["mode"] == "embedded"
    scale = {m["name"]: m for m in runners["arith"]["methods"]}["scale"]
    assert scale["stats_from"] == "one runner replica" and scale["max_latency_ms"] == 2000
    for _ in range(3):
        assert post(f"{service_url}/scale", [[1, 2, 3]])[0] == 200
    after = json.loads(get(f"{service_url}/ui/service.json")[1])
    scale_after = {m["name"]: m for r in after["runners"] if r["name"] == "arith" for m in r["methods"]}["scale"]
    assert scale_after["stats"]["requests"] == scale["stats"]["requests"] + 3
    status, page = get(f"{service_url}/ui/service")
    assert status == 200 and b'data-runner="arith"' in page
