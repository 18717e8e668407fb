"""Each page check in tests/pagecheck.py fails on a page built to have its defect.

Small pages are written to a temporary folder with the book's own plotly.js,
residual.js and residual.css, served locally and checked in headless Chromium,
once, at both widths and in both themes. Every defect page must be reported
with its defect; the control page (the same figures through helpers.show's
layout rules, with the book's script and style) must pass every check.
"""
import shutil

import plotly.graph_objects as go
import pytest

import pagecheck
from conftest import ROOT
from helpers.plotting import _book_bundle, book_layout

pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                reason="needs Debian's chromium and chromium-driver (make test installs them)")

LONG = "The strongest K-composition is L0H3 → L1H3: 1.9× the random baseline, every depth before the output"

# A stand-in for the theme: two ☰ buttons, only the first (hidden) one wired, as in sphinx-book-theme.
THEME_SIDEBAR = """
<button class="sidebar-toggle primary-toggle" style="display:none">☰</button>
<button class="sidebar-toggle primary-toggle" style="font-size:20px">☰</button>
<div id="pst-primary-sidebar" style="position:fixed;left:-300px;width:250px;visibility:hidden"></div>
<dialog id="pst-primary-sidebar-modal"></dialog>
<script>
document.querySelector('.primary-toggle').addEventListener('click', function () {
  var d = document.getElementById('pst-primary-sidebar-modal');
  d.innerHTML = '<nav><a class="reference internal" href="chapters/next.html">Next chapter</a></nav>';
  d.showModal();
});
</script>
"""


def _page(body: str, book_assets: bool = False, theme: str = "light") -> str:
    assets = ('<link rel="stylesheet" href="../residual.css"><script src="../residual.js"></script>'
              if book_assets else "")
    return (f'<!doctype html><html data-theme="{theme}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<script src="../plotly.min.js"></script>{assets}'
            # the theme's colour variables, as pydata-sphinx-theme defines them
            '<style>html{--pst-color-background:#fff;--pst-color-text-base:#222832}'
            'html[data-theme=dark]{--pst-color-background:#14181e;--pst-color-text-base:#ced6dd}'
            'body{margin:16px;font-family:sans-serif;background:var(--pst-color-background);color:var(--pst-color-text-base)}'
            f'</style></head><body><main class="bd-content">{body}</main></body></html>')


def _figure(fig, fixed: bool) -> str:
    if fixed:
        fig = book_layout(fig)
    html = _book_bundle(fig, None)["text/html"]
    return f'<div class="cell_output"><div class="output text_html">{html}</div></div>'


def _bar(**layout):
    return go.Figure(go.Bar(x=["a", "b", "c"], y=[1, 3, 2]), layout=layout)


def _menus(active=0, label_color=None, title_args=False):
    buttons = [{"label": lab, "method": "update",
                "args": [{}, {"title.text": f"View {lab}"} if title_args else {}]} for lab in ("Q", "K")]
    menu = {"type": "buttons", "direction": "right", "active": active, "x": 0, "y": 1.15, "buttons": buttons}
    if label_color:
        menu["font"] = {"color": label_color}
    return menu


def _defect_figures():
    """name -> (figure, expected problem text)."""
    overlap = _bar(title="Two notes")
    overlap.add_annotation(text="first note here", x="b", y=2, showarrow=False)
    overlap.add_annotation(text="second note here", x="b", y=2, showarrow=False)
    ticks = go.Figure(go.Bar(x=[f"a long category name {i}" for i in range(8)], y=list(range(8))),
                      layout={"title": "Ticks", "xaxis": {"tickangle": 0}})
    return {
        "clipped_title": (_bar(title=LONG), "title is cut off"),
        "overlap": (overlap, "overlaps annotation"),
        "modebar": (_bar(title={"text": "Right", "x": 1, "xanchor": "right", "xref": "container", "y": 1,
                                "yref": "container", "yanchor": "top", "pad": {"t": 4, "r": 4}}),
                    "toolbar (modebar) covers the title"),
        "small_font": (_bar(title="Small", annotations=[{"text": "tiny", "font": {"size": 6}, "x": "a", "y": 1}]),
                       "below 9 px"),
        "contrast": (_bar(title="Menus", meta={"view": "Q"}, updatemenus=[_menus(label_color="#f4faff")]),
                     "has contrast"),
        "no_view": (_bar(title="Menus", updatemenus=[_menus()]), "does not declare its opening view"),
        "wrong_view": (_bar(title="Menus", meta={"view": "K"}, updatemenus=[_menus(active=0)]),
                       'not on its declared view "K"'),
        "title_vs_control": (_bar(title="View K", meta={"view": "Q"}, updatemenus=[_menus(title_args=True)]),
                             'active control "Q" sets "View Q"'),
        "no_colour_bar": (go.Figure(go.Heatmap(z=[[1, 2], [3, 4]], showscale=False), layout={"title": "Heat"}),
                          "neither a colour bar"),
        "tick_overlap": (ticks, "overlap"),
        "faint_text": (_bar(title="Faint", annotations=[{"text": "pale note", "x": "a", "y": 1, "showarrow": False,
                                                         "font": {"color": "#dddddd"}}]),
                       'text "pale note" has contrast'),
    }


PAGE_DEFECTS = {
    "broken_char": ("<p>caf\ufffd au lait</p>", "broken character"),
    "raw_table": ("<p>| metric | value | | --- | --- | | loss | 0.2 |</p>", "unrendered Markdown table"),
    "bare_icon": ('<p><i class="fa-solid fa-bars"></i> menu</p>', "icon(s) not drawn"),
    "sideways": ('<div style="width:2000px">wide</div>', "scrolls sideways"),
    "sidebar_dead": (THEME_SIDEBAR, "the sidebar toggle does nothing"),
}


@pytest.fixture(scope="module")
def fixture_reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    for name in ("plotly.min.js", "residual.js", "residual.css"):
        shutil.copy(ROOT / "_static" / name, root / name)
    (root / "index.html").write_text(_page("<p>index</p>"))
    (root / "chapters").mkdir()
    (root / "chapters" / "next.html").write_text(_page("<p>next</p>"))
    pages = {}
    for name, (fig, _) in _defect_figures().items():
        pages[name] = _page(_figure(fig, fixed=False))
    pages["dark_frame"] = _page('<div class="cell_output"><div class="output text_html" style="background:#ced6dd">'
                                + _book_bundle(_bar(title="Dark"), None)["text/html"] + "</div></div>", theme="dark")
    for name, (body, _) in PAGE_DEFECTS.items():
        pages[name] = _page(body)
    # The control: the figures that can be fixed by layout rules, through book_layout, with the book's assets.
    fixable = ["clipped_title", "modebar", "small_font", "contrast", "no_colour_bar"]  # small_font has a note
    figs = _defect_figures()
    body = THEME_SIDEBAR + "".join(_figure(figs[n][0], fixed=True) for n in fixable)
    # a legend placed under the x axis and subplot titles: residual.js gives each its own band
    legend = go.Figure([go.Scatter(x=[0, 1, 2], y=[i, i + 1, i], name=f"a long series name {i}") for i in range(5)],
                       layout={"title": "Legends move to a band of their own", "xaxis_title": "training step",
                               "legend": {"orientation": "h", "y": -0.2, "yanchor": "top"}})
    from plotly.subplots import make_subplots

    panels = make_subplots(rows=1, cols=2, subplot_titles=("length of each stream state at every position",
                                                           "what the last position writes"))
    panels.add_trace(go.Bar(x=["a", "b"], y=[1, 2]), 1, 1)
    panels.add_trace(go.Bar(x=["a", "b"], y=[2, 1]), 1, 2)
    panels.update_layout(title="Two panels with long titles", showlegend=False)
    body += _figure(legend, fixed=True) + _figure(panels, fixed=True)
    good = _bar(title="Menus", meta={"view": "K"}, updatemenus=[_menus(active=1, title_args=True)])
    good.update_layout(title="View K")
    body += _figure(good, fixed=True)
    pages["control"] = _page(body, book_assets=True)
    for name, html in pages.items():
        (root / "chapters" / f"{name}.html").write_text(html, encoding="utf-8")
    reports = pagecheck.check_site(root, pages=[f"chapters/{n}.html" for n in pages])
    return {r.page.split("/")[1][:-5]: r for r in reports}


@pytest.mark.parametrize("name", list(_defect_figures()))
def test_figure_check_catches(fixture_reports, name):
    expected = _defect_figures()[name][1]
    problems = fixture_reports[name].figure_problems()
    assert any(expected in p for p in problems), f"{name}: expected {expected!r} in {problems}"


@pytest.mark.parametrize("name", list(PAGE_DEFECTS))
def test_page_check_catches(fixture_reports, name):
    expected = PAGE_DEFECTS[name][1]
    problems = fixture_reports[name].problems
    assert any(expected in p for p in problems), f"{name}: expected {expected!r} in {problems}"


def test_dark_mode_check_catches_a_light_figure_and_frame(fixture_reports):
    problems = fixture_reports["dark_frame"].figure_problems()
    assert any("does not follow the dark page" in p and "dark]" in p for p in problems), problems
    assert any("the frame (output text_html) has background" in p for p in problems), problems


def test_the_book_rules_pass_every_check(fixture_reports):
    rep = fixture_reports["control"]
    assert rep.figures == rep.figures_drawn == 8
    assert rep.problems == [], "\n".join(rep.problems)
    assert rep.figures_passing == 8
    assert set(rep.view_problems) == {"1280x900 light", "1280x900 dark", "390x844 light", "390x844 dark",
                                      "1280x900 sidebar", "390x844 sidebar"}
