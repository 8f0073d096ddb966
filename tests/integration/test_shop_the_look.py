"""The shop-the-look app end to end: real models, Envoy mesh, JWT, GraphQL, the web page in
headless Chromium, and the demo command."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from systemtools import system_tool

from meshflow import Flow
from services.shop_the_look import app, catalog

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.environ.get("MESHFLOW_TEST_ARTIFACTS", os.path.join(ROOT, "tests", "artifacts"))
COLOURS = ("red", "blue", "black", "yellow")
PATTERNS = ("plain", "striped")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1200,900",
)


@dataclass
class Shop:
    flow: Flow
    folder: str
    items: list[catalog.Product]
    reader: str

    @property
    def url(self) -> str:
        return self.flow.graphql_url

    @property
    def base(self) -> str:
        return self.url.removesuffix("/graphql")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The app's Flow (Envoy mesh) over 64 catalog products: every category, 4 colours,
    2 patterns."""
    root = str(tmp_path_factory.mktemp("shop"))
    previous = os.environ.get(app.SECRET_ENV)
    os.environ[app.SECRET_ENV] = "test-secret-" + "x" * 40
    items = [p for p in catalog.products() if p.colour in COLOURS and p.pattern in PATTERNS]
    folder = os.path.join(root, "catalog")
    catalog.write(items, folder)
    flow = app.build_flow(os.path.join(root, "flow"), catalog_dir=folder, graphql_port=None)
    try:
        flow.start()
        assert app.index(flow, app.catalog_documents(items, folder)) == len(items)
        yield Shop(flow, folder, items, app.token(app.READ))
    finally:
        flow.close()
        if previous is None:
            os.environ.pop(app.SECRET_ENV, None)
        else:
            os.environ[app.SECRET_ENV] = previous


def held_out(category: str, colour: str, pattern: str, n: int) -> catalog.Product:
    """A new rendering: a seed the catalog never uses."""
    return catalog.Product(f"q{n}", category, colour, pattern, seed=10**9 + 977 * n)


def test_photo_queries_find_their_category(shop: Shop) -> None:
    precisions = []
    for n, category in enumerate(catalog.CATEGORIES):
        query = held_out(category, COLOURS[n % 4], PATTERNS[n % 2], n)
        photo = app.image_bytes(catalog.render(query))
        matches = app.search(shop.url, shop.reader, image=photo, limit=5)
        assert len(matches) == 5
        assert all(m["imageScore"] is not None and m["textScore"] is None for m in matches)
        precisions.append(sum(m["category"] == category for m in matches) / 5)
    # 8 products per category are indexed, and chance is 1/8
    assert sum(precisions) / len(precisions) >= 0.7, precisions


def test_text_and_combined_queries(shop: Shop) -> None:
    matches = app.search(shop.url, shop.reader, text="red striped t-shirt", limit=5)
    assert matches[0]["category"] == "t-shirt"
    assert "t-shirt-red-striped-0" in [m["id"] for m in matches]
    assert all(m["textScore"] is not None and m["imageScore"] is None for m in matches)

    photo = app.image_bytes(catalog.render(held_out("dress", "blue", "plain", 99)))
    matches = app.search(shop.url, shop.reader, image=photo, text="blue dress", limit=5)
    top = matches[0]
    assert top["category"] == "dress" and top["colour"] == "blue"
    assert None not in (top["score"], top["imageScore"], top["textScore"])
    assert top["imageUrl"].startswith("/catalog/")
    fused = [m["score"] for m in matches]
    assert fused == sorted(fused, reverse=True)

    # typed filters, and the generic tag filter beside them
    hats = app.search(shop.url, shop.reader, text="something to wear", category="hat")
    assert hats and {m["category"] for m in hats} == {"hat"}
    red = app.search(shop.url, shop.reader, text="something to wear", colour="red", limit=20)
    assert red and {m["colour"] for m in red} == {"red"}
    plain = app.search(shop.url, shop.reader, text="wear", filter={"pattern": "plain"}, limit=20)
    assert plain and {m["pattern"] for m in plain} == {"plain"}


def test_the_typed_search_refuses_wrong_types_before_searching(shop: Shop) -> None:
    answer = httpx.post(
        shop.url,
        json={"query": app.SEARCH, "variables": {"docs": [{"text": "red"}], "limit": "ten"}},
        headers={"authorization": f"Bearer {shop.reader}"},
        timeout=30,
    ).json()
    assert answer["data"] is None
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    unknown = httpx.post(
        shop.url,
        json={"query": app.SEARCH, "variables": {"docs": [{"blob": "eA=="}]}},
        headers={"authorization": f"Bearer {shop.reader}"},
        timeout=30,
    ).json()
    assert unknown["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_refusals_and_bad_photos_are_clear_errors(shop: Shop) -> None:
    with pytest.raises(RuntimeError, match="UNAUTHENTICATED"):
        app.search(shop.url, "not-a-token", text="red dress")
    answer = httpx.post(
        shop.url,
        json={
            "query": 'mutation { post(on: "/index", docs: [{text: "x"}]) { requestId } }',
        },
        headers={"authorization": f"Bearer {shop.reader}"},
        timeout=30,
    )
    assert answer.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    with pytest.raises(RuntimeError, match=r"EXECUTOR_ERROR.*cannot read its image"):
        app.search(shop.url, shop.reader, image=b"this is no photo")
    # and the service goes on
    assert app.search(shop.url, shop.reader, text="black shoes", limit=3)


def test_page_and_thumbnails_are_served_without_a_token(shop: Shop) -> None:
    page = httpx.get(f"{shop.base}/ui/", timeout=10)
    assert page.status_code == 200 and "Shop the look" in page.text
    assert httpx.get(f"{shop.base}/ui/app.js", timeout=10).status_code == 200
    thumb = httpx.get(f"{shop.base}/catalog/{shop.items[0].filename}", timeout=10)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert httpx.get(f"{shop.base}/catalog/../flow/x", timeout=10).status_code == 404
    assert httpx.get(f"{shop.base}/ui/nothing.js", timeout=10).status_code == 404


def test_web_page_in_headless_chromium(shop: Shop, tmp_path: object) -> None:
    chromedriver = system_tool("chromedriver", "chromium-driver")
    chromium = system_tool("chromium", "chromium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    query = held_out("bag", "yellow", "striped", 7)
    photo_path = os.path.join(str(tmp_path), "my-photo.png")
    catalog.render(query).save(photo_path)

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.set_page_load_timeout(30)
        wait = WebDriverWait(driver, 60)

        def results() -> list[object]:
            return list(driver.find_elements(By.CSS_SELECTOR, "#results li"))

        def status() -> str:
            return str(driver.find_element(By.ID, "status").text)

        driver.get(f"{shop.base}/ui/#token={shop.reader}")
        # The page takes it out of the address as its script starts (on a busy machine, a
        # moment after the load event).
        wait.until(lambda d: "token=" not in d.current_url)

        driver.find_element(By.ID, "text").send_keys("red striped t-shirt")
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: "results in" in status())
        first = driver.find_element(By.CSS_SELECTOR, "#results li")
        assert first.get_attribute("data-category") == "t-shirt"
        assert len(results()) == 12
        wait.until(
            lambda d: d.execute_script(
                "return [...document.querySelectorAll('#results img')].slice(0, 4)"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
        )

        driver.find_element(By.ID, "text").clear()
        driver.find_element(By.ID, "image").send_keys(photo_path)
        wait.until(lambda d: d.find_element(By.ID, "preview").is_displayed())
        driver.execute_script("document.getElementById('status').textContent = ''")
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: "results in" in status())
        categories = [r.get_attribute("data-category") for r in results()]  # type: ignore[attr-defined]
        assert categories[0] == "bag" and categories.count("bag") >= 6, categories
        scores = driver.find_element(By.CSS_SELECTOR, "#results li .scores").text
        assert "image" in scores and "text" not in scores
        os.makedirs(ARTIFACTS, exist_ok=True)
        assert driver.save_screenshot(os.path.join(ARTIFACTS, "shop_the_look.png"))

        # a bad token: a clear message on the page, no results thrown away
        driver.execute_script("sessionStorage.setItem('token', 'garbage')")
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: "UNAUTHENTICATED" in status())
        assert "error" in str(driver.find_element(By.ID, "status").get_attribute("class"))
    finally:
        driver.quit()


def test_demo_command_serves_until_ctrl_c(tmp_path: object, free_port: int) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}
    env.pop(app.SECRET_ENV, None)  # the demo makes its own
    workspace = os.path.join(str(tmp_path), "ws")
    command = [sys.executable, "-m", "services.shop_the_look", "--workspace", workspace]
    demo = subprocess.Popen(
        [*command, "--port", str(free_port), "--items", "24", "--mesh", "direct"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in demo.stdout or ()])
    reader.start()
    out = []
    try:
        deadline = time.monotonic() + 240
        while not out or "serving; Ctrl-C stops" not in out[-1]:
            out.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        text = "".join(out)
        assert "image query: a new photo of a" in text
        assert "text query: 'red striped t-shirt'" in text
        assert f"Search page: http://127.0.0.1:{free_port}/ui/#token=ey" in text
        assert len(os.listdir(os.path.join(workspace, "catalog"))) == 256
        assert httpx.get(f"http://127.0.0.1:{free_port}/ui/", timeout=10).status_code == 200
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        assert demo.wait(timeout=60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{free_port}/ui/", timeout=5)
        assert "100%" in (demo.stderr.read() if demo.stderr else "")  # the progress bars
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        reader.join(timeout=10)
        for stream in (demo.stdout, demo.stderr):
            if stream is not None:
                stream.close()


def test_demo_command_on_a_folder_of_images_and_bad_input(tmp_path: object) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop(app.SECRET_ENV, None)
    folder = os.path.join(str(tmp_path), "photos")
    os.makedirs(os.path.join(folder, "summer"))
    for name, (category, colour) in {
        "red_dress.png": ("dress", "red"),
        "summer/blue-bag.jpg": ("bag", "blue"),
        "black hat.png": ("hat", "black"),
    }.items():
        catalog.render(catalog.Product("x", category, colour, "plain", 5)).save(
            os.path.join(folder, name)
        )
    command = [sys.executable, "-m", "services.shop_the_look"]
    command += ["--workspace", os.path.join(str(tmp_path), "ws"), "--port", "0"]
    done = subprocess.run(
        [*command, "--catalog", folder, "--mesh", "direct", "--no-serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "image query: black hat.png" in done.stdout
    assert "text query: 'black hat'" in done.stdout
    assert "red_dress.png: red dress" in done.stdout and "summer/blue-bag.jpg" in done.stdout

    for bad, message in [
        (["--catalog", os.path.join(str(tmp_path), "nowhere")], "is not a folder"),
        (["--port", "70000"], "--port must be"),
        (["--catalog", os.path.join(str(tmp_path), "ws")], "no images in"),
    ]:
        os.makedirs(os.path.join(str(tmp_path), "ws"), exist_ok=True)
        refused = subprocess.run(
            [*command, *bad], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
