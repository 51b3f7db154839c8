"""A real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium) for the browser tests.

`chromium_paths` finds the browser and its driver, installing them with apt-get where they are
missing and this process is root (`apt-get install -y chromium chromium-driver`), and skips the test
with the reason where that is impossible. Nothing is downloaded by Selenium itself (the driver path
is given). The helpers drive Label Studio 1.23.2's pages with the selectors worked out against it:
log in, open a task and wait for its canvas, read the labelling store (`window.Htx`), find a region's
pixel on the Konva stage, hit-test it, drag, Submit/Update, Settings > Model > Start Training, the
Data Manager's "Prediction score" column. Screenshots go to `artefacts_dir()`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
APT_TIMEOUT_S = 900


def artefacts_dir() -> Path:
    """Where screenshots go: $BROWSER_ARTEFACTS_DIR, default .cache/browser-artefacts (git-ignored)."""
    path = Path(os.environ.get("BROWSER_ARTEFACTS_DIR") or ROOT / ".cache" / "browser-artefacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _found() -> tuple[str, str] | None:
    browser = next((p for p in BROWSERS if os.access(p, os.X_OK)), None) or shutil.which("chromium")
    driver = next((p for p in DRIVERS if os.access(p, os.X_OK)), None) or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver), installed with apt-get when missing and possible; else the test skips."""
    found = _found()
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium/chromium-driver are not installed and cannot be (not root, or no apt-get): "
                    "run `apt-get install -y chromium chromium-driver` as root")  # fmt: skip
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for cmd in (["apt-get", "install", "-y", "chromium", "chromium-driver"], ["apt-get", "update"],
                ["apt-get", "install", "-y", "chromium", "chromium-driver"]):  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S)
        log.append(f"$ {' '.join(cmd)} -> {done.returncode}\n{done.stderr[-800:]}")
        if cmd[1] == "install" and done.returncode == 0 and _found():
            return _found()  # type: ignore[return-value]
    pytest.skip("installing chromium with apt-get failed:\n" + "\n".join(log))


def make_driver(width: int = 1600, height: int = 1000) -> Any:
    """A headless Chromium at a fixed size and device scale 1 (screen px = CSS px)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = Options()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--force-device-scale-factor=1", "--no-proxy-server",
                "--disable-extensions", "--disable-background-networking"):  # fmt: skip
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(90)
    return chrome


def wait(driver: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1)


def by_css(driver: Any, css: str, timeout: float = 30) -> Any:
    from selenium.webdriver.common.by import By

    return wait(driver, timeout).until(lambda d: d.find_element(By.CSS_SELECTOR, css))


def click_xpath(driver: Any, xpath: str, timeout: float = 30) -> str:
    """Clicks the element once clickable; returns its text (read before the click re-renders it)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    element = wait(driver, timeout).until(ec.element_to_be_clickable((By.XPATH, xpath)))
    text = str(element.text)
    element.click()
    return text


def screenshot(driver: Any, name: str) -> Path:
    path = artefacts_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


# ----------------------------------------------------------------------------- Label Studio pages


def login(driver: Any, url: str, email: str, password: str) -> None:
    """Label Studio's Django login form."""
    driver.get(f"{url}/user/login/")
    by_css(driver, "input[name=email]").send_keys(email)
    by_css(driver, "input[name=password]").send_keys(password)
    by_css(driver, "form button[type=submit], form input[type=submit]").click()
    wait(driver).until(lambda d: "/user/login" not in d.current_url)


READY_JS = """
const a = window.Htx && window.Htx.annotationStore && window.Htx.annotationStore.selected;
if (!a) return false;
const img = [...a.names.values()].find(t => t.type === 'image');
return !!(img && img.stageRef && img.naturalWidth > 1 && img.stageWidth > 1);
"""

STATE_JS = """
const a = window.Htx.annotationStore.selected;
return {pk: a.pk, regions: a.regions.map(r => ({id: r.cleanId, type: r.type, parentID: r.parentID || null,
        score: r.score, label: (r.labels && r.labels[0]) || (r.labeling && r.labeling.selectedLabels &&
        r.labeling.selectedLabels[0] && r.labeling.selectedLabels[0].value) || null}))};
"""

# A region's shape on the Konva stage: page px = the stage container's rect + the node's position.
GEOMETRY_JS = """
const [rid] = arguments;
const a = window.Htx.annotationStore.selected;
const img = [...a.names.values()].find(t => t.type === 'image');
const stage = img.stageRef, rect = stage.container().getBoundingClientRect();
const reg = a.regions.find(r => r.cleanId === rid);
const node = reg && stage.find('._transformable').find(n => n.name().split(' ')[0] === reg.id);
const out = {stageWidth: img.stageWidth, naturalWidth: img.naturalWidth, zoom: img.zoomScale};
if (node) { const p = node.getAbsolutePosition(); out.x = rect.left + p.x; out.y = rect.top + p.y; }
return out;
"""

HIT_JS = """
const [x, y] = arguments;
const a = window.Htx.annotationStore.selected;
const stage = [...a.names.values()].find(t => t.type === 'image').stageRef;
const rect = stage.container().getBoundingClientRect();
const n = stage.getIntersection({x: x - rect.left, y: y - rect.top});
return n ? {cls: n.getClassName(), name: n.name()} : null;
"""


def open_task(driver: Any, url: str, project: int, task: int, timeout: float = 90) -> None:
    """The labelling view of one task (Data Manager deep link), once its image and canvas are ready."""
    driver.get(f"{url}/projects/{project}/data?tab=0&task={task}")
    wait(driver, timeout).until(lambda d: d.execute_script(READY_JS))


def ls_state(driver: Any) -> dict[str, Any]:
    """The selected annotation: its stored id (`pk`, None before Submit) and its regions."""
    return driver.execute_script(STATE_JS)


def region_geometry(driver: Any, region_id: str) -> dict[str, Any]:
    return driver.execute_script(GEOMETRY_JS, region_id)


def hit_test(driver: Any, x: float, y: float) -> dict[str, str] | None:
    """The Konva shape a mouse press at page (x, y) reaches: what a drag from there would move."""
    return driver.execute_script(HIT_JS, x, y)


def drag(driver: Any, x: float, y: float, dx: float, dy: float, steps: int = 8) -> None:
    """Press at page (x, y), move by (dx, dy) in `steps` W3C pointer moves, release."""
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver, duration=50)
    pointer = chain.w3c_actions.pointer_action
    pointer.move_to_location(int(round(x)), int(round(y)))
    pointer.pointer_down()
    for i in range(1, steps + 1):
        pointer.move_to_location(int(round(x + dx * i / steps)), int(round(y + dy * i / steps)))
    pointer.pointer_up()
    chain.perform()


def submit(driver: Any, timeout: float = 60) -> str:
    """Clicks Submit (new annotation) or Update; waits until it is stored and the canvas is back."""
    text = click_xpath(driver, "//button[normalize-space(.)='Submit'] | //button[normalize-space(.)='Update']")
    time.sleep(0.3)
    wait(driver, timeout).until(lambda d: d.execute_script(
        "const a = window.Htx.annotationStore.selected; return a && a.pk && !a.isSubmitting;"))  # fmt: skip
    wait(driver, timeout).until(lambda d: d.execute_script(READY_JS))
    return text


def ml_card(driver: Any, url: str, project: int) -> dict[str, str]:
    """Settings > Model: the first ML backend card's title and status."""
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/projects/{project}/settings/ml")
    card = by_css(driver, ".lsf-backend-card")
    return {"title": card.find_element(By.CSS_SELECTOR, ".lsf-backend-card__title").text,
            "status": card.find_element(By.CSS_SELECTOR, ".lsf-ml__status-label").text}  # fmt: skip


def start_training(driver: Any, url: str, project: int) -> str:
    """Settings > Model > the card's menu > Start Training > confirm; returns the dialog's text."""
    ml_card(driver, url, project)
    by_css(driver, "button[aria-label='Machine learning model options']").click()
    click_xpath(driver, "//span[contains(@class,'main-menu__item') and normalize-space(.)='Start Training']")
    click_xpath(driver, "//*[contains(@class,'lsf-modal-ls')]//button[normalize-space(.)='Start Training']")
    content = ".lsf-modal-ls__content"
    wait(driver, 120).until(lambda d: "Request Sent!" in by_css(d, content).text)
    return str(by_css(driver, content).text)


def data_manager_rows(driver: Any, url: str, project: int) -> list[str]:
    """The Data Manager's rows as text, with the "Prediction score" column shown (Columns menu)."""
    import re

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    rows = ".dm-table__row-wrapper, [class*='table__row-wrapper']"
    score = re.compile(r"(^| \| )0\.\d{3}( \| |$)")

    def texts(d: Any) -> list[str]:
        return [" | ".join(row.text.split("\n")) for row in d.find_elements(By.CSS_SELECTOR, rows)]

    driver.get(f"{url}/projects/{project}/data?tab=0")
    by_css(driver, rows, timeout=60)
    time.sleep(1.0)
    if not any(score.search(t) for t in texts(driver)):
        click_xpath(driver, "//button[normalize-space(.)='Columns']")
        click_xpath(driver, "//*[normalize-space(text())='Prediction score']")
        wait(driver).until(lambda d: all(score.search(t) for t in texts(d)))
        chain = ActionChains(driver)  # a click on an empty spot (below the rows) closes the menu
        chain.w3c_actions.pointer_action.move_to_location(1500, 800)
        chain.w3c_actions.pointer_action.click()
        chain.perform()
        time.sleep(0.5)
    return texts(driver)
