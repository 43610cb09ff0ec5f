"""The search page in a real browser: Debian's chromium, headless, driven by Playwright, against a real
`semsearch serve` with the bundled all-MiniLM-L6-v2. Types a query, sees the expected top hit, applies a
filter, checks that stored markup is shown as text, that the page works by keyboard and fits a phone; takes
screenshots, which replace the ones shown in the README (benchmarks/results/serve-page*.png) only when
$SEMSEARCH_SCREENSHOTS=1, so that a test run leaves the checkout as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
COMMITTED_SCREENSHOT = ROOT / "benchmarks" / "results" / "serve-page.png"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]

DOCS = [
    ("py-copytree", "Recursively copy a directory tree and return the destination directory.", "en", "python"),
    ("py-rmtree", "Recursively delete a directory tree.", "en", "python"),
    ("py-strptime", "Parse a string into a datetime according to a format.", "en", "python"),
    ("py-readline", "Read one line from the file and return it as a string.", "en", "python"),
    ("py-sort", "Sort the list in place, in ascending order.", "en", "python"),
    ("py-socket", "Open a network socket and connect it to a remote address.", "en", "python"),
    ("py-json", "Serialize an object to a JSON formatted string.", "en", "python"),
    ("py-sleep", "Suspend execution of the calling thread for the given number of seconds.", "en", "python"),
    ("cook-bread", "Knead the dough for ten minutes, let it rise, then bake the bread until golden.", "en", "cooking"),
    ("cook-pasta", "Boil the pasta in salted water and drain it when it is al dente.", "en", "cooking"),
    ("travel-train", "The night train from Vienna to Paris leaves at eight in the evening.", "en", "travel"),
    ("travel-flight", "Cheap flights to Lisbon are easiest to find in early spring.", "en", "travel"),
    ("de-copytree", "Einen Verzeichnisbaum rekursiv kopieren und das Zielverzeichnis zurückgeben.", "de", "python"),
    ("de-brot", "Den Teig zehn Minuten kneten, gehen lassen und das Brot goldbraun backen.", "de", "cooking"),
    ("de-zug", "Der Nachtzug von Wien nach Paris fährt um acht Uhr abends ab.", "de", "travel"),
    ("de-datum", "Eine Zeichenkette anhand eines Formats in ein Datum umwandeln.", "de", "python"),
    ("fr-pates", "Faire cuire les pâtes dans l'eau salée et les égoutter al dente.", "fr", "cooking"),
    ("fr-vol", "Les vols bon marché pour Lisbonne se trouvent au début du printemps.", "fr", "travel"),
    ("html-in-text", '<img src=x onerror="window.__pwned=1"> <b>markup</b> stored in a text is shown as text',
     "en", "security"),
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.mark.slow
def test_search_page_in_chromium(browser, tmp_path, real_encoder):
    screenshot = COMMITTED_SCREENSHOT if os.environ.get("SEMSEARCH_SCREENSHOTS") == "1" else tmp_path / "serve-page.png"
    from playwright.sync_api import expect

    from semsearch.api import index_corpus

    from .test_server import start_server, stop_server

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t, "lang": lang, "topic": topic}) + "\n"
                              for i, t, lang, topic in DOCS), encoding="utf-8")
    index = tmp_path / "indexes" / "demo"
    index_corpus(corpus, index, encoder=real_encoder)
    process, url = start_server(index)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"  # not the 400 asked for below
                and not msg.text.startswith("Failed to load resource") else None)
        page.goto(url + "/")
        expect(page.locator("#subtitle")).to_have_text("demo · 19 documents")
        expect(page.locator("#info")).to_contain_text("all-MiniLM-L6-v2")

        # Keyboard only: "/" jumps to the query box, Enter submits.
        page.evaluate("document.activeElement.blur()")
        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.id") == "q"
        page.keyboard.type("how do I copy a directory recursively")
        page.keyboard.press("Enter")
        first = page.locator("#results .hit").first
        expect(first.locator(".doc-id")).to_have_text("py-copytree")
        expect(first.locator(".text")).to_have_text(DOCS[0][1])
        expect(first.locator(".rank")).to_have_text("#1")
        expect(first.locator(".meta")).to_contain_text("topic: python")
        assert first.locator(".doc-id").get_attribute("href") == "/documents/py-copytree"
        expect(page.locator("#results .hit")).to_have_count(10)
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000  # a rendered page, not an empty one

        # The link per result is the document's JSON.
        document = page.request.get(url + first.locator(".doc-id").get_attribute("href")).json()
        assert document == {"id": "py-copytree", "text": DOCS[0][1], "meta": {"lang": "en", "topic": "python"}}

        # A filter: only English travel documents remain.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "k"
        page.locator("#filters").fill("lang=en, topic=travel")
        page.locator("#filters").press("Enter")
        expect(page.locator("#results .hit")).to_have_count(2)
        ids = sorted(page.locator("#results .doc-id").all_text_contents())
        assert ids == ["travel-flight", "travel-train"]
        assert all("topic: travel" in m and "lang: en" in m for m in page.locator("#results .meta").all_text_contents())
        assert "filters=lang%3Den%2C+topic%3Dtravel" in page.url

        # A bad filter shows the server's message, not a broken page.
        page.locator("#filters").fill("no operator here")
        page.locator("#filters").press("Enter")
        expect(page.locator("#error")).to_contain_text("filters[0]")
        expect(page.locator("#results .hit")).to_have_count(0)

        # Stored markup is text, never HTML.
        page.locator("#filters").fill("")
        page.locator("#q").fill("markup stored in a text")
        page.locator("#q").press("Enter")
        top = page.locator("#results .hit").first
        expect(top.locator(".doc-id")).to_have_text("html-in-text")
        assert top.locator(".text").text_content() == DOCS[-1][1]
        assert page.locator("#results img, #results .text b").count() == 0
        assert page.evaluate("window.__pwned") is None

        # A phone's width: nothing wider than the screen, the form still usable.
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(url + "/?q=bake+bread&k=5")
        expect(phone.locator("#results .hit").first.locator(".doc-id")).to_have_text("cook-bread")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        box = phone.locator("#q").bounding_box()
        assert box["width"] > 300
        phone.screenshot(path=str(screenshot.with_name("serve-page-phone.png")), full_page=True)
        assert errors == []
    finally:
        stop_server(process)
