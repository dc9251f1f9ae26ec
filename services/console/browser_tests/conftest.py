"""The console in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium) against the
whole system: the four services on a broker of their own, the console process and the development OIDC issuer,
started exactly as `make run` starts them. Staff sign in on the issuer's page by clicking their name.

One system and one browser per module. Every step leaves a screenshot under the session's base temp folder
(pytest's --basetemp), listed at the end of the run."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from handshake_devstack.console import ConsoleProcess
from handshake_devstack.identity import DEV_USERS
from handshake_devstack.storefront import Storefront
from handshake_devstack.system import wait_for
from tests.conftest import system_of_its_own

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as missing:  # pragma: no cover - the deploy tier installs it
    raise ImportError(
        "selenium is missing: `make test-deploy` installs it (deploy/requirements-deploy.txt)"
    ) from missing

SCREENSHOTS = "console-screenshots"
PAGE_SECONDS = 20.0
_saved: list[Path] = []

# the checkout `make run` places: 2 mugs and a T-shirt to Germany with WELCOME10
DEMO_LINES = [{"sku": "HS-MUG", "quantity": 2}, {"sku": "HS-TEE", "quantity": 1}]
DEMO_COUPON = "WELCOME10"


class Staff:
    """One browser, used the way a person uses the console: links, the search box, forms and buttons."""

    def __init__(self, driver: webdriver.Chrome, console: ConsoleProcess, shots: Path) -> None:
        self.driver = driver
        self.console = console
        self.url = console.url
        self.shots = shots
        self.step = 0
        self.step_mark = 0

    # --- pages --------------------------------------------------------------------------------------------

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str = "main") -> str:
        return self.find(css).text

    def title(self) -> str:
        return self.text("main h1")

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)

    def navigating(self, act: Any) -> None:
        """act() (a click, a submit) and wait until the browser has loaded the page it leads to."""
        # The page in hand is marked on its window; the next document gets a window without the mark.
        # (Waiting for the old <html> element to go stale raced: while Chrome swaps documents, asking about
        # the old node can fail with an inspector error instead of the stale-element answer.)
        self.step_mark += 1
        mark = f"page-{self.step_mark}"
        self.driver.execute_script("window.handshakePageMark = arguments[0]", mark)
        act()
        WebDriverWait(self.driver, PAGE_SECONDS, ignored_exceptions=(WebDriverException,)).until(
            lambda d: (
                d.execute_script("return window.handshakePageMark || null") != mark
                and d.execute_script("return document.readyState") == "complete"
            )
        )

    def shot(self, what: str) -> Path:
        self.step += 1
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{self.step:02d}-{re.sub(r'[^a-z0-9]+', '-', what.lower()).strip('-')}.png"
        # the whole page, not just the window: the order page is taller than any screen
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1440, max(900, min(int(height) + 40, 6000)))
        self.driver.save_screenshot(str(path))
        _saved.append(path)
        print(f"screenshot {path}")
        return path

    # --- signing in and out -------------------------------------------------------------------------------

    def sign_in(self, subject: str) -> None:
        """From the console's front page through the issuer's page, clicking the person's name."""
        if self.all("form.who button"):
            self.navigating(lambda: self.find("form.who button").click())
        self.open("/")
        self.navigating(lambda: self.driver.find_element(By.LINK_TEXT, "Sign in").click())
        assert self.driver.current_url.startswith(self.console.identity.url + "/authorize"), self.driver.current_url
        name = next(u.name for u in DEV_USERS if u.subject == subject)
        self.shot(f"issuer page, choosing {subject}")
        self.driver.find_element(By.LINK_TEXT, name).click()
        # the callback's page hands over to the search page (a meta refresh) once the session cookie is set
        WebDriverWait(self.driver, PAGE_SECONDS).until(
            lambda d: d.current_url == self.url + "/search" and d.find_elements(By.CSS_SELECTOR, "form.search")
        )
        assert name in self.text("form.who span")

    # --- searching and orders -----------------------------------------------------------------------------

    def search(self, query: str) -> None:
        box = self.find("form.search input[name=q]")
        box.clear()
        box.send_keys(query)
        self.navigating(lambda: self.find("form.search button[type=submit]").click())

    def order(self, order_id: str) -> None:
        self.open(f"/orders/{order_id}")

    def summary(self) -> str:
        return self.text("p.summary")

    def panel(self, title: str) -> WebElement:
        return next(p for p in self.all("section.panel") if p.find_element(By.TAG_NAME, "h2").text == title)

    def form(self, action: str) -> WebElement:
        """The order page's form for one action, by the address it posts to."""
        return self.find(f"form[action$='/actions/{action}']")

    def fill(self, form: WebElement, **fields: str) -> None:
        for name, value in fields.items():
            field = form.find_element(By.NAME, name)
            if field.tag_name == "select":
                Select(field).select_by_visible_text(value)
            else:
                field.clear()
                field.send_keys(value)

    def submit(self, form: WebElement, *, force: bool = False) -> None:
        """Press the form's button; with force, first switch off the `disabled` the console put on it for a
        role that lacks the right, as someone with the browser's developer tools could."""
        button = form.find_element(By.CSS_SELECTOR, "button[type=submit]")
        if force:
            assert button.get_attribute("disabled") is not None, "the console offered this button"
            self.driver.execute_script("arguments[0].removeAttribute('disabled')", button)
        self.navigating(button.click)

    def result(self) -> str:
        """The result page's verdict line: "Done (202)." or "Refused by the service: 403 ..."."""
        return self.text("main section.panel p")

    def wait_page(self, path: str, ready: Any, what: str) -> None:
        """Reload `path` until ready() holds: the page shows what the services did after the action."""

        def loaded() -> bool:
            self.open(path)
            return bool(ready())

        try:
            wait_for(loaded, PAGE_SECONDS, interval=0.3)
        except TimeoutError:
            raise AssertionError(f"{what}: not shown on {path} within {PAGE_SECONDS}s:\n{self.text()}") from None


def _chrome() -> webdriver.Chrome:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.fail(
            "the browser tests need Debian's chromium and chromium-driver: run deploy/install-packages.sh "
            f"(found chromium={chromium}, chromedriver={chromedriver})",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1440,900",
        "--lang=en-GB",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    try:
        # the driver named by path: Selenium must not try to download one
        return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    except WebDriverException as exc:
        pytest.fail(f"headless Chromium did not start ({chromium}, {chromedriver}): {exc.msg}", pytrace=False)


@pytest.fixture(scope="module")
def console_system(stack: Any) -> Iterator[tuple[Storefront, ConsoleProcess]]:
    with system_of_its_own(stack, "console") as shop:
        console = ConsoleProcess(shop.system)
        console.start()
        try:
            yield shop, console
        finally:
            console.stop()


@pytest.fixture(scope="module")
def shop(console_system: tuple[Storefront, ConsoleProcess]) -> Storefront:
    return console_system[0]


@pytest.fixture(scope="module")
def chrome() -> Iterator[webdriver.Chrome]:
    driver = _chrome()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def staff(
    chrome: webdriver.Chrome,
    console_system: tuple[Storefront, ConsoleProcess],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Staff:
    """The module's browser, with this test's screenshot folder."""
    folder = tmp_path_factory.getbasetemp() / SCREENSHOTS / request.node.name
    return Staff(chrome, console_system[1], folder)


@pytest.fixture
def demo_order(shop: Storefront) -> dict[str, Any]:
    """A fresh copy of the `make run` demo order, paid and waiting for fulfilment."""
    return shop.full_checkout(DEMO_LINES, coupon=DEMO_COUPON)["order"]


@pytest.fixture
def checkout(shop: Storefront) -> Any:
    """checkout(lines) -> a paid order waiting for fulfilment."""
    return lambda lines, **kw: shop.full_checkout(lines, **kw)["order"]


@pytest.fixture
def console_log(console_system: tuple[Storefront, ConsoleProcess]) -> Any:
    """console_log(event) -> the console's structured log records with that event, oldest first."""

    def records(event: str) -> list[dict[str, Any]]:
        path = console_system[1].system.logs / "console.log"
        found = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
        return found

    return records


@pytest.fixture
def order_api(shop: Storefront) -> Any:
    """order_api(order_id) -> the order as the order service's admin API has it (not as the page shows it)."""
    return shop.admin_order


@pytest.fixture
def as_staff(console_system: tuple[Storefront, ConsoleProcess]) -> Any:
    """as_staff(sub, roles) -> headers with a bearer token for that person, for calls outside the browser."""
    system = console_system[0].system
    return lambda sub, roles: {"Authorization": f"Bearer {system.tokens.issue(sub, roles)}"}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _saved:
        terminalreporter.section("console screenshots")
        folders = sorted({p.parent.parent for p in _saved})
        terminalreporter.write_line(f"{len(_saved)} screenshots under {', '.join(map(str, folders))}")
        for path in _saved:
            terminalreporter.write_line(str(path))
