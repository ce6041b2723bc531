"""The report in a real headless Chromium: loads without console errors, filters, searches, and
shows a prompt holding <script> (and an eval.json holding a refresh and a form) as text.

Needs Debian's chromium + chromium-driver (apt) and selenium (pip); skips with a message otherwise.
selenium-manager never runs: the driver path is given explicitly.
"""
import time

import pytest

from charter.report.html import write_report
from charter.runs.runread import load_run
from support import REFRESH, XSS, make_run, poison_eval

def visible(driver) -> int:
    return sum(el.is_displayed() for el in driver.find_elements("css selector", ".chain"))


def test_report_in_chromium(browser, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.support.ui import Select

    run = make_run(tmp_path)
    page = write_report([run], tmp_path / "report.html")
    browser.get(page.resolve().as_uri())
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # the <script>alert(1)</script> prompt did not run
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors  # includes CSP violations: our own script must be allowed by its hash
    records = load_run(run)
    assert visible(browser) == len(records) == 8
    assert browser.find_element("id", "shown").text == "8 of 8 shown"

    principle = Select(browser.find_element("id", "principle"))
    pid = principle.options[1].get_attribute("value")
    principle.select_by_value(pid)
    assert visible(browser) == sum(any(x.principle == pid for x in r.rounds) for r in records) > 0
    principle.select_by_value("")

    search = browser.find_element("id", "search")
    search.send_keys("HOTWIRE")
    assert visible(browser) == 1
    search.clear()
    search.send_keys("alert(1)")
    assert visible(browser) >= 1  # found as text

    assert len(browser.find_elements("tag name", "script")) == 1
    assert not browser.find_elements("css selector", "img[src='x'], .chain b, .chain-ev b")
    hits = browser.find_elements("xpath", "//summary[contains(., '<script>alert(1)</script>')]")
    assert hits and XSS in hits[0].text
    browser.save_screenshot(str(tmp_path / "report.png"))


def test_crafted_eval_json_neither_redirects_nor_renders_a_form(browser, tmp_path):
    run = poison_eval(make_run(tmp_path))
    page = write_report([run], tmp_path / "report.html")
    browser.get(page.resolve().as_uri())
    time.sleep(1.5)  # a refresh with a 0 s delay would have left by now
    assert browser.current_url == page.resolve().as_uri()
    assert not browser.find_elements("css selector", "meta[http-equiv='refresh'], form, input[name='q']")
    shown = browser.find_element("id", "evaluation").text
    assert REFRESH in shown and "<form action=" in shown  # the text itself, visible
