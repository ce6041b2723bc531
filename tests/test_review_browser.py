"""The review page in a real headless Chromium, served by `charter review` itself: three revisions
and one label pair marked with the keyboard, the page reloaded, the marks still there (and in
the marks file); no console errors (the inline script is allowed by its hash).

Needs Debian's chromium + chromium-driver (apt) and selenium (pip); skips with a message otherwise.
"""
import os
import re
import signal
import subprocess
import sys

import pytest

from charter.review import read_marks
from support import read_line


@pytest.fixture
def served(labelled):
    """`charter review` on the labelled run, as reviewer eve; stopped with SIGTERM after the test."""
    proc = subprocess.Popen([sys.executable, "-m", "charter.cli", "review", str(labelled), "--reviewer", "eve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+/)", read_line(proc)).group(1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0


def press(driver, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(driver).send_keys(key).perform()


def saved(driver, index: int, value: str) -> None:
    """Wait until item `index` shows `value` (the server answered and the page took the mark)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: d.find_elements("css selector", ".item")[index].get_attribute("data-mark") == value)


def marks_on_page(driver) -> list[tuple[str, str]]:
    return [(el.get_attribute("data-type"), el.get_attribute("data-mark"))
            for el in driver.find_elements("css selector", ".item")]


def test_marking_with_the_keyboard_survives_a_reload(browser, served, labelled):  # noqa: F811
    browser.get(served)
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    assert [t for t, _ in marks_on_page(browser)] == ["revision"] * 3 + ["pair"] * 3
    press(browser, "j", "1")  # first revision: better
    saved(browser, 0, "better")
    press(browser, "j", "w")  # second: worse (w is 2's twin)
    saved(browser, 1, "worse")
    press(browser, "j", "3")  # third: the same
    saved(browser, 2, "same")
    press(browser, "j", "b")  # the first pair: on a pair, b picks answer B
    saved(browser, 3, "b")
    press(browser, "?")
    assert browser.find_element("id", "help").is_displayed()
    press(browser, "?")
    assert not browser.find_element("id", "help").is_displayed()
    progress = browser.find_element("id", "progress").text
    assert progress.startswith("revisions 3 of 3 marked, pairs 1 of 3 picked")

    browser.refresh()
    assert marks_on_page(browser) == [("revision", "better"), ("revision", "worse"), ("revision", "same"),
                                      ("pair", "b"), ("pair", ""), ("pair", "")]
    pressed = browser.find_elements("css selector", ".item button[aria-pressed='true']")
    assert [b.get_attribute("data-value") for b in pressed] == ["better", "worse", "same", "b"]
    marks = read_marks(labelled)
    assert [m.mark for m in marks.revisions] == ["better", "worse", "same"] and len(marks.pairs) == 1
    press(browser, "j", "x")  # after a reload no item is current: j takes the first; x clears it
    saved(browser, 0, "")
    assert [m.mark for m in read_marks(labelled).revisions] == ["worse", "same"]
    assert not [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    browser.save_screenshot(str(labelled / "review.png"))
