"""Make the console screenshots the README shows, from a real browser (Debian's chromium).

    .venv/bin/python docs/console/make_screenshots.py

Saves a few example models into a temporary store, serves its console on a free port, and writes
`models.png`, `version.png` (dark) and `compare.png` beside this script.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).parent
CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="raystore-screens-") as home:
        os.environ["RAYSTORE_HOME"] = home
        import uvicorn
        from playwright.sync_api import sync_playwright
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        import raystore
        from raystore._private.console.access import WriteAccess
        from raystore._private.console.app import console_app
        from raystore._private.deploy.local import free_port
        from raystore._private.store import default_store

        X, y = load_iris(return_X_y=True)
        versions = []
        for i, (stage, c) in enumerate([("dev", 0.1), ("dev", 1.0), ("prod", 10.0)]):
            clf = LogisticRegression(C=c, max_iter=500).fit(X, y)
            versions.append(
                raystore.sklearn.save_model(
                    "iris_clf",
                    clf,
                    labels={"owner": "nlp_team", "stage": stage},
                    metadata={"accuracy": round(clf.score(X, y), 4), "C": c, "dataset": {"version": f"2021082{i}"}},
                    signatures={"predict": {"batchable": True}, "predict_proba": {"batchable": True}},
                )
            )
        raystore.models.set_alias(versions[-1].tag, "prod")
        raystore.picklable_model.save_model("tokenizer", {"vocab": list("abc")}, labels={"owner": "nlp_team"})
        raystore.picklable_model.save_model("churn_model", {"w": [0.1] * 1000}, labels={"owner": "growth"})

        port = free_port()
        app = console_app(default_store(), access=WriteAccess(writes=True))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1200, "height": 420}, color_scheme="light")
                page.goto(url)
                page.screenshot(path=str(HERE / "models.png"))
                page = browser.new_page(viewport={"width": 1200, "height": 900}, color_scheme="dark")
                page.goto(f"{url}/models/iris_clf/{versions[-1].tag.version}")
                page.screenshot(path=str(HERE / "version.png"))
                page = browser.new_page(viewport={"width": 1200, "height": 640}, color_scheme="light")
                tags = "&".join(f"tag={v.tag}" for v in (versions[0], versions[-1]))
                page.goto(f"{url}/compare?{tags}")
                page.screenshot(path=str(HERE / "compare.png"))
                browser.close()
        finally:
            server.should_exit = True
    print(f"wrote {', '.join(p.name for p in sorted(HERE.glob('*.png')))} in {HERE}")


if __name__ == "__main__":
    main()
