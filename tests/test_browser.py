"""The HTML leaderboard in a real browser (Debian's chromium driven by Playwright): no console errors, sorting and
filtering work, hostile strings do not execute. Screenshots land in test-artifacts/ (kept by CI, ignored by git)."""

import shutil

import pytest
from conftest import ROOT, install_plugin, pip, run_qval, write_suite

ARTIFACTS = ROOT / "test-artifacts"
XSS = "<script>alert('xss')</script><img src=x onerror=alert('img')>"


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    """Payloads in the suite description, in a method label (a plugin param) and in a model reply quoted by a
    failure reason (the example plugin's echo scorer)."""
    root = tmp_path_factory.mktemp("browser")
    install_plugin("qval-example-plugin")
    try:
        suite = write_suite(
            root / "s.yaml",
            f"""\
            name: browser
            description: "{XSS}"
            models: [smollm2-135m-instruct]
            qalign:
              envs: [frozenlake, taxi]
              methods: [oracle-q, random, {{name: example-echo, params: {{reply: "{XSS}"}}}},
                        {{name: example-echo, params: {{reply: plain}}}}]  # two: labels then show the params
              points: {{episodes: 6, max_points_per_episode: 3, max_steps: 60}}
            """,
        )
        assert run_qval("run", suite, "--results", root / "r").returncode == 0
        assert run_qval("report", "--results", root / "r", "--out", root / "rep").returncode == 0
    finally:
        pip("uninstall", "-y", "qval-example-plugin")
    return root / "rep" / "browser" / "index.html"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required (make setup installs it)"
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield b
        b.close()


# Run in every document before the page's own markup: its CSP violations (a stylesheet, style="" attribute or
# script the policy refuses) reach Python through a binding; neither is subject to the page's CSP.
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", e => window.qvalCspViolation(
    `CSP: ${e.effectiveDirective} refused ${e.blockedURI || "inline"} at line ${e.lineNumber}: ${e.sample}`));
"""


def _open(browser, path):
    """A page with a list that collects console errors and warnings (Chromium logs "... violates the following
    Content Security Policy directive ..." there), uncaught errors and CSP violation events, across every document
    it navigates to: any fails a test."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems, dialogs = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.expose_function("qvalCspViolation", lambda text: problems.append(text))
    page.add_init_script(_REPORT_VIOLATIONS)
    page.goto(path.as_uri())
    _loaded(page)
    return page, problems, dialogs


def _loaded(page):
    """Wait for the load, then one task more: violation events are queued as tasks, and reach Python after it."""
    page.wait_for_load_state("load")
    page.evaluate("() => new Promise(resolve => setTimeout(resolve, 50))")


def _column(page, table, index):
    return table.locator("tbody tr:not([hidden])").evaluate_all(
        f"rows => rows.map(r => r.children[{index}].getAttribute('data-sort') || r.children[{index}].textContent)"
    )


def test_page_loads_clean_and_hostile_text_is_inert(browser, report_page):
    page, problems, dialogs = _open(browser, report_page)
    assert problems == [] and dialogs == []
    assert page.locator("script").count() == 1  # the renderer's own, hash-pinned; the payload is text
    assert page.locator("img[src='x']").count() == 0
    assert page.locator(".desc").inner_text() == XSS
    assert any(XSS in text for text in page.locator("td.reason").all_inner_texts())  # the model reply, as text
    assert any(XSS in t for t in page.locator("td.name").all_inner_texts())  # the method label, as text
    assert page.locator(".controls").first.is_visible()  # the inline script ran under the page's CSP
    assert page.evaluate("getComputedStyle(document.body).maxWidth") == "1340px"  # so did the stylesheet
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)


def test_a_style_the_policy_does_not_pin_is_refused_and_fails_the_check(browser, report_page):
    """The check above can fail: a style="" attribute and a <style> element added to the page are refused by its
    CSP (the hash pins only the page's own stylesheet, and there is no 'unsafe-inline'), and both refusals reach
    the problems list."""
    page, problems, _ = _open(browser, report_page)
    assert problems == []
    page.evaluate(
        """() => document.body.insertAdjacentHTML("beforeend",
            '<p id="injected" style="color: rgb(255, 0, 0)">x</p><style>#injected{font-size:40px}</style>')"""
    )
    page.evaluate("() => new Promise(resolve => setTimeout(resolve, 50))")
    assert page.evaluate("getComputedStyle(document.getElementById('injected')).color") != "rgb(255, 0, 0)"
    assert page.evaluate("getComputedStyle(document.getElementById('injected')).fontSize") != "40px"
    refused = {p.split()[1] for p in problems if p.startswith("CSP: ")}
    assert refused == {"style-src-attr", "style-src-elem"}, problems  # the attribute and the element
    console = [p for p in problems if not p.startswith("CSP: ")]
    assert console and all("Content Security Policy" in p for p in console), problems  # the console says it too


def _defined(values):
    """The numbers of a column; undefined cells (the echo scorer's, all failed) carry no sort key."""
    return [float(v) for v in values if v not in ("", "–")]


def test_sorting_and_filtering(browser, report_page):
    page, problems, _ = _open(browser, report_page)
    table = page.locator("table.board").first
    header = table.locator("th.main")
    index = table.locator("thead th").evaluate_all("ths => ths.findIndex(t => t.classList.contains('main'))")
    header.click()
    first = _defined(_column(page, table, index))
    header.click()
    second = _defined(_column(page, table, index))
    assert first == sorted(first, reverse=True) or first == sorted(first)
    assert second == list(reversed(first))
    page.locator("input.f-text").first.fill("oracle")
    methods = table.locator("tbody tr:not([hidden])").evaluate_all("rows => rows.map(r => r.children[2].textContent)")
    assert methods == ["oracle-q"]
    page.locator("input.f-text").first.fill("")
    page.locator("select.f-dataset").first.select_option("taxi")
    visible = page.locator(".track").first.locator(".grp:not([hidden]) h3").all_inner_texts()
    assert visible and all(t.startswith("taxi") for t in visible)
    page.screenshot(path=str(ARTIFACTS / "leaderboard-filtered.png"), full_page=True)
    assert problems == []


def test_ranking_above_the_fold_and_tables_fit_the_window(browser, report_page):
    """At 1,400 x 900 the first leaderboard's header and first row show without scrolling, the environment and
    the definitions are collapsed, and no table makes the page scroll sideways."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(report_page.as_uri())
    page.wait_for_load_state("load")
    first_row = page.locator("table.board").first.locator("tbody tr").first.bounding_box()
    assert first_row is not None and first_row["y"] + first_row["height"] <= 900, first_row
    assert page.locator("details.env").evaluate("d => d.open") is False
    assert page.locator("details.env li").count() >= 10  # every version still in the page
    assert page.locator("details.legend").first.evaluate("d => d.open") is False
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    widths = page.locator("table").evaluate_all("ts => ts.map(t => t.getBoundingClientRect().right)")
    assert max(widths) <= 1400, widths
    page.locator("details.env summary").click()  # opens on a click, as a disclosure should
    assert page.locator("details.env").evaluate("d => d.open") is True
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "leaderboard-first-screen.png"))


def test_drill_down_page_from_a_row(browser, report_page):
    """A row's method links to its cell's samples: the page renders under the same CSP (its script sorts the states
    by rank disagreement), and the echo cell's hostile reply stays text."""
    page, problems, dialogs = _open(browser, report_page)
    page.locator("table.board a", has_text="random").first.click()
    _loaded(page)
    assert "/cells/" in page.url
    assert page.evaluate("getComputedStyle(document.querySelector('p.back')).fontSize") == "14.4px"  # cell.css
    table = page.locator("table.samples")
    rows = table.locator(":scope > tbody > tr")
    assert rows.count() > 1
    header = table.locator("thead th.main")
    index = table.locator(":scope > thead th").evaluate_all("ths => ths.findIndex(t => t.classList.contains('main'))")
    values = lambda: _defined(  # noqa: E731
        rows.evaluate_all(f"rows => rows.map(r => r.children[{index}].getAttribute('data-sort'))")
    )
    header.click()  # the script ran under the page's CSP: a first click sorts worst first
    worst_first = values()
    assert header.get_attribute("aria-sort") == "descending" and worst_first == sorted(worst_first, reverse=True)
    header.click()
    assert values() == sorted(worst_first)
    page.screenshot(path=str(ARTIFACTS / "drill-down.png"), full_page=True)
    page.go_back()
    page.locator("table.board a", has_text="example-echo").first.click()
    _loaded(page)
    assert page.locator("script").count() == 1 and page.locator("img[src='x']").count() == 0
    assert any(XSS in t for t in page.locator("td.err").all_inner_texts())  # the reply, as text
    assert problems == [] and dialogs == []
