"""Open built book pages in headless Chromium, offline, and report what broke.

For each page: did every plotly figure draw, did the math typeset, did the
console log an error, did any request try to leave the machine, how heavy is
the page? Then, at every window size in ``VIEWS`` (desktop and phone) and in the
light and the dark theme, what a reader sees: every figure's title, axis titles,
legend, colour bars, annotations, sliders and menus inside the figure and clear of
each other and of the toolbar, no text under 9 px, colours that follow the theme,
readable menu labels, the opening view a figure declares, no "\ufffd", no Markdown
table left as pipes, no sideways page scroll, and a sidebar toggle that opens the
sidebar with a chapter link that can be clicked. A screenshot of each page, and of
each figure at each size and theme, is saved for a person to look at.

    .venv/bin/python tests/pagecheck.py _build/html [screenshot_dir]

The test suite calls :func:`check_site` (tests/test_book.py).
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


#: Window sizes every page is checked at: a laptop and a phone (iPhone 12-14).
VIEWS = ((1280, 900), (390, 844))
THEMES = ("light", "dark")

FIGURE_JS = r"""
// Runs in the page (selenium execute_script). Returns, for each plotly figure,
// the list of layout defects a reader would see, plus page-level defects.
const MIN_PX = 9, TOL = 1.5;
function box(el) {
  const r = el.getBoundingClientRect();
  return {x0: r.left, y0: r.top, x1: r.right, y1: r.bottom, w: r.width, h: r.height};
}
function visible(el) {
  if (!el || !el.getBoundingClientRect) return false;
  const r = el.getBoundingClientRect();
  if (r.width < 0.5 || r.height < 0.5) return false;
  for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
    const cs = getComputedStyle(e);
    if (cs.display === 'none' || cs.visibility === 'hidden' || parseFloat(cs.opacity) === 0) return false;
  }
  return true;
}
function overlap(a, b) {
  const w = Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0), h = Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0);
  return w > TOL && h > TOL;
}
// A text element's outline on screen, rotation included (tick labels are often turned).
function quad(el) {
  const bb = el.getBBox(), m = el.getScreenCTM();
  return [[bb.x, bb.y], [bb.x + bb.width, bb.y], [bb.x + bb.width, bb.y + bb.height], [bb.x, bb.y + bb.height]]
    .map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]);
}
function rectQuad(b) { return [[b.x0, b.y0], [b.x1, b.y0], [b.x1, b.y1], [b.x0, b.y1]]; }
// Separating-axis test for two convex quadrilaterals; they overlap by more than TOL on every axis.
function quadsOverlap(p, q) {
  for (const poly of [p, q]) for (let i = 0; i < 4; i++) {
    const [x1, y1] = poly[i], [x2, y2] = poly[(i + 1) % 4];
    const len = Math.hypot(x2 - x1, y2 - y1) || 1, nx = (y1 - y2) / len, ny = (x2 - x1) / len;
    const pr = poly2 => poly2.map(([x, y]) => x * nx + y * ny);
    const a = pr(p), b = pr(q);
    if (Math.min(Math.max(...a), Math.max(...b)) - Math.max(Math.min(...a), Math.min(...b)) <= 3) return false;
  }
  return true;
}
function inside(a, outer) {
  return a.x0 >= outer.x0 - TOL && a.y0 >= outer.y0 - TOL && a.x1 <= outer.x1 + TOL && a.y1 <= outer.y1 + TOL;
}
const _ctx = document.createElement('canvas').getContext('2d');
function rgb(c) {
  if (!c) return null;
  _ctx.fillStyle = '#010203'; _ctx.fillStyle = c;  // the browser normalises any CSS colour
  if (_ctx.fillStyle === '#010203' && !/^#010203$/i.test(c)) return null;
  c = _ctx.fillStyle;
  const m = (c || '').match(/rgba?\(([^)]+)\)/);
  if (m) { const p = m[1].split(',').map(parseFloat); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; }
  const h = (c || '').match(/^#([0-9a-f]{6}|[0-9a-f]{3})$/i);
  if (h) {
    let s = h[1]; if (s.length === 3) s = s.split('').map(x => x + x).join('');
    return {r: parseInt(s.slice(0, 2), 16), g: parseInt(s.slice(2, 4), 16), b: parseInt(s.slice(4, 6), 16), a: 1};
  }
  return null;
}
// An SVG element's fill as {r, g, b, a}, its fill-opacity folded into a.
function fillOf(el) {
  const cs = getComputedStyle(el), c = rgb(cs.fill);
  if (c) c.a *= parseFloat(cs.fillOpacity || '1');
  return c;
}
function lum(c) {
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
}
function contrast(a, b) {
  const la = lum(a), lb = lum(b);
  return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
}
function plain(t) { return (t || '').replace(/<br\s*\/?>/gi, ' ').replace(/<[^>]+>/g, '').replace(/\s+/g, ' ').trim(); }
function pageBg() {
  for (const el of [document.body, document.documentElement]) {
    const c = rgb(getComputedStyle(el).backgroundColor);
    if (c && c.a > 0) return c;
  }
  return {r: 255, g: 255, b: 255, a: 1};
}

const page = [];
const bodyText = document.body.innerText + ' ' +
  Array.from(document.querySelectorAll('svg text')).map(t => t.textContent).join(' ');
if (bodyText.indexOf('\ufffd') >= 0) {
  const at = bodyText.indexOf('\ufffd');
  page.push('"\ufffd" (a broken character) on the page: …' + bodyText.slice(Math.max(0, at - 40), at + 10).replace(/\s+/g, ' ') + '…');
}
document.querySelectorAll('p').forEach(p => {
  const t = p.textContent.trim();
  if (t.startsWith('|') && /\|\s*(-{3,}|—+|:?-+:?)\s*\|/.test(t)) page.push('unrendered Markdown table: ' + t.slice(0, 80));
});
const bare = Array.from(document.querySelectorAll('i[class*="fa-"]')).filter(i => !i.querySelector('svg') && getComputedStyle(i).display !== 'none');
if (bare.length) page.push(`${bare.length} icon(s) not drawn (e.g. ${bare[0].className})`);
if (document.documentElement.scrollWidth > window.innerWidth + 2)
  page.push(`the page scrolls sideways (${document.documentElement.scrollWidth} px wide in a ${window.innerWidth} px window)`);

const dark = document.documentElement.dataset.theme === 'dark';
const bg = pageBg();
const figures = [];
document.querySelectorAll('.rs-figure .js-plotly-plot').forEach((gd, index) => {
  const probs = [];
  const svg = gd.querySelector('.main-svg');
  const L = gd._fullLayout || {};
  const title = plain((gd.layout.title || {}).text);
  if (!svg) { figures.push({index, title, problems: ['figure did not draw']}); return; }
  const fig = box(svg);
  const items = [];  // [kind, name, element box]
  const add = (kind, name, el) => { if (visible(el)) items.push({kind, name, b: box(el)}); };
  gd.querySelectorAll('.g-gtitle text').forEach(e => add('title', 'title', e));
  gd.querySelectorAll('.infolayer g[class$="title"]:not(.g-gtitle) text').forEach(e => {
    if (e.closest('.colorbar') || e.closest('.legend')) return;
    const cls = e.parentElement.getAttribute('class') || '';
    add('axis title', cls.replace('g-', ''), e);
  });
  gd.querySelectorAll('.legend').forEach(e => add('legend', 'legend', e.querySelector('.bg') || e));
  gd.querySelectorAll('.infolayer .colorbar').forEach((e, i) => add('colour bar', 'colour bar ' + (i + 1), e));
  gd.querySelectorAll('.annotation').forEach((e, i) => add('annotation', 'annotation "' + plain(e.textContent).slice(0, 30) + '"', e.querySelector('.annotation-text-g') || e));
  gd.querySelectorAll('.slider-container .slider-group').forEach((e, i) => add('slider', 'slider ' + (i + 1), e));
  gd.querySelectorAll('.updatemenu-container .updatemenu-header, .updatemenu-container .updatemenu-button').forEach(e => {
    // an open dropdown's list lies over the plot on purpose; only its header counts when closed
    if (e.closest('.updatemenu-dropdown-button-group')) return;
    add('menu', 'menu "' + plain(e.textContent).slice(0, 20) + '"', e);
  });
  // tick labels: every label inside the figure, and not on top of another label of its axis
  const axisLayers = gd.querySelectorAll('.xaxislayer-above, .yaxislayer-above');
  axisLayers.forEach(layer => {
    const labels = Array.from(layer.querySelectorAll('text')).filter(visible).map(t => ({t: t.textContent, b: box(t), p: quad(t)}));
    for (let i = 0; i < labels.length; i++) {
      if (!inside(labels[i].b, fig)) probs.push(`tick label "${labels[i].t}" is cut off at the figure's edge`);
      for (let j = i + 1; j < labels.length; j++)
        if (overlap(labels[i].b, labels[j].b) && quadsOverlap(labels[i].p, labels[j].p))
          probs.push(`tick labels "${labels[i].t}" and "${labels[j].t}" overlap`);
    }
    if (labels.length) {
      const u = labels.reduce((a, l) => ({x0: Math.min(a.x0, l.b.x0), y0: Math.min(a.y0, l.b.y0), x1: Math.max(a.x1, l.b.x1), y1: Math.max(a.y1, l.b.y1)}),
                              {x0: 1e9, y0: 1e9, x1: -1e9, y1: -1e9});
      const cls = layer.getAttribute('class').split(' ')[0].replace('axislayer-above', '');
      items.push({kind: 'tick labels', name: cls + ' tick labels', b: u, ticks: labels});
    }
  });
  for (const it of items) if (!inside(it.b, fig)) probs.push(`${it.name} is cut off (outside the figure)`);
  for (let i = 0; i < items.length; i++) for (let j = i + 1; j < items.length; j++) {
    const a = items[i], b = items[j];
    if (a.kind === 'tick labels' && b.kind === 'tick labels') continue;  // x and y labels meet at the corner
    if (!overlap(a.b, b.b)) continue;
    // a tick-label block is a union box: only an overlap with one of its labels counts
    const tk = a.kind === 'tick labels' ? a : b.kind === 'tick labels' ? b : null;
    if (tk) { const other = tk === a ? b : a; if (!tk.ticks.some(t => overlap(t.b, other.b) && quadsOverlap(t.p, rectQuad(other.b)))) continue; }
    probs.push(`${a.name} overlaps ${b.name}`);
  }
  // the toolbar may never cover the title (it is measured even while hidden until hover)
  const mb = gd.querySelector('.modebar');
  gd.querySelectorAll('.g-gtitle text').forEach(t => {
    if (mb && mb.getBoundingClientRect().width > 0 && overlap(box(mb), box(t))) probs.push('the toolbar (modebar) covers the title');
  });
  // fonts
  let small = null;
  gd.querySelectorAll('svg text').forEach(t => {
    if (!visible(t)) return;
    const px = parseFloat(getComputedStyle(t).fontSize);
    if (px < MIN_PX && (!small || px < small.px)) small = {px, t: t.textContent};
  });
  if (small) probs.push(`text at ${small.px.toFixed(1)} px ("${small.t.slice(0, 20)}"), below ${MIN_PX} px`);
  const hov = (L.hoverlabel && L.hoverlabel.font && L.hoverlabel.font.size) || 13;
  if (hov < MIN_PX) probs.push(`hover text at ${hov} px`);
  (gd._fullData || []).forEach(t => {
    const s = t.hoverlabel && t.hoverlabel.font && t.hoverlabel.font.size;
    if (typeof s === 'number' && s < MIN_PX) probs.push(`trace "${t.name}" hover text at ${s} px`);
    if (t.type === 'heatmap' && t.visible === true && !t.showscale && !(t.texttemplate || t.text))
      probs.push(`heatmap "${t.name || ''}" has neither a colour bar nor values in its cells`);
  });
  // colours follow the page's theme: figure background and every frame around it
  const paper = rgb(L.paper_bgcolor);
  if (paper && contrast(paper, bg) > 1.6) probs.push(`figure background ${L.paper_bgcolor} does not follow the ${dark ? 'dark' : 'light'} page`);
  for (let e = gd; e && !e.classList.contains('cell_output') && e !== document.body; e = e.parentElement) {
    const cs = getComputedStyle(e);
    const c = rgb(cs.backgroundColor);
    if (c && c.a > 0.5 && contrast(c, bg) > 1.6) { probs.push(`the frame (${e.className || e.tagName}) has background ${cs.backgroundColor} on a ${dark ? 'dark' : 'light'} page`); break; }
    const bc = rgb(cs.borderTopColor);
    if (parseFloat(cs.borderTopWidth) > 0 && bc && bc.a > 0.5 && contrast(bc, bg) > 3) { probs.push(`the frame's border ${cs.borderTopColor} glares on the ${dark ? 'dark' : 'light'} page`); break; }
  }
  // text on the figure's own background (titles, ticks, notes, legend) readable in this theme
  if (paper) {
    let worst = null;
    gd.querySelectorAll('.infolayer text, .xaxislayer-above text, .yaxislayer-above text, .annotation text').forEach(t => {
      if (!visible(t) || t.closest('.updatemenu-container') || t.closest('.slider-container')) return;
      const ann = t.closest('.annotation');
      const annBg = ann && ann.querySelector('.bg') && fillOf(ann.querySelector('.bg'));
      if (annBg && annBg.a > 0.5) return;  // a note on its own box
      const tc = fillOf(t);
      if (!tc || tc.a < 0.5) return;
      const k = contrast(tc, paper);
      if (k < 4.5 && (!worst || k < worst.k)) worst = {k, t: t.textContent};
    });
    if (worst) probs.push(`text "${worst.t.slice(0, 30)}" has contrast ${worst.k.toFixed(1)}:1 on the figure background (needs 4.5)`);
  }
  // controls: label text readable on its button (WCAG AA, 4.5:1)
  gd.querySelectorAll('.updatemenu-button, .updatemenu-header').forEach(btn => {
    if (!visible(btn) || btn.closest('.updatemenu-dropdown-button-group')) return;
    const rect = btn.querySelector('rect'), text = btn.querySelector('text');
    if (!rect || !text) return;
    const f = fillOf(rect), tc = fillOf(text);
    if (f && tc && contrast(f, tc) < 4.5)
      probs.push(`menu label "${text.textContent}" has contrast ${contrast(f, tc).toFixed(1)}:1 on its button (needs 4.5)`);
  });
  gd.querySelectorAll('.slider-container text').forEach(text => {
    if (!visible(text)) return;
    const tc = fillOf(text);
    if (paper && tc && contrast(paper, tc) < 4.5)
      probs.push(`slider label "${text.textContent}" has contrast ${contrast(paper, tc).toFixed(1)}:1 (needs 4.5)`);
  });
  // the opening view: declared in layout.meta.view, it must be what the controls show
  const menus = gd.layout.updatemenus || [], sliders = gd.layout.sliders || [];
  if (menus.length || sliders.length) {
    const active = [];
    menus.forEach(m => { const a = m.active === undefined ? 0 : m.active; if (m.buttons && m.buttons[a]) active.push({label: String(m.buttons[a].label), args: m.buttons[a].args}); });
    sliders.forEach(s => { const a = s.active || 0; if (s.steps && s.steps[a]) active.push({label: String(s.steps[a].label), args: s.steps[a].args}); });
    const view = gd.layout.meta && gd.layout.meta.view;
    if (view === undefined || view === null) probs.push('has menus or a slider but does not declare its opening view (layout.meta.view)');
    else if (!active.some(a => a.label === String(view)))
      probs.push(`opens on ${JSON.stringify(active.map(a => a.label))}, not on its declared view "${view}"`);
    active.forEach(a => (a.args || []).forEach(arg => {
      if (!arg || typeof arg !== 'object' || Array.isArray(arg)) return;
      const t = arg['title.text'] !== undefined ? arg['title.text'] : (typeof arg.title === 'string' ? arg.title : (arg.title && arg.title.text));
      if (typeof t === 'string' && plain(t) !== title)
        probs.push(`the title is "${title.slice(0, 50)}" but the active control "${a.label}" sets "${plain(t).slice(0, 50)}"`);
    }));
  }
  figures.push({index, title, problems: Array.from(new Set(probs))});
});
return {page, figures};
"""

# Opens the sidebar with the visible toggle; reports whether it opened and where a chapter link is.
SIDEBAR_STATE_JS = r"""
const dlg = document.querySelector('#pst-primary-sidebar-modal');
const side = document.querySelector('#pst-primary-sidebar');
const where = (dlg && dlg.open) ? dlg : side;
let open = false;
if (dlg && dlg.open) open = true;
else if (side) {
  const r = side.getBoundingClientRect(), cs = getComputedStyle(side);
  open = cs.visibility !== 'hidden' && cs.display !== 'none' && parseFloat(cs.opacity) > 0.5 &&
         r.width > 50 && r.right > 50 && r.left < window.innerWidth - 50;
}
let link = null;
if (open && where) {
  const links = Array.from(where.querySelectorAll('a.reference.internal, nav a[href]'))
    .filter(a => /\.html(#|$)/.test(a.getAttribute('href') || '') && !/^(https?:)?\/\//.test(a.getAttribute('href')));
  for (const a of links) {
    const r = a.getBoundingClientRect();
    if (r.width < 1 || r.height < 1) continue;
    const x = r.left + Math.min(r.width / 2, 20), y = r.top + r.height / 2;
    if (y < 0 || y > window.innerHeight) continue;
    const hit = document.elementFromPoint(x, y);
    link = {href: a.href, clickable: !!hit && (hit === a || a.contains(hit)), x: x, y: y, text: a.textContent.trim()};
    if (link.clickable) break;
  }
}
return {open: open, link: link};
"""

# Resolves once residual.js has laid out and themed every figure (or after 4 s on pages without it).
_SETTLED_JS = """
const done = arguments[arguments.length - 1];
const start = Date.now();
const managed = !!document.querySelector('script[src*="residual.js"]');
(async function loop() {
  while (managed && Date.now() - start < 4000) {
    const s = document.documentElement.dataset.rsSettled;
    if (s !== undefined && s === (document.documentElement.dataset.theme || 'light')) break;
    await new Promise(res => setTimeout(res, 100));
  }
  await new Promise(res => setTimeout(res, 150));
  done(true);
})();
"""


@dataclass
class PageReport:
    page: str
    figures: int = 0
    figures_drawn: int = 0
    math: int = 0
    math_typeset: int = 0
    console_errors: list = field(default_factory=list)
    external_requests: list = field(default_factory=list)
    failed_requests: list = field(default_factory=list)
    html_bytes: int = 0
    transferred_bytes: int = 0
    requests: int = 0
    screenshot: str = ""
    probe: object = None
    #: per view ("1280x900 dark"): problems of the page as a whole
    view_problems: dict = field(default_factory=dict)
    #: figure number (1-based) -> {"title": ..., "problems": {view: [..]}}
    figure_checks: dict = field(default_factory=dict)

    @property
    def figures_passing(self) -> int:
        return sum(1 for f in self.figure_checks.values() if not any(f["problems"].values()))

    def figure_problems(self) -> list[str]:
        """One line per figure defect: the views it shows in, then what is wrong."""
        lines = []
        for n, f in sorted(self.figure_checks.items()):
            seen: dict[str, list[str]] = {}
            for view, probs in f["problems"].items():
                for p in probs:
                    seen.setdefault(p, []).append(view)
            for p, views in seen.items():
                lines.append(f"figure {n} ({f['title'][:60]}): {p} [{', '.join(views)}]")
        return lines

    @property
    def problems(self) -> list[str]:
        found = []
        if self.figures_drawn < self.figures:
            found.append(f"{self.figures - self.figures_drawn} of {self.figures} plotly figures did not draw")
        if self.math_typeset < self.math:
            found.append(f"{self.math - self.math_typeset} of {self.math} math elements were not typeset")
        found += [f"console error: {e}" for e in self.console_errors]
        found += [f"request left the machine: {u}" for u in self.external_requests]
        found += [f"request failed: {u}" for u in self.failed_requests]
        for view, probs in self.view_problems.items():
            found += [f"{p} [{view}]" for p in probs]
        found += self.figure_problems()
        return found


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output readable
        pass


def _serve(root: Path):
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
        "--disable-sync", "--disable-extensions", "--no-first-run", "--metrics-recording-only",
        "--disable-domain-reliability", "--disable-client-side-phishing-detection",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        # The network is off: every host but this machine fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--window-size=1280,900",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


_WAIT_JS = """
const done = arguments[arguments.length - 1];
const start = Date.now();
function ready() {
  const figs = document.querySelectorAll('.rs-figure').length;
  const drawn = document.querySelectorAll('.rs-figure .js-plotly-plot .main-svg').length;
  const mj = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
  return {figs: figs, drawn: drawn, mj: mj};
}
(async function loop() {
  while (Date.now() - start < 20000) {
    const r = ready();
    if (r.drawn >= r.figs && document.readyState === 'complete') {
      if (r.mj) { try { await r.mj; } catch (e) {} }
      break;
    }
    await new Promise(res => setTimeout(res, 200));
  }
  done(true);
})();
"""

_COUNT_JS = """
const figs = document.querySelectorAll('.rs-figure');
let drawn = 0;
figs.forEach(f => { if (f.querySelector('.js-plotly-plot .main-svg')) drawn += 1; });
const math = document.querySelectorAll('.math');
let typeset = 0;
math.forEach(m => { if (m.querySelector('mjx-container') || m.tagName === 'MJX-CONTAINER') typeset += 1; });
return {figures: figs.length, drawn: drawn, math: math.length, typeset: typeset,
        height: Math.min(document.documentElement.scrollHeight, 30000)};
"""


def _set_view(driver, width: int, height: int) -> None:
    driver.set_window_size(width, height)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def _set_theme(driver, theme: str) -> None:
    driver.execute_script("document.documentElement.dataset.mode = arguments[0];"
                          "document.documentElement.dataset.theme = arguments[0];", theme)
    driver.execute_async_script(_SETTLED_JS)


def check_figures(driver, view: str, rep: "PageReport", shots: Path | None = None) -> None:
    """Run the figure and page checks in the loaded page; add what they find to ``rep``."""
    result = driver.execute_script(FIGURE_JS)
    rep.view_problems[view] = result["page"]
    for f in result["figures"]:
        entry = rep.figure_checks.setdefault(f["index"] + 1, {"title": f["title"] or "", "problems": {}})
        entry["problems"][view] = f["problems"]
    if shots:
        stem = rep.page.replace("/", "__").replace(".html", "")
        for i, el in enumerate(driver.find_elements("css selector", ".rs-figure .js-plotly-plot")):
            try:
                driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
                el.screenshot(str(shots / f"{stem}__fig{i + 1}__{view.replace(' ', '-')}.png"))
            except Exception:  # a figure wider than the window still gets its page screenshot
                pass


def check_sidebar(driver, base: str, page: str) -> list[str]:
    """Click the visible ☰ toggle: the sidebar must change state, open, and offer a clickable chapter link."""
    from selenium.webdriver.common.by import By

    toggles = [b for b in driver.find_elements(By.CSS_SELECTOR, ".primary-toggle") if b.is_displayed()]
    if not toggles:
        return ["no visible sidebar toggle (☰)"]
    before = driver.execute_script(SIDEBAR_STATE_JS)
    toggles[0].click()
    time.sleep(0.5)
    after = driver.execute_script(SIDEBAR_STATE_JS)
    if after["open"] == before["open"]:
        return [f"the sidebar toggle does nothing (sidebar stays {'open' if before['open'] else 'closed'})"]
    if not after["open"]:  # it was open (desktop): closing worked, now it must open again
        toggles[0].click()
        time.sleep(0.5)
        after = driver.execute_script(SIDEBAR_STATE_JS)
        if not after["open"]:
            return ["the sidebar toggle closes the sidebar but does not open it again"]
    link = after["link"]
    if not link:
        return ["the open sidebar shows no chapter link"]
    if not link["clickable"]:
        return [f"the sidebar's chapter link {link['text']!r} is covered by something else"]
    driver.execute_script("document.elementFromPoint(arguments[0], arguments[1]).click();", link["x"], link["y"])
    time.sleep(0.8)
    if driver.current_url.split("#")[0] != link["href"].split("#")[0]:
        return [f"clicking the sidebar's chapter link {link['text']!r} did not open {link['href']}"]
    return []


def check_site(html_root: str | Path, pages: list[str] | None = None, screenshot_dir: str | Path | None = None,
               probes: dict | None = None, views=VIEWS, themes=THEMES, sidebar: bool = True):
    """Check every page (relative paths under ``html_root``); returns PageReports.

    ``probes`` maps a page to JavaScript run after it loaded (after the checks);
    its return value is kept in the report's ``probe``.
    """
    root = Path(html_root)
    if not (root / "index.html").exists():
        raise FileNotFoundError(f"No built book at {root}: run `make book` first.")
    pages = pages or sorted(str(p.relative_to(root)) for p in root.rglob("*.html")
                            if p.name not in ("genindex.html", "search.html") and "_static" not in p.parts)
    shots = Path(screenshot_dir) if screenshot_dir else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    server = _serve(root)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    driver = _driver()
    reports = []
    try:
        driver.set_script_timeout(30)
        # every page is weighed as a first visit: nothing comes from the browser's cache
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        for page in pages:
            driver.get_log("performance")  # drop earlier entries
            driver.get_log("browser")
            _set_view(driver, *views[0])
            driver.get(base + page)
            driver.execute_async_script(_WAIT_JS)
            time.sleep(0.3)
            counts = driver.execute_script(_COUNT_JS)
            rep = PageReport(page=page, figures=counts["figures"], figures_drawn=counts["drawn"],
                             math=counts["math"], math_typeset=counts["typeset"],
                             html_bytes=(root / page).stat().st_size)
            for entry in driver.get_log("browser"):
                if entry.get("level") == "SEVERE":
                    rep.console_errors.append(entry.get("message", "")[:300])
            for entry in driver.get_log("performance"):
                msg = json.loads(entry["message"])["message"]
                params = msg.get("params", {})
                if msg.get("method") == "Network.requestWillBeSent":
                    url = params.get("request", {}).get("url", "")
                    if not url.startswith((base, "data:", "blob:", "about:")):
                        rep.external_requests.append(url)
                    else:
                        rep.requests += 1
                elif msg.get("method") == "Network.loadingFinished":
                    rep.transferred_bytes += int(params.get("encodedDataLength", 0))
                elif msg.get("method") == "Network.loadingFailed":
                    if not params.get("canceled"):
                        rep.failed_requests.append(params.get("errorText", "") + " " + params.get("requestId", ""))
            if probes and page in probes:
                rep.probe = driver.execute_script(probes[page])
            for n, (width, height) in enumerate(views):
                if n:
                    _set_view(driver, width, height)
                    driver.get(base + page)
                    driver.execute_async_script(_WAIT_JS)
                for theme in themes:
                    _set_theme(driver, theme)
                    check_figures(driver, f"{width}x{height} {theme}", rep, shots)
                if sidebar:
                    _set_theme(driver, themes[0])
                    driver.execute_script("window.scrollTo(0, 0);")
                    rep.view_problems[f"{width}x{height} sidebar"] = check_sidebar(driver, base, page)
                if n == 0 and shots:
                    driver.get(base + page)
                    driver.execute_async_script(_WAIT_JS)
                    out = shots / (page.replace("/", "__").replace(".html", ".png"))
                    for tall in (int(counts["height"]) + 100, height):  # a very tall page may time out: then one screen
                        try:
                            _set_view(driver, width, min(tall, 16000))
                            time.sleep(0.5)
                            driver.save_screenshot(str(out))
                            rep.screenshot = str(out)
                            break
                        except Exception as exc:  # selenium's renderer timeout
                            rep.view_problems.setdefault("screenshot", []).append(
                                f"full-page screenshot failed at {tall} px: {type(exc).__name__}")
                    rep.view_problems.pop("screenshot", None) if rep.screenshot else None
            reports.append(rep)
    finally:
        driver.quit()
        server.shutdown()
    return reports


def format_reports(reports) -> str:
    lines = [f"{'page':38s} {'drawn':>7s} {'pass':>7s} {'math':>9s} {'HTML KiB':>9s} {'loaded KiB':>11s} "
             f"{'requests':>8s}  problems"]
    for r in reports:
        lines.append(f"{r.page:38s} {r.figures_drawn:>3d}/{r.figures:<3d} {r.figures_passing:>3d}/{r.figures:<3d} "
                     f"{r.math_typeset:>4d}/{r.math:<4d} {r.html_bytes / 1024:9.0f} {r.transferred_bytes / 1024:11.0f} "
                     f"{r.requests:>8d}  {len(r.problems)}")
    total = sum(r.figures for r in reports)
    lines.append(f"figures passing every check: {sum(r.figures_passing for r in reports)} of {total}")
    return "\n".join(lines)


if __name__ == "__main__":
    reps = check_site(sys.argv[1], screenshot_dir=sys.argv[2] if len(sys.argv) > 2 else None)
    print(format_reports(reps))
    for r in reps:
        for p in r.problems:
            print(f"{r.page}: {p}")
