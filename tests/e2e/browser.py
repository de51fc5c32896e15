"""A headless Debian chromium driven over the DevTools protocol (a websocket): open a page, wait for text
the page renders, read its DOM and text, take a PNG. No browser library: chromium itself and websockets.

`chromium --dump-dom --virtual-time-budget=...` was tried first: it printed the Prefect UI before its
data came (an empty body), so the page is asked instead until the wanted text shows.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from iterable_recipes.cli.local_stack import stop_process

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1400, 1000)


def chromium_path() -> str | None:
    """Debian's chromium (package ``chromium``), when installed."""
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


class Page:
    """One browser tab, spoken to through its DevTools websocket."""

    def __init__(self, websocket: Any) -> None:
        self._ws = websocket
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are dropped)."""
        command_id = next(self._ids)
        self._ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def open(self, url: str) -> None:
        """Navigate to ``url`` (the SPA then fetches its data on its own)."""
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        """What the page shows as text."""
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def dom(self) -> str:
        """The rendered DOM, as HTML."""
        return str(self.evaluate("document.documentElement.outerHTML") or "")

    def wait_for_text(self, *wanted: str, timeout: float = 20) -> str:
        """Wait until the page's text holds every one of ``wanted``; the text, or AssertionError with it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if all(w in text for w in wanted):
                return text
            if time.monotonic() > deadline:
                missing = [w for w in wanted if w not in text]
                raise AssertionError(f"the page never showed {missing}; it shows:\n{text[:3000]}")
            time.sleep(0.25)

    def click(self, label: str, timeout: float = 20) -> None:
        """Click the tab, button or link whose text is ``label`` once the page shows one."""
        found = (
            "(() => { const e = [...document.querySelectorAll('[role=tab], .p-tab, button, a')]"
            f".find(e => e.innerText.trim() === {json.dumps(label)}); if (e) e.click(); return !!e; }})()"
        )
        deadline = time.monotonic() + timeout
        while not self.evaluate(found):
            if time.monotonic() > deadline:
                shows = self.text()[:3000]
                raise AssertionError(f"the page never showed {label!r} to click; it shows:\n{shows}")
            time.sleep(0.25)

    def show(self, text: str) -> None:
        """Scroll the innermost element holding ``text`` into view (for the screenshot)."""
        # Ancestors come first in document order, so the last element holding the text is the innermost.
        self.evaluate(
            f"(() => {{ const t = {json.dumps(text)}; "
            "const hits = [...document.querySelectorAll('body *')].filter(e => e.textContent.includes(t)); "
            "if (hits.length) hits[hits.length - 1].scrollIntoView({block: 'center'}); })()"
        )

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport to ``path``."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def browser(profile: Path, executable: str = CHROMIUM) -> Iterator[Page]:
    """A headless chromium with a profile of its own under ``profile``; one page of it."""
    from websockets.sync.client import connect

    profile.mkdir(parents=True, exist_ok=True)
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # an earlier browser's port
    argv = [
        executable,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",  # CI runs as root, where chromium's sandbox refuses to start
        "--no-first-run",
        "--remote-debugging-port=0",  # a free port, written to DevToolsActivePort in the profile
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "about:blank",
    ]
    log = (profile / "chromium.log").open("wb")
    # A session of its own, so stopping it also stops its renderer and zygote processes.
    process = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        port = _devtools_port(profile, process)
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t.get("type") == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as websocket:
            tab = Page(websocket)
            tab.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                     deviceScaleFactor=1, mobile=False)  # fmt: skip
            yield tab
    finally:
        stop_process(process)
        log.close()


def _devtools_port(profile: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """The DevTools port chromium chose, read from the file it writes once it listens."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (profile / "chromium.log").read_text(errors="replace")
            raise RuntimeError(f"chromium exited ({process.returncode}):\n{log[-2000:]}")
        if marker.exists() and (first := marker.read_text().split("\n", 1)[0].strip()):
            return int(first)
        time.sleep(0.1)
    raise RuntimeError(f"chromium did not open its DevTools port within {timeout:.0f} s")
