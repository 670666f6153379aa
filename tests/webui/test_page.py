"""The page as a whole in the browser: both languages with every visible string from the catalogues, the queue
(progress, cancel) and gallery across a reload, the API key prompt, accessibility (axe-core), phone width."""

from __future__ import annotations

import json

import pytest
from .webui_page import choose_file, open_panel, scene_png, wait_viewer_image

from kolors.server.webui import STATIC

CATALOGUES = {lang: json.loads((STATIC / "i18n" / f"{lang}.json").read_text(encoding="utf-8")) for lang in ("en", "zh")}

# Every visible text node and every visible placeholder/title/aria-label/alt of the page: each must be the
# catalogue's message for the element's key (variables filled in), or sit inside an element marked as data.
WALK = r"""catalogue => {
  const fill = (text, vars) => text.replace(/\{(\w+)\}/g, (whole, name) => {
    if (!vars || !(name in vars)) return whole;
    const v = vars[name];
    return v && typeof v === "object" && "key" in v ? catalogue[v.key] : String(v);
  });
  const expected = (el, key) => {
    if (!(key in catalogue)) return null;
    return fill(catalogue[key], el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : undefined);
  };
  const shown = el => el.checkVisibility({ visibilityProperty: true, opacityProperty: false });
  const problems = [];
  let checked = 0;
  const checkText = (el, text) => {
    const owner = el.closest("[data-i18n], [data-content]");
    if (owner && owner.hasAttribute("data-content") && !owner.hasAttribute("data-i18n")) return;
    if (!owner) return problems.push(`no message: "${text}" in <${el.tagName.toLowerCase()}${el.id ? " #" + el.id : ""}>`);
    const want = expected(owner, owner.dataset.i18n);
    checked++;
    if (want === null) problems.push(`unknown key ${owner.dataset.i18n}`);
    else if (owner.textContent.trim() !== want.trim()) problems.push(`${owner.dataset.i18n}: "${owner.textContent}" != "${want}"`);
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, text = node.textContent.trim(), el = node.parentElement;
    if (!text || !/\p{L}/u.test(text) || el.closest("script, style, template")) continue;
    if (el.tagName === "OPTION" ? shown(el.parentElement) : shown(el)) checkText(el, text);
  }
  for (const el of document.body.querySelectorAll("[placeholder], [title], [aria-label], [alt]")) {
    if (!shown(el)) continue;
    const spec = Object.fromEntries((el.dataset.i18nAttr || "").split(";").filter(Boolean).map(p => p.split("=")));
    for (const attr of ["placeholder", "title", "aria-label", "alt"]) {
      const value = el.getAttribute(attr);
      if (!value || !/\p{L}/u.test(value)) continue;
      checked++;
      if (!(attr in spec)) { if (!el.closest("[data-content]")) problems.push(`no message: ${attr}="${value}"`); continue; }
      const want = expected(el, spec[attr]);
      if (value !== want) problems.push(`${spec[attr]}: ${attr}="${value}" != "${want}"`);
    }
  }
  if (document.title !== catalogue["app.title"]) problems.push(`title "${document.title}"`);
  return { problems, checked };
}"""


def _show_everything(page, server, running_job):
    """Bring as much of the interface on screen as one page can show at once."""
    for panel in ("#controls-panel", "#adapters-panel", "#loras-panel", "#pag-panel"):
        open_panel(page, panel)
    page.click("#control-add")
    page.click("label[for=task-inpaint]")
    choose_file(page, "#init-file", "scene.png", scene_png(64))
    page.wait_for_selector("#stage:not([hidden])")
    page.wait_for_selector(f'#queue-list [data-job="{running_job}"]')
    page.locator("#gallery-list button").first.click()
    wait_viewer_image(page)
    page.eval_on_selector_all("#viewer details", "ds => ds.forEach(d => { d.open = true; })")
    page.click("#viewer-copy-command")  # a toast


def _walk(page, lang):
    result = page.evaluate(WALK, CATALOGUES[lang])
    assert result["problems"] == []
    assert result["checked"] > 50  # the walk saw the page
    return result


@pytest.fixture
def start_long_job(server):
    """``start_long_job()``: the id of a job that runs for a while (150 steps); cancelled at the end."""
    started = []

    def start() -> str:
        started.append(server.call("POST", "/api/v1/jobs", {"prompt": "slow", "steps": 150, "seed": 5})["id"])
        return started[-1]

    yield start
    for job_id in started:
        server.call("POST", f"/api/v1/jobs/{job_id}/cancel")
        server.wait(job_id)


def test_every_visible_string_comes_from_the_catalogue_in_both_languages(open_page, server, start_long_job, shots):
    server.generate("一只红色的圆", seed=11)
    long_job = start_long_job()
    page = open_page(locale="en-US")
    _show_everything(page, server, long_job)
    shots(page, "english")
    _walk(page, "en")

    page.select_option("#language", "zh")  # switched live: dynamic texts follow
    page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    shots(page, "chinese")
    _walk(page, "zh")

    page.reload()  # remembered (the browser says English)
    page.wait_for_selector("body[data-ready=true]")
    assert page.get_attribute("html", "lang") == "zh-CN" and page.input_value("#language") == "zh"
    _walk(page, "zh")


def test_browser_language_is_followed(open_page):
    assert open_page(locale="zh-TW").get_attribute("html", "lang") == "zh-CN"
    assert open_page(locale="fr-FR").get_attribute("html", "lang") == "en"


def test_progress_cancel_and_the_queue_survive_a_reload(open_page, server, start_long_job, shots):
    server.generate("一个蓝色的方块", seed=12)
    long_job = start_long_job()
    page = open_page()
    card = page.locator(f'#queue-list [data-job="{long_job}"]')
    card.wait_for()
    page.wait_for_function(f"() => document.querySelector('[data-job=\"{long_job}\"]').dataset.status === 'running'",
                           timeout=30000)
    page.wait_for_function(f"() => document.querySelector('[data-job=\"{long_job}\"] progress').value > 0")
    assert "/150" in card.locator("[data-role=detail]").text_content()
    shots(page, "running")

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    card.wait_for()  # found again after the reload, still followed
    gallery_prompts = page.locator("#gallery-list .caption").all_text_contents()
    assert "一个蓝色的方块" in gallery_prompts
    step = lambda: int(card.locator("[data-role=detail]").text_content().split("/")[0].split()[-1])  # noqa: E731
    page.wait_for_function(f"() => /\\d/.test(document.querySelector('[data-job=\"{long_job}\"] [data-role=detail]').textContent)")
    first = step()
    page.wait_for_function(f"""() => {{ const t = document.querySelector('[data-job="{long_job}"] [data-role=detail]').textContent;
        return Number(t.split('/')[0].split(' ').pop()) > {first}; }}""", timeout=30000)
    shots(page, "after-reload")

    card.locator("[data-role=cancel]").click()
    page.wait_for_function(f"() => document.querySelector('[data-job=\"{long_job}\"]')?.dataset.status === 'cancelled'",
                           timeout=30000)
    shots(page, "cancelled")
    assert server.wait(long_job)["status"] == "cancelled"
    assert card.locator("[data-role=status]").text_content() == "Cancelled"


def test_api_key_is_asked_for_and_kept_for_the_session(open_page, server, shots):
    def guarded(route):
        url = route.request.url
        if url.startswith(server.url + "/api/") and route.request.headers.get("authorization") != "Bearer sesame":
            route.fulfill(status=401, content_type="application/json",
                          body=json.dumps({"error": {"message": "an API key is needed", "type": "authentication",
                                                     "param": None, "code": "unauthorized"}}))
        else:
            route.fallback()

    page = open_page(wait=False)
    page.route("**/*", guarded)
    page.goto(server.url + "/")
    page.wait_for_selector("#key-dialog[open]")
    shots(page, "asked")
    page.fill("#key-input", "wrong")
    page.keyboard.press("Enter")
    page.wait_for_selector("#key-error:not([hidden])")  # refused: asked again, saying so
    page.fill("#key-input", "sesame")
    page.click("#key-dialog button[type=submit]")
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate("() => sessionStorage.getItem('kolors-api-key')") == "sesame"
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert not page.locator("#key-dialog").is_visible()


def test_accessibility_has_no_critical_violations(open_page, server, axe_source, shots):
    server.generate("a red circle", seed=13)
    page = open_page()
    for panel in ("#controls-panel", "#adapters-panel", "#loras-panel", "#pag-panel"):
        open_panel(page, panel)
    page.click("#control-add")
    page.locator("#gallery-list button").first.click()
    wait_viewer_image(page)
    for lang in ("en", "zh"):
        page.select_option("#language", lang)
        page.evaluate(axe_source)
        result = page.evaluate("async () => (await axe.run(document)).violations"
                               ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}))")
        assert [v for v in result if v["impact"] == "critical"] == []
        assert [v for v in result if v["impact"] == "serious"] == []
    shots(page, "checked")


def test_phone_width_has_no_horizontal_scrolling(open_page, server, shots):
    server.generate("a red circle", seed=14)
    page = open_page(locale="zh-CN", viewport={"width": 375, "height": 812})
    page.locator("#gallery-list button").first.click()
    wait_viewer_image(page)
    open_panel(page, "#controls-panel")
    page.click("#control-add")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    box = page.locator("#generate").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    shots(page, "phone")
