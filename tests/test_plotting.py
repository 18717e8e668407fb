"""The book's figure rules (helpers.plotting), token labels and tables (helpers.book.show_table)."""
import re

import plotly.graph_objects as go
import pytest

import helpers
from helpers import plotting
from helpers.book import show_table, table_html
from helpers.plotting import MIN_FONT_PX, MODEBAR_BAND_PX, book_layout, token_label, token_labels, wrap_title


# ------------------------------------------------------------------ token labels
@pytest.mark.parametrize("token, label", [
    ("Ġthe", " the"),            # GPT-2's stand-in for a leading space
    ("Ċ", "⏎"),                  # a newline
    ("ĠĠ", "␣␣"),                # only spaces: one visible mark per space
    ("âĢ", "\\xe2\\x80"),        # two bytes of a three-byte character
    ("âĢĶ", "—"),                 # the whole character
    (b"\xe2\x80", "\\xe2\\x80"),
    ("caf\ufffd", "caf\\x??"),   # already decoded: the byte is lost, but no "�"
    ("Paris", "Paris"),
    (" Paris", " Paris"),
    ("é", "é"),                  # decoded text is not mistaken for bytes
    ("", "∅"),
    ("a\tb", "a⇥b"),
])
def test_token_label_is_readable(token, label):
    assert token_label(token) == label
    assert "\ufffd" not in token_label(token)


def test_token_label_rejects_what_it_cannot_read():
    with pytest.raises(TypeError, match="str or bytes"):
        token_label(42)
    with pytest.raises(ValueError, match="not a byte-level token"):
        token_label("Ġ€", byte_level=True)


def test_token_labels_show_partial_characters_as_bytes(tmp_path):
    from conftest import make_tokenizer

    tok = make_tokenizer(tmp_path)
    byte_id = tok.convert_tokens_to_ids("â")  # byte 0xE2 on its own, the start of a 3-byte character
    ids = [tok.convert_tokens_to_ids("The"), byte_id, tok.convert_tokens_to_ids("The")]
    assert "\ufffd" in tok.decode([byte_id])  # what decoding each token alone would print
    assert token_labels(tok, ids) == ["The", "\\xe2", "The"]
    assert token_labels(tok, ids, unique=True) == ["The ·0", "\\xe2", "The ·2"]
    with pytest.raises(TypeError, match="convert_ids_to_tokens"):
        token_labels(object(), ids)
    with pytest.raises(ValueError, match="1-D"):
        token_labels(tok, [ids])


# ------------------------------------------------------------------ titles
LONG = "The tuned lens is closer to the final distribution at every depth before the output (held-out text)"


def _lines(text):
    return re.split(r"<br\s*/?>", text)


@pytest.mark.parametrize("width", [330, 652])
def test_wrap_title_keeps_every_line_in_budget(width):
    wrapped = wrap_title(LONG, width)
    assert " ".join(_lines(wrapped)) == LONG  # nothing lost
    assert all(plotting._visible_len(line) * 16 <= width for line in _lines(wrapped))
    assert wrap_title(wrapped, width) == wrapped  # wrapping again changes nothing
    assert len(_lines(wrap_title(LONG, 330))) > len(_lines(wrap_title(LONG, 652)))


def test_wrap_title_keeps_the_authors_breaks_and_validates():
    assert wrap_title("A<br>B", 600) == "A<br>B"
    with pytest.raises(TypeError):
        wrap_title(None, 100)
    with pytest.raises(ValueError):
        wrap_title("x", 0)


# ------------------------------------------------------------------ book_layout
def test_book_layout_makes_room_for_toolbar_title_and_menus():
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    fig.update_layout(title=LONG, margin={"t": 20},
                      updatemenus=[{"type": "buttons", "y": 1.2, "buttons": [{"label": "one", "method": "restyle", "args": []}]}])
    out = book_layout(fig)
    lines = len(_lines(out.layout.title.text))
    assert lines >= 2
    assert out.layout.title.pad.t == MODEBAR_BAND_PX  # the toolbar's band is above the title
    assert out.layout.margin.t >= MODEBAR_BAND_PX + lines * 16 + plotting.MENU_BAND_PX
    assert out.layout.updatemenus[0].y == 1 and out.layout.updatemenus[0].yanchor == "bottom"
    assert out.layout.meta["title"] == LONG
    assert fig.layout.margin.t == 20  # the caller's figure is not changed


def test_book_layout_floors_fonts_and_keeps_colour_bars():
    fig = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]], x=["a", "b"], y=["c", "d"], showscale=False))
    fig.add_annotation(text="tiny", font={"size": 4}, x=0, y=0)
    fig.update_layout(font={"size": 6}, xaxis={"tickfont": {"size": 7}})
    out = book_layout(fig)
    assert out.layout.annotations[0].font.size == MIN_FONT_PX
    assert out.layout.font.size == MIN_FONT_PX and out.layout.xaxis.tickfont.size == MIN_FONT_PX
    assert out.data[0].showscale is True  # no numbers in the cells: the colour bar stays
    assert out.layout.meta["min_width"] >= 170


def test_book_layout_checks_the_declared_opening_view():
    def menu_fig(active, view):
        fig = go.Figure(go.Bar(x=[1], y=[1]))
        fig.update_layout(meta={"view": view}, updatemenus=[{"type": "buttons", "active": active, "buttons": [
            {"label": "Q", "method": "restyle", "args": []}, {"label": "K", "method": "restyle", "args": []}]}])
        return fig

    assert book_layout(menu_fig(1, "K")).layout.meta["view"] == "K"
    with pytest.raises(ValueError, match="not the opening state"):
        book_layout(menu_fig(0, "K"))
    with pytest.raises(ValueError, match="no menu or slider"):
        book_layout(go.Figure(layout={"meta": {"view": "K"}}))
    with pytest.raises(ValueError, match="must be a dict"):
        book_layout(go.Figure(layout={"meta": ["K"]}))


def test_book_layout_wraps_titles_that_controls_switch_to():
    steps = [{"label": str(i), "method": "update", "args": [{}, {"title.text": LONG}]} for i in range(2)]
    out = book_layout(go.Figure(go.Bar(x=[1], y=[1]), layout={"sliders": [{"steps": steps}], "title": "short"}))
    assert all("<br" in s.args[1]["title.text"] for s in out.layout.sliders[0].steps)
    assert out.layout.margin.t >= MODEBAR_BAND_PX + 2 * 16  # room for the longest title it can show


def test_show_uses_the_book_bundle(monkeypatch):
    shown = []
    monkeypatch.setenv("RS_BOOK_BUILD", "1")
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    helpers.show(go.Figure(go.Bar(x=[1], y=[1]), layout={"title": LONG}))
    html = shown[0]["text/html"]
    assert '"displayModeBar": "hover"' in html and "plotly.min.js" not in html
    assert "<br >" in html.replace("\\u003c", "<").replace("\\u003e", ">")  # the title was wrapped


# ------------------------------------------------------------------ tables
def test_table_html_is_a_real_table_with_math_and_code():
    html = table_html([("start, $h_0$", "`a|b`", 1234, 0.123456, True)], ["stage", "code", "n", "x", "ok"],
                      caption="The <stream>")
    assert html.count("<td") == 5 and html.count("<th scope") == 5
    assert r'<span class="math notranslate nohighlight">\(h_0\)</span>' in html
    assert "<code>a|b</code>" in html and "1,234" in html and "0.1235" in html and "✓" in html
    assert "&lt;stream&gt;" in html and "| ---" not in html


@pytest.mark.parametrize("rows, columns, err", [
    ([("a",)], ["x", "y"], ValueError),   # wrong number of cells
    ([("a", "b")], [], ValueError),       # no columns
    ("ab", ["x"], TypeError),             # rows as a string
    ([(object(),)], ["x"], TypeError),    # a cell that is not str/number/bool
    ([("a",)], "x", ValueError),          # columns as a string
])
def test_table_html_validates(rows, columns, err):
    with pytest.raises(err):
        table_html(rows, columns)


def test_show_table_displays_html_and_markdown(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    assert helpers.show_table is show_table
    show_table([("a", 1)], ["name", "count"])
    assert shown[0]["text/html"].startswith('<div class="rs-table-wrap">')
    assert shown[0]["text/markdown"].splitlines()[1] == "| --- | --- |"
