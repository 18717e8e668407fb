"""helpers.claims (findings, their nulls, checks of the code) and the build's claims collector.

Fast: no model, no book build. The book build's own claims are checked in
tests/test_book.py with the same functions (falsifiability_problems,
reference_problems) on _build/claims.json.
"""
import copy
import importlib.util
import json

import pytest

import helpers
from conftest import ROOT
from helpers import claims as C
from helpers.claims import (ClaimError, Comparison, Null, above, below, between, exceeds, falls_below,
                            falsifiability_problems, ratio_above, reference_problems, within)

WHY = "the control's spread over 20 prompts is 0.05"


@pytest.fixture(autouse=True)
def _fresh_context():
    """Each test starts with no chapter context and leaves RECORDS as it found them."""
    saved_records, saved_ctx = list(C.RECORDS), dict(C._CONTEXT)
    C.RECORDS.clear()
    C._CONTEXT.update(chapter=None, model=None)
    yield
    C.RECORDS[:] = saved_records
    C._CONTEXT.clear()
    C._CONTEXT.update(saved_ctx)


def bib_keys():
    from pybtex.database import parse_file

    return set(parse_file(str(ROOT / "references.bib")).entries.keys())


def finding(id="ch9.effect", value=0.8, test=None, null=None, **kw):
    kw.setdefault("ref", "meng2022locating")
    kw.setdefault("measured_on", "rs-gpt2-4l")
    return helpers.claim(id, "The effect restores most of the gap.", value,
                         test or exceeds(0.5, why=WHY), null or Null("layer-3 control site", 0.05, "control"), **kw)


# ----------------------------------------------------------------------------- comparisons

@pytest.mark.parametrize("test, null, yes, no", [
    (above(1.0, why=WHY), None, 1.01, 1.0),
    (below(1.0, why=WHY), None, 0.99, 1.0),
    (between(0.2, 0.4, why=WHY), None, 0.4, 0.41),
    (between(0.2, 0.4, why=WHY), None, 0.2, 0.19),
    (within(3.0, 0.5, why=WHY), None, 2.5, 2.49),
    (exceeds(0.5, why=WHY), 0.1, 0.6, 0.59),
    (falls_below(0.5, why=WHY), 1.0, 0.5, 0.51),
    (ratio_above(3.0, why=WHY), 0.25, 0.75, 0.74),
])
def test_each_comparison_holds_on_its_side_of_the_boundary_only(test, null, yes, no):
    assert test.holds(yes, null)
    assert not test.holds(no, null)
    assert test.margin(yes, null) >= 0 >= test.margin(no, null)  # (0 at the boundary of a strict bound)


@pytest.mark.parametrize("test, value, null, margin", [
    (above(1.0, why=WHY), 1.25, None, 0.25),
    (below(1.0, why=WHY), 0.25, None, 0.75),
    (between(0.0, 1.0, why=WHY), 0.75, None, 0.25),
    (within(3.0, 0.5, why=WHY), 3.25, None, 0.25),
    (exceeds(0.5, why=WHY), 1.0, 0.25, 0.25),
    (falls_below(0.5, why=WHY), 0.25, 1.0, 0.25),
    (ratio_above(2.0, why=WHY), 1.0, 0.25, 0.5),
])
def test_margin_is_the_distance_inside_the_boundary(test, value, null, margin):
    assert test.margin(value, null) == pytest.approx(margin)


@pytest.mark.parametrize("test, text", [
    (above(0.5, why=WHY), "> 0.5"),
    (below(2, why=WHY), "< 2"),
    (between(0.1, 0.3, why=WHY), "in [0.1, 0.3]"),
    (within(1.0, 0.05, why=WHY), "within 0.05 of 1"),
    (exceeds(0.5, why=WHY), "exceeds the null by ≥ 0.5"),
    (falls_below(0.25, why=WHY), "below the null by ≥ 0.25"),
    (ratio_above(3, why=WHY), "≥ 3 × the null"),
])
def test_describe_says_what_passes(test, text):
    assert test.describe() == text


@pytest.mark.parametrize("test", [above(0.5, why=WHY), below(2, why=WHY), between(0.1, 0.3, why=WHY),
                                  within(1.0, 0.05, why=WHY), exceeds(0.5, why=WHY),
                                  falls_below(0.25, why=WHY), ratio_above(3, why=WHY)])
def test_comparison_round_trips_through_a_dict_and_json(test):
    back = Comparison.from_dict(json.loads(json.dumps(test.to_dict())))
    assert back == test
    assert back.why == WHY


def test_comparisons_that_need_a_null_refuse_to_run_without_one():
    with pytest.raises(ClaimError, match="needs the null"):
        exceeds(0.5, why=WHY).holds(1.0, None)
    with pytest.raises(ClaimError, match="positive null"):
        ratio_above(2, why=WHY).holds(1.0, 0.0)


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("make, message", [
    (lambda: above(0.5, why=""), "give why="),
    (lambda: above(0.5, why="tuned"), "give why="),
    (lambda: above(float("nan"), why=WHY), "must be finite"),
    (lambda: below(float("inf"), why=WHY), "must be finite"),
    (lambda: above("0.5", why=WHY), "must be a real number"),
    (lambda: between(0.4, 0.2, why=WHY), "lo must not exceed hi"),
    (lambda: within(1.0, -0.1, why=WHY), r"within\(tol=...\) must be ≥ 0"),
    (lambda: exceeds(-0.1, why=WHY), "must be > 0"),
    (lambda: exceeds(0, why=WHY), "null itself would pass"),
    (lambda: falls_below(0.0, why=WHY), "null itself would pass"),
    (lambda: ratio_above(1.0, why=WHY), "must be > 1"),
    (lambda: ratio_above(0.5, why=WHY), "must be > 1"),
    (lambda: Null("control", 0.1, "random"), "must be one of"),
    (lambda: Null("", 0.1, "control"), "say in words"),
    (lambda: Null("control", float("nan"), "control"), "must be finite"),
])
def test_malformed_comparisons_and_nulls_are_refused_with_a_message(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize("kw, error, message", [
    (dict(id="ch4"), ValueError, "claim ids look like"),
    (dict(id="Ch4.fact-site"), ValueError, "claim ids look like"),
    (dict(id="ch4.fact site"), ValueError, "claim ids look like"),
    (dict(value=float("nan")), ValueError, "must be finite"),
    (dict(value=float("-inf")), ValueError, "must be finite"),
    (dict(value=True), TypeError, "must be a real number"),
    (dict(value=[1.0, 2.0]), TypeError, "must be a real number"),
    (dict(ref=""), ValueError, "bibliography keys"),
    (dict(ref="not a key"), ValueError, "bibliography keys"),
    (dict(test=0.5), TypeError, "must be a comparison"),
    (dict(null=0.05), TypeError, r"must be a Null"),
])
def test_malformed_claims_are_refused_with_a_message(kw, error, message):
    with pytest.raises(error, match=message):
        if "test" in kw or "null" in kw:
            args = dict(test=exceeds(0.5, why=WHY), null=Null("control site", 0.05, "control"))
            args.update(kw)
            helpers.claim("ch9.effect", "The effect restores most of the gap.", 0.8, args["test"], args["null"],
                          ref="meng2022locating", measured_on="rs-gpt2-4l")
        else:
            finding(**kw)
    assert C.RECORDS == []


def test_a_claim_needs_a_statement():
    with pytest.raises(ValueError, match="statement must be the sentence"):
        helpers.claim("ch9.effect", "yes", 0.8, exceeds(0.5, why=WHY), Null("control", 0.05, "control"),
                      ref="meng2022locating", measured_on=None)


def test_begin_chapter_validates_its_arguments():
    with pytest.raises(ValueError, match="look like 'ch4'"):
        C.begin_chapter("Chapter 4")
    with pytest.raises(TypeError, match="model's name"):
        C.begin_chapter("ch4", model=object())


# ----------------------------------------------------------------------------- findings

def test_a_passing_finding_is_recorded_with_everything_the_claims_page_shows(capsys):
    C.begin_chapter("ch9", model="rs-gpt2-4l")
    rec = finding(where="Fig. 1")
    assert C.RECORDS == [rec]
    assert rec["kind"] == "finding" and rec["chapter"] == "ch9"
    assert rec["passed"] is True and rec["null_passes"] is False
    assert rec["null"] == {"what": "layer-3 control site", "value": 0.05, "kind": "control"}
    assert rec["margin"] == pytest.approx(0.8 - 0.05 - 0.5)
    assert rec["reference"] == ["meng2022locating"] and rec["where"] == "Fig. 1"
    assert rec["tolerance_why"] == WHY and rec["model"] == "rs-gpt2-4l"
    assert "✔ finding · ch9.effect" in capsys.readouterr().out


def test_a_claim_whose_null_passes_is_refused_as_not_evidence():
    C.begin_chapter("ch9", model="rs-gpt2-4l")
    # 0.8 > 0.3 holds, but so does the control's 0.4: the threshold does not separate effect from null.
    with pytest.raises(ClaimError, match="is not evidence: its null"):
        finding(test=above(0.3, why="a third of the gap"), null=Null("layer-3 control site", 0.4, "control"))
    assert C.RECORDS[-1]["null_passes"] is True


def test_a_failing_finding_raises_on_the_model_it_was_measured_on():
    C.begin_chapter("ch9", model="rs-gpt2-4l")
    with pytest.raises(ClaimError, match="failed on rs-gpt2-4l: measured 0.3"):
        finding(value=0.3)


def test_a_failing_finding_is_reported_not_raised_on_another_model(capsys):
    C.begin_chapter("ch9", model="gpt2")
    rec = finding(value=0.3)
    assert rec["passed"] is False and rec["model"] == "gpt2"
    out = capsys.readouterr().out
    assert "measured 0.3 on gpt2; on rs-gpt2-4l this holds with exceeds the null by ≥ 0.5" in out


def test_a_finding_about_the_chapters_own_toy_model_asserts_on_any_model():
    C.begin_chapter("ch9", model="gpt2")
    with pytest.raises(ClaimError, match="failed"):
        finding(value=0.3, measured_on=None)


def test_a_rerun_cell_replaces_its_record():
    C.begin_chapter("ch9", model="rs-gpt2-4l")
    finding(value=0.8)
    finding(value=0.9)
    assert [r["value"] for r in C.RECORDS] == [0.9]


def test_claim_glues_its_value(monkeypatch):
    glued = {}
    monkeypatch.setattr(helpers.book, "glue", lambda name, value, display=False: glued.setdefault(name, value))
    C.begin_chapter("ch9", model="rs-gpt2-4l")
    finding(glue="effect_size")
    assert glued == {"effect_size": 0.8}


# ----------------------------------------------------------------------------- checks of the code

def test_identity_passes_within_tolerance_and_is_labelled_a_check_of_the_code():
    rec = helpers.identity("ch9.sum", "The parts add up to the whole.", [1.0, 2.0], [1.0, 2.0 + 1e-7],
                           atol=1e-5, why="float32 rounding over 4 terms")
    assert rec["kind"] == "identity" and rec["null"] is None and rec["passed"]
    assert rec["value"] == pytest.approx(1e-7)


def test_identity_raises_beyond_tolerance_on_every_model():
    C.begin_chapter("ch9", model="gpt2")
    with pytest.raises(ClaimError, match="identity ch9.sum failed: max difference 0.001"):
        helpers.identity("ch9.sum", "The parts add up to the whole.", [1.0, 2.0], [1.0, 2.001],
                         atol=1e-5, why="float32 rounding over 4 terms")
    with pytest.raises(ClaimError, match="shapes differ"):
        helpers.identity("ch9.sum", "The parts add up to the whole.", [1.0, 2.0], [1.0],
                         atol=1e-5, why="float32 rounding over 4 terms")
    with pytest.raises(ValueError, match="give why"):
        helpers.identity("ch9.sum", "The parts add up to the whole.", [1.0], [1.0], atol=1e-5, why="")


def test_identity_rtol_scales_with_the_expected_value():
    helpers.identity("ch9.big", "Large values agree to a relative tolerance.", [1000.0], [1000.5],
                     atol=0.0, rtol=1e-3, why="float32 relative rounding of large sums")
    with pytest.raises(ClaimError):
        helpers.identity("ch9.big", "Large values agree to a relative tolerance.", [1000.0], [1002.0],
                         atol=0.0, rtol=1e-3, why="float32 relative rounding of large sums")


# ----------------------------------------------------------------------------- falsifiability

def sound_records():
    """Records made by the real API, one of each comparison kind, plus a check of the code."""
    C.begin_chapter("ch9", model="rs-gpt2-4l")
    ctrl = Null("layer-3 control site", 0.05, "control")
    finding("ch9.exceeds", 0.8, exceeds(0.5, why=WHY), ctrl)
    finding("ch9.above", 0.8, above(0.5, why=WHY), ctrl)
    finding("ch9.below", 0.1, below(0.5, why=WHY), Null("random-init model", 2.0, "random-init"))
    finding("ch9.between", 0.3, between(0.2, 0.4, why=WHY), Null("chance", 0.5, "chance"))
    finding("ch9.within", 0.26, within(0.25, 0.02, why=WHY), Null("shuffled keys", 0.5, "shuffled"))
    finding("ch9.falls", 0.1, falls_below(0.5, why=WHY), Null("mean-ablated", 1.0, "ablation"))
    finding("ch9.ratio", 0.9, ratio_above(3, why=WHY), ctrl)
    helpers.identity("ch9.sum", "The parts add up to the whole.", [1.0], [1.0], atol=1e-6, why="exact in float64")
    return copy.deepcopy(C.RECORDS)


def test_falsifiability_passes_on_sound_records_in_both_forms():
    records = sound_records()
    assert len(records) == 8
    assert falsifiability_problems(records) == []
    rows = [{"id": r["id"], "kind": r["kind"], "record": r} for r in records]  # the shape of _build/claims.json
    assert falsifiability_problems(rows) == []


@pytest.mark.parametrize("target, weaken, reason", [
    # the threshold moved below the control site's 0.05
    ("ch9.above", lambda r: r.update(test=above(0.01, why=WHY).to_dict()), "not evidence"),
    # the interval widened to take in chance (0.5)
    ("ch9.between", lambda r: r.update(test=between(0.2, 0.6, why=WHY).to_dict()), "not evidence"),
    # the tolerance widened until the shuffled control (0.5) is within it
    ("ch9.within", lambda r: r.update(test=within(0.25, 0.3, why=WHY).to_dict()), "not evidence"),
    # the null replaced by one that also clears the bar
    ("ch9.below", lambda r: r["null"].update(value=0.05), "not evidence"),
    # the margin over the null, or the factor, edited in the stored record to what any null passes
    ("ch9.exceeds", lambda r: r["test"]["params"].update(by=0.0), "malformed"),
    ("ch9.falls", lambda r: r["test"]["params"].update(by=-0.1), "malformed"),
    ("ch9.ratio", lambda r: r["test"]["params"].update(factor=1.0), "malformed"),
])
def test_falsifiability_catches_a_comparison_weakened_to_accept_its_null(target, weaken, reason):
    records = sound_records()
    weakened = next(r for r in records if r["id"] == target)
    weaken(weakened)
    weakened["null_passes"] = False  # the stored flag lies; the check recomputes it
    problems = falsifiability_problems(records)
    assert len(problems) == 1 and problems[0].startswith(f"{target}: ") and reason in problems[0], problems


def test_falsifiability_reports_a_finding_without_a_null_or_with_a_broken_comparison():
    records = sound_records()
    no_null = copy.deepcopy(records[0]); no_null["id"] = "ch9.no-null"; no_null["null"] = None
    broken = copy.deepcopy(records[1]); broken["id"] = "ch9.broken"; broken["test"] = {"kind": "above"}
    problems = falsifiability_problems(records + [no_null, broken])
    assert problems == [
        "ch9.no-null: a finding without a null; give Null(what, value, kind).",
        f"ch9.broken: malformed comparison {broken['test']!r} ('params').",
    ]


def test_falsifiability_refuses_input_that_is_not_a_list_of_records():
    with pytest.raises(TypeError, match="list of claim records"):
        falsifiability_problems({"id": "ch9.x"})
    with pytest.raises(TypeError, match="must be a dict"):
        falsifiability_problems(["ch9.x"])


def test_reference_problems_checks_keys_against_the_bibliography():
    records = sound_records()
    keys = bib_keys()
    assert reference_problems(records, keys) == []
    bad = copy.deepcopy(records[0]); bad["reference"] = ["meng2022locatin"]
    none = copy.deepcopy(records[1]); none["reference"] = []
    assert reference_problems([bad, none], keys) == [
        "ch9.exceeds: reference 'meng2022locatin' is not in the bibliography.",
        "ch9.above: a finding without a reference key.",
    ]
    with pytest.raises(ValueError, match="bib_keys is empty"):
        reference_problems(records, [])


def test_the_bibliography_has_every_key_chapters_are_told_to_use():
    notes_keys = ["vaswani2017attention", "radford2019language", "elhage2021mathematical", "olsson2022context",
                  "elhage2022toy", "xiong2020layer", "wang2022deepnet", "geva2021transformer", "geva2022transformer",
                  "dai2022knowledge", "meng2022locating", "nostalgebraist2020logitlens", "belrose2023eliciting",
                  "bricken2023monosemanticity", "cunningham2023sparse", "veit2016residual", "dasgupta2003elementary",
                  "johnson1984extensions", "wang2022interpretability", "he2016deep", "ba2016layer",
                  "hendrycks2016gaussian", "zhang2023towards", "heimersheim2024use", "kaplan2020scaling",
                  "brown2020language", "touvron2023llama", "liu2020understanding", "geiger2021causal"]
    from pybtex.database import parse_file

    bib = parse_file(str(ROOT / "references.bib"))
    assert set(notes_keys) <= set(bib.entries), sorted(set(notes_keys) - set(bib.entries))
    for key, entry in bib.entries.items():
        assert entry.fields.get("title") and entry.fields.get("year", "").isdigit(), key
        assert entry.persons.get("author"), key
        assert entry.fields.get("url") or entry.fields.get("doi"), f"{key}: give a url or doi a reader can follow"


# ----------------------------------------------------------------------------- the build's collector

def load_extension():
    spec = importlib.util.spec_from_file_location("rs_book_under_test", ROOT / "_ext" / "rs_book.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def displayed_html(monkeypatch, make):
    """What a claim displays under its cell in Jupyter (the HTML the book build parses)."""
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    make()
    assert len(shown) == 1 and set(shown[0]) == {"text/plain", "text/html"}
    return shown[0]["text/html"]


def test_collector_reads_back_exactly_the_record_a_claim_displays(monkeypatch):
    from docutils import nodes

    ext = load_extension()
    C.begin_chapter("ch9", model="rs-gpt2-4l")
    tricky = 'A statement with <tags>, "quotes", & ampersands — and a non-ASCII dash.'
    html_f = displayed_html(monkeypatch, lambda: helpers.claim(
        "ch9.tricky", tricky, 0.8, exceeds(0.5, why=WHY), Null("control <site>", 0.05, "control"),
        ref=["meng2022locating", "geva2021transformer"], where="Fig. 1 & Tab. 2", measured_on="rs-gpt2-4l"))
    html_i = displayed_html(monkeypatch, lambda: helpers.identity(
        "ch9.sum", "The parts add up to the whole.", [1.0], [1.0], atol=1e-6, why="exact in float64"))
    doc = nodes.document(None, None)
    doc += nodes.raw("", html_f, format="html")
    doc += nodes.literal_block("", html_i)  # not raw HTML: ignored
    doc += nodes.raw("", "<div>" + html_i + "</div>", format="html")
    found = ext.claims_in_doctree(doc)
    assert [f["anchor"] for f in found] == ["claim-ch9-tricky", "claim-ch9-sum"]
    assert found[0]["record"] == json.loads(json.dumps(C.RECORDS[0]))
    assert found[0]["record"]["statement"] == tricky


class _FakeBuilder:
    format = "html"

    def get_relative_uri(self, src, dst):
        return dst + ".html"

    def get_target_uri(self, doc):
        return doc + ".html"


class _FakeTitle:
    def __init__(self, text):
        self.text = text

    def astext(self):
        return self.text


def fake_build(ext, records_by_doc, cited=("meng2022locating",)):
    """A stand-in for Sphinx's app and env, carrying the records and the bibliography the tables need."""
    from types import SimpleNamespace

    from pybtex.database import parse_file

    bib = parse_file(str(ROOT / "references.bib"))
    citations = [SimpleNamespace(key=k, citation_id=f"id-{k}", entry=bib.entries[k],
                                 bibliography_key=SimpleNamespace(docname="references"),
                                 formatted_entry=None) for k in cited]
    env = SimpleNamespace(titles={d: _FakeTitle(f"Chapter {d[-1]}") for d in records_by_doc},
                          get_domain=lambda name: SimpleNamespace(citations=citations))
    store = ext._claims_store(env)
    for doc, recs in records_by_doc.items():
        store["records"][doc] = [{"anchor": "claim-" + r["id"].replace(".", "-"), "record": r} for r in recs]
    return SimpleNamespace(builder=_FakeBuilder(), env=env, outdir="unused"), env


def test_claims_tables_link_each_claim_and_cite_its_reference():
    ext = load_extension()
    records = sound_records()
    C.begin_chapter("ch8", model="gpt2")
    other = finding("ch8.elsewhere", 0.3)  # did not hold on gpt2: shown, marked
    app, env = fake_build(ext, {"chapters/09_x": records, "chapters/08_y": [other]})
    summary = ext._claims_table_html(app, env, "claims", "summary")
    assert "8 findings</strong> and <strong>1 check of the code" in summary
    assert "did not hold on the model this build ran: ch8.elsewhere" in summary
    assert "tested against: control 4, ablation 1, chance 1, random-init 1, shuffled 1." in summary
    findings = ext._claims_table_html(app, env, "claims", "findings")
    assert findings.count('<tr class="rs-claim-row') == 8
    assert findings.index("Chapter y") < findings.index("Chapter x")  # grouped by page, in page order
    assert 'href="chapters/09_x.html#claim-ch9-ratio"' in findings
    assert 'href="references.html#id-meng2022locating"' in findings and ">Meng et al., 2022</a>" in findings
    assert "✘ not reproduced on gpt2" in findings and "on rs-gpt2-4l (this build ran gpt2)" in findings
    assert findings.count("<th>Null</th>") == 2 and "layer-3 control site = " in findings
    assert "margin +0.25" in findings  # 0.8 − 0.05 − 0.5
    checks = ext._claims_table_html(app, env, "claims", "identities")
    assert checks.count('<tr class="rs-claim-row') == 1 and "check of the code" in checks
    rows = ext.claims_json(app, env)
    assert [r["id"] for r in rows][:1] == ["ch8.elsewhere"] and len(rows) == 9
    for r in rows:
        assert {"id", "chapter", "statement", "value", "null", "passed", "reference", "kind", "url", "record"} <= set(r)
    assert falsifiability_problems(rows) == []


def test_claims_tables_mark_a_finding_whose_null_passes():
    ext = load_extension()
    records = sound_records()
    records[0]["null_passes"] = True
    app, env = fake_build(ext, {"chapters/09_x": records})
    assert "1 finding has a null that also passes: ch9.exceeds" in ext._claims_table_html(app, env, "c", "summary")
    assert "✘ its null passes too" in ext._claims_table_html(app, env, "c", "findings")


def test_collector_names_a_claim_whose_output_was_removed_from_the_page(tmp_path, monkeypatch):
    from types import SimpleNamespace

    ext = load_extension()
    C.begin_chapter("ch9", model="rs-gpt2-4l")
    shown = displayed_html(monkeypatch, lambda: finding("ch9.shown"))
    hidden = displayed_html(monkeypatch, lambda: finding("ch9.hidden"))
    executed = tmp_path / "jupyter_execute" / "chapters" / "09_x.ipynb"
    executed.parent.mkdir(parents=True)
    outputs = [{"output_type": "display_data", "data": {"text/html": html}} for html in (shown, hidden)]
    executed.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": outputs}]}), encoding="utf-8")
    app = SimpleNamespace(outdir=str(tmp_path / "html"))
    assert ext._claims_not_shown(app, "chapters/09_x", {"claim-ch9-shown", "claim-ch9-hidden"}) == []
    assert ext._claims_not_shown(app, "chapters/09_x", {"claim-ch9-shown"}) == ["ch9.hidden"]
    assert ext._claims_not_shown(app, "chapters/10_missing", set()) == []


def test_config_names_a_citation_style_the_extension_registers():
    import yaml
    from sphinxcontrib.bibtex.plugin import find_plugin

    load_extension()
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["bibtex_bibfiles"] == ["references.bib"]
    name = config["sphinx"]["config"]["bibtex_reference_style"]
    style = find_plugin("sphinxcontrib.bibtex.style.referencing", name)()
    assert (style.bracket_parenthetical.left, style.bracket_parenthetical.right) == ("(", ")")
    assert "bibtex.duplicate_citation" in config["sphinx"]["config"]["suppress_warnings"]


def test_a_cell_ending_in_a_claim_shows_no_dict_repr():
    """The record a claim returns is still a dict, but IPython displays nothing for it (the summary was shown)."""
    from helpers import claims as C

    rec = C.identity("test.no-repr", "One equals one, exactly, in this test.", [1.0], [1.0], atol=0, why="exact integers")
    assert isinstance(rec, dict) and rec["kind"] == "identity"
    assert hasattr(rec, "_ipython_display_") and rec._ipython_display_() is None
    assert not hasattr(dict(rec), "_ipython_display_")  # a plain dict would be shown as its repr
