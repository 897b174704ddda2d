"""Drives the web page in headless Chromium as a person would; the browser test's steps, and
the README's screenshots: ``python tests/browser_page.py http://127.0.0.1:7860/ docs/``."""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright cannot download its own offline


def drive(url: str, shots: Path, prompts: list[str], per_prompt: int) -> list[str]:
    """Generates ``per_prompt`` images for each prompt and checks they are shown, then opens the
    Runs tab and waits for a run's sample grid; screenshots each tab into ``shots``. Returns the
    URLs the page requested from anywhere but ``url``."""
    outside = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.on("request", lambda r: None if r.url.startswith(url) else outside.append(r.url))
        tab.goto(url, wait_until="networkidle")
        tab.locator("#prompts textarea").fill("\n".join(prompts))
        tab.get_by_label("Images per prompt").first.fill(str(per_prompt))
        tab.locator("#generate").click()
        count = len(prompts) * per_prompt
        try:
            tab.locator("#gallery img").nth(count - 1).wait_for(timeout=60_000)
        finally:
            tab.screenshot(path=shots / "demo-generate.png", full_page=True)
        assert tab.locator("#gallery img").count() == count
        assert f"{count} images in" in tab.locator("#info").inner_text()

        tab.get_by_role("tab", name="Runs").click()
        tab.locator("#run-grids img").first.wait_for(timeout=30_000)
        tab.screenshot(path=shots / "demo-runs.png", full_page=True)
        browser.close()
    return outside


if __name__ == "__main__":
    url, folder = sys.argv[1], Path(sys.argv[2])
    prompts = ["Draw a six", "please sketch the number 7", "please draw a red car"]
    print(drive(url, folder, prompts, 8))
