"""The labelling page in a real headless Chromium (the OS's /usr/bin/chromium, driven by Playwright) against
`glide serve` run as a subprocess: keyboard labelling with undo, a phone-width page, markup captions,
the admin page, and a dropped connection plus a server crash mid-queue that lose and double no label.

Set GLIDE_SCREENSHOTS=DIR to keep the pages' screenshots there (docs/images holds two of them).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import statistics
import threading
import time

import pytest

from label_page_world import (CHROMIUM_ARGS, MARKUP, Server, chromium_or_skip, picture_dataset, queue_db,
                              rater_tokens)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
READY = "#work[data-uid]"


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One server for the tests that do not crash it: a dataset of 30 pictures (one markup caption)."""
    tmp = tmp_path_factory.mktemp("page-browser")
    dataset, uids = picture_dataset(tmp / "emb", 30, markup_at=2)
    db = tmp / "labels.db"
    with Server(db, "--dataset", dataset, "--gold-every", 0, "--admin") as server:
        yield server, db, dataset, uids


def screenshot(page, tmp_path, name):
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000
    keep = os.environ.get("GLIDE_SCREENSHOTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(path, os.path.join(keep, name))


def open_page(browser, url, token, width=1280, height=800):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/signin#token={token}")
    return page, errors


def current_uid(page) -> str:
    page.wait_for_selector(READY)
    return page.get_attribute("#work", "data-uid")


def press(page, key: str) -> str:
    """Press `key` on the pair shown and wait until the next one is ready; the new pair's uid."""
    before = current_uid(page)
    page.keyboard.press(key)
    page.wait_for_function("uid => { const w = document.querySelector('#work');"
                           " return (w.dataset.uid && w.dataset.uid !== uid) || !document.querySelector('#done').hidden; }",
                           arg=before)
    return page.get_attribute("#work", "data-uid")


def page_labels(db, rater):
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT l.client_id, l.uid, l.answer, l.undone_at, l.created, l.answer_ms, l.queue_id "
                           "FROM labels l JOIN raters r ON r.id = l.rater_id WHERE r.name = ? ORDER BY l.id",
                           (rater,)).fetchall()


def test_a_rater_labels_a_queue_with_the_keyboard_and_undoes_one(browser, site, tmp_path):
    server, db, dataset, uids = site
    queue = queue_db(db, dataset, uids[:12], name="keyboard")
    token = rater_tokens(db, ["kim"])["kim"]
    page, errors = open_page(browser, server.url, token)
    current_uid(page)
    page.evaluate("""() => {   // key -> next pair ready, on the page's clock (test instrumentation only)
        window.keyToReady = []; let pressed = null;
        document.addEventListener("keydown", () => { pressed = performance.now(); }, true);
        new MutationObserver(() => {
            if (pressed !== null && document.querySelector("#work").dataset.uid) {
                window.keyToReady.push(performance.now() - pressed); pressed = null; }
        }).observe(document.querySelector("#work"), {attributes: true, attributeFilter: ["data-uid"]});
    }""")
    plan = "yynysnynnyyn"
    seen = []
    for i, key in enumerate(plan):
        seen.append(current_uid(page))
        if seen[-1] == uids[2]:  # the caption full of markup is text on the page, and nothing of it ran
            assert page.text_content("#caption") == MARKUP
            assert page.locator("#caption *").count() == 0
            assert page.evaluate("window.pwned") is None
        if i == 6:
            screenshot(page, tmp_path, "label-page-laptop.png")
            page.keyboard.press("u")                     # undo the answer to pair 5: it comes back
            page.wait_for_function("uid => document.querySelector('#work').dataset.uid === uid", arg=seen[5])
            assert "Undid" in page.text_content("#status")
            press(page, "y")                             # answered again, differently
            assert current_uid(page) == seen[6]          # then on where it was
        press(page, key)
    page.wait_for_selector("#done:not([hidden])")
    assert errors == []
    assert seen == uids[:12]                             # queue order, each pair once
    rows = page_labels(db, "kim")
    in_force = {uid: answer for _, uid, answer, undone, *_ in rows if undone is None}
    expected = {uid: {"y": "yes", "n": "no", "s": "skip"}[k] for uid, k in zip(seen, plan)}
    expected[seen[5]] = "yes"
    assert in_force == expected and len(rows) == 13
    assert [(uid, answer) for _, uid, answer, undone, *_ in rows if undone is not None] == [(seen[5], "no")]
    assert len({r[0] for r in rows}) == 13 and all(r[5] is not None for r in rows) and {r[6] for r in rows} == {queue.id}
    # time per binary label with the keyboard, from the stored key times (the page's clock)
    import datetime as dt

    times = [dt.datetime.fromisoformat(r[4]) for r in rows if r[2] != "skip"]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    on_page = page.evaluate("window.keyToReady")
    print(f"\nkeyboard: median {statistics.median(gaps) * 1000:.0f} ms per binary label (key to key, {len(gaps)} "
          f"gaps; the browser presses as soon as the next pair is ready); of it, key to next pair shown: median "
          f"{statistics.median(on_page):.0f} ms over {len(on_page)} keys")


def test_the_page_works_at_phone_width_by_touch(browser, site, tmp_path):
    server, db, dataset, uids = site
    queue_db(db, dataset, uids[12:16], name="phone")
    token = rater_tokens(db, ["pat"])["pat"]
    page, errors = open_page(browser, server.url, token, width=390, height=844)
    first = current_uid(page)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390  # nothing wider than the phone
    image, keys = page.locator("#image").bounding_box(), page.locator(".keys").bounding_box()
    assert image["width"] >= 350 and keys["y"] > image["y"] and keys["width"] <= 390
    screenshot(page, tmp_path, "label-page-phone.png")
    page.click("#no")
    page.wait_for_function("uid => document.querySelector('#work').dataset.uid !== uid", arg=first)
    assert [(r[1], r[2]) for r in page_labels(db, "pat")] == [(first, "no")] and errors == []


def test_the_admin_page_shows_progress_and_creates_a_queue(browser, site, tmp_path):
    server, db, dataset, uids = site
    page, errors = open_page(browser, server.url, server.admin_link.split("#token=")[1], height=900)
    page.wait_for_selector("body[data-loaded]")
    page.fill("input[name=filter]", "hate")
    page.fill("input[name=n]", "5")
    page.fill("input[name=labels_per_item]", "2")
    page.click("button[type=submit]")
    page.wait_for_function("() => document.querySelector('#queues').textContent.includes('hate-random')")
    assert page.text_content("#queue-status").startswith("Created hate-random")
    assert "Fleiss' kappa" in page.text_content("#agreement")
    screenshot(page, tmp_path, "admin-page.png")
    assert errors == []
    rater = rater_tokens(db, ["nosy"])["nosy"]         # a rater's session gets no admin data
    other, _ = open_page(browser, server.url, rater)
    other.wait_for_selector(READY)
    other.goto(f"{server.url}/admin")
    other.wait_for_selector("#refused:not([hidden])")
    assert "not an admin" in other.text_content("#refused")


class Proxy:
    """A TCP proxy in front of the server that can swallow the reply to the next answer (the server
    stores it, the browser never hears back) and refuses connections while the server is down."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.drop_next_answer = threading.Event()
        self.dropped = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        swallow = {"reply": False}

        async def pipe(src, dst, replies):
            try:
                while data := await src.read(65536):
                    if not replies and b"POST /api/labels" in data and self.drop_next_answer.is_set():
                        self.drop_next_answer.clear()
                        swallow["reply"] = True
                    if replies and swallow["reply"]:
                        self.dropped += 1
                        break                 # the answer is stored; its reply never arrives
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                for w in (writer, up_writer):
                    w.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    def close(self):
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_a_dropped_reply_and_a_server_crash_mid_queue_store_every_label_exactly_once(browser, tmp_path):
    dataset, uids = picture_dataset(tmp_path / "emb", 10)
    db = tmp_path / "labels.db"
    queue_db(db, dataset, uids)
    token = rater_tokens(db, ["sam"])["sam"]
    server = Server(db, "--dataset", dataset, "--gold-every", 0).start()
    proxy = Proxy(server.port)
    try:
        page, errors = open_page(browser, f"http://127.0.0.1:{proxy.port}", token)
        for _ in range(3):
            press(page, "y")
        proxy.drop_next_answer.set()                 # the 4th answer is stored, its reply lost on the way
        press(page, "n")
        assert proxy.dropped == 1
        server.kill()                                # the server crashes while the 5th pair is on screen
        shown = current_uid(page)
        page.keyboard.press("y")
        page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Not saved yet')")
        assert current_uid(page) == shown            # nothing new shows until the answer is stored
        time.sleep(0.5)
        server.start()                               # same port: the page's retries get through
        page.wait_for_function("uid => document.querySelector('#work').dataset.uid !== uid", arg=shown)
        page.reload()                                # a reload mid-queue resumes where it was
        while page.is_hidden("#done"):
            press(page, "n")
        assert errors == []
    finally:
        proxy.close()
        server.kill()
    rows = page_labels(db, "sam")
    assert sorted(r[1] for r in rows) == sorted(uids)          # every pair labelled, exactly once
    assert len({r[0] for r in rows}) == len(rows) == 10 and all(r[3] is None for r in rows)
    assert [r[2] for r in rows][:5] == ["yes", "yes", "yes", "no", "yes"]
