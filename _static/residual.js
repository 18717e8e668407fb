// The Residual Stream: the page's share of making figures and navigation work.
//
// 1. Sidebar toggles. The theme puts two "☰" buttons (and two "contents" buttons)
//    in every page and wires only the first of each, which is hidden; the visible
//    one did nothing. Each extra toggle now forwards its click to the wired one.
// 2. Figures follow the theme: background, text, grid and menu colours come from
//    the page's CSS variables, and change when the reader switches light/dark.
// 3. Figures fit the width they get: the title is re-wrapped (and set smaller on a
//    phone) so it never runs out of the figure, the top margin makes room for it,
//    a right-hand legend moves under the plot on a phone, and a heatmap keeps a
//    minimum width (the figure scrolls sideways inside its frame instead).
// helpers/plotting.py (book_layout) prepares each figure for this: it stores the
// unwrapped title and the minimum width in layout.meta.
(function () {
  "use strict";
  var MODEBAR_BAND = 48, NARROW = 560;
  var FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif";

  // ------------------------------------------------------------ 1. sidebar
  function wireToggles() {
    ["primary-toggle", "secondary-toggle"].forEach(function (cls) {
      var all = document.querySelectorAll("." + cls);
      var wired = all[0];
      for (var i = 1; i < all.length; i++) {
        all[i].addEventListener("click", function (event) {
          event.preventDefault();
          event.stopPropagation();
          wired.click();
        });
      }
    });
  }

  // ------------------------------------------------------------ 2. colours
  function cssVar(name, fallback) {
    var v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }
  function themeColours() {
    var dark = document.documentElement.dataset.theme === "dark";
    return {
      dark: dark,
      bg: cssVar("--pst-color-background", dark ? "#14181e" : "#ffffff"),
      text: cssVar("--pst-color-text-base", dark ? "#ced6dd" : "#222832"),
      grid: dark ? "#2f3843" : "#e6eaef",
      line: dark ? "#56616e" : "#c4ccd6",
      // plotly paints the active menu button #F4FAFF whatever the theme, so menu
      // labels stay dark on light buttons in both themes (contrast above 4.5:1).
      menuBg: dark ? "#dde3ea" : "#ffffff",
      menuText: "#1f2630",
      menuBorder: dark ? "#8a96a3" : "#c4ccd6",
    };
  }
  function colourUpdate(gd, c) {
    var L = gd._fullLayout || {}, u = {
      paper_bgcolor: c.bg, plot_bgcolor: c.bg, "font.color": c.text,
      "legend.bgcolor": "rgba(0,0,0,0)", "title.font.color": c.text,
    };
    Object.keys(L).forEach(function (k) {
      if (/^[xy]axis\d*$/.test(k)) {
        u[k + ".gridcolor"] = c.grid;
        u[k + ".zerolinecolor"] = c.line;
        u[k + ".linecolor"] = c.line;
        u[k + ".tickfont.color"] = c.text;
        u[k + ".title.font.color"] = c.text;
      }
    });
    (gd.layout.updatemenus || []).forEach(function (m, i) {
      u["updatemenus[" + i + "].bgcolor"] = c.menuBg;
      u["updatemenus[" + i + "].bordercolor"] = c.menuBorder;
      u["updatemenus[" + i + "].font.color"] = c.menuText;
    });
    (gd.layout.sliders || []).forEach(function (s, i) {
      u["sliders[" + i + "].font.color"] = c.text;
      u["sliders[" + i + "].currentvalue.font.color"] = c.text;
      u["sliders[" + i + "].bordercolor"] = c.line;
      u["sliders[" + i + "].tickcolor"] = c.line;
    });
    // notes the author gave no colour follow the theme (remembered: after the first pass they have one)
    if (!gd._rsAutoNotes) gd._rsAutoNotes = (gd.layout.annotations || []).map(function (a) { return !a.font || !a.font.color; });
    (gd.layout.annotations || []).forEach(function (a, i) {
      if (gd._rsAutoNotes[i]) u["annotations[" + i + "].font.color"] = c.text;
    });
    return u;
  }

  // ------------------------------------------------------------ 3. fit
  var canvas = document.createElement("canvas").getContext("2d");
  function textWidth(text, px) {
    canvas.font = px + "px " + FONT;
    return canvas.measureText(text.replace(/<[^>]+>/g, "")).width;
  }
  // Same rule as helpers.plotting.wrap_title: soft breaks are "<br >", an author's <br> stays.
  function wrap(text, widthPx, px) {
    return text.split("<br >").join(" ").split(/<br\s*\/?>/i).map(function (hard) {
      var lines = [], line = "";
      hard.split(" ").forEach(function (word) {
        var trial = line ? line + " " + word : word;
        if (line && textWidth(trial, px) > widthPx) { lines.push(line); line = word; } else { line = trial; }
      });
      lines.push(line);
      return lines.join("<br >");
    }).join("<br>");
  }
  function legendRows(gd, width) {
    var used = 0, rows = 1;
    (gd._fullData || []).forEach(function (t) {
      if (!t.showlegend || !t.name) return;
      var w = textWidth(String(t.name), 12) + 44;
      if (used + w > width && used > 0) { rows += 1; used = 0; }
      used += w;
    });
    return rows;
  }
  function fitUpdate(gd) {
    var L = gd._fullLayout, meta = gd.layout.meta || {};
    if (!L || !L.width) return {};
    var W = L.width, narrow = W < NARROW, u = {};
    var title = gd.layout.title || {};
    var cur = typeof title === "string" ? title : (title.text || "");
    var base = (gd._rsBase = gd._rsBase || {size: (L.title && L.title.font && L.title.font.size) || 16,
                                             l: L.margin.l, r: L.margin.r, b: L.margin.b,
                                             legend: {orientation: L.legend && L.legend.orientation,
                                                      x: L.legend && L.legend.x, y: L.legend && L.legend.y,
                                                      xanchor: L.legend && L.legend.xanchor,
                                                      yanchor: L.legend && L.legend.yanchor}});
    var px = narrow ? Math.min(base.size, 14) : base.size;
    var wrapped = cur ? wrap(cur, W - 28, px) : "";
    var lines = wrapped ? wrapped.split(/<br\s*\/?>/i).length : 0;
    var top = Math.max(40, MODEBAR_BAND + Math.ceil(lines * px * 1.3) + 16 + (meta.menu_band || 0) + (meta.note_band || 0));
    if (wrapped !== cur) u["title.text"] = wrapped;
    if (px !== ((L.title && L.title.font && L.title.font.size) || 16)) u["title.font.size"] = px;
    // A legend that would crowd the plot (on the right at phone width, or under the x axis where it
    // meets the axis title) goes to the top, in a band of its own between the title and the plot.
    var vertical = base.legend.orientation !== "h" && (base.legend.x === undefined || base.legend.x >= 1);
    var below = base.legend.orientation === "h" && typeof base.legend.y === "number" && (base.legend.y < 0 || base.legend.y >= 1);
    if (narrow) {
      if (base.l > 64) u["margin.l"] = 64;
      if (base.r > 24) u["margin.r"] = 24;
    } else if (gd._rsNarrow) {
      Object.assign(u, {"margin.l": base.l, "margin.r": base.r});
    }
    if (L.showlegend && ((narrow && vertical) || below)) {
      var rows = legendRows(gd, W - 20), band = (meta.menu_band || 0) + (meta.note_band || 0) + 4;
      gd._rsLegendTop = {top: top, band: band};  // settle() measures the legend once drawn
      top += rows * 30;
      Object.assign(u, {"legend.orientation": "h", "legend.x": 0, "legend.xanchor": "left", "legend.yref": "paper",
                        "legend.y": 1 + band / Math.max(50, L._size ? L._size.h - (top - L.margin.t) : 300),
                        "legend.yanchor": "bottom"});
    } else if (L.showlegend && vertical && gd._rsNarrow) {  // back from phone width: the author's legend
      gd._rsLegendTop = null;
      Object.assign(u, {"legend.orientation": base.legend.orientation || "v", "legend.x": base.legend.x,
                        "legend.xanchor": base.legend.xanchor, "legend.y": base.legend.y,
                        "legend.yanchor": base.legend.yanchor});
    }
    if (Math.abs(L.margin.t - top) > 1) u["margin.t"] = top;
    // axis titles: wrapped to the axis' length (a long y title otherwise runs into the chart title)
    Object.keys(L).forEach(function (k) {
      if (!/^[xy]axis\d*$/.test(k) || !L[k]._length) return;
      var t = gd.layout[k] && gd.layout[k].title;
      var text = typeof t === "string" ? t : (t && t.text);
      if (!text) return;
      var size = (L[k].title && L[k].title.font && L[k].title.font.size) || 14;
      var w = wrap(text, L[k]._length, size);
      if (w !== text) u[k + ".title.text"] = w;
    });
    // notes placed on the paper (subplot titles, labels): wrapped to the room on their side
    (gd.layout.annotations || []).forEach(function (a, i) {
      if (!a.text || a.showarrow !== false || !/^(paper|[xy]\d* domain)$/.test(a.xref || "x")) return;
      var plotW = L.width - L.margin.l - L.margin.r, x = typeof a.x === "number" ? a.x : 0.5;
      var left = x * plotW + L.margin.l, right = (1 - x) * plotW + L.margin.r;
      var room = a.xanchor === "left" ? right : a.xanchor === "right" ? left : 2 * Math.min(left, right);
      // a subplot title (centred over a subplot) gets that subplot's width
      Object.keys(L).forEach(function (k) {
        var d = /^xaxis\d*$/.test(k) && L[k].domain;
        if (d && a.xref === "paper" && Math.abs((d[0] + d[1]) / 2 - x) < 0.01) room = Math.min(room, (d[1] - d[0]) * plotW + 16);
      });
      // first smaller type (down to 10 px), then a second line: a note grows upwards into what is above it
      gd._rsNoteSize = gd._rsNoteSize || {};
      var size = gd._rsNoteSize[i] = gd._rsNoteSize[i] || (a.font && a.font.size) || (L.font && L.font.size) || 13;
      var one = a.text.split("<br >").join(" "), avail = Math.max(80, room - 8);
      var fit = Math.max(10, Math.min(size, Math.floor(size * avail / Math.max(1, textWidth(one, size)))));
      var w = wrap(one, avail, fit);
      if (w !== a.text) u["annotations[" + i + "].text"] = w;
      if (fit !== ((a.font && a.font.size) || size)) u["annotations[" + i + "].font.size"] = fit;
    });
    gd._rsNarrow = narrow;
    Object.keys(u).forEach(function (k) { if (u[k] === undefined) delete u[k]; });
    return u;
  }
  function minWidth(gd) {
    var meta = gd.layout.meta || {}, frame = gd.closest(".rs-figure");
    if (!meta.min_width || !frame) return;
    var want = frame.clientWidth < meta.min_width ? meta.min_width + "px" : "";
    if (gd.style.minWidth !== want) { gd.style.minWidth = want; if (window.Plotly) window.Plotly.Plots.resize(gd); }
  }

  var busy = new WeakMap();
  function settle(gd, withColours) {
    if (!window.Plotly || !gd._fullLayout) return Promise.resolve();
    if (busy.get(gd)) return busy.get(gd);
    minWidth(gd);
    var u = fitUpdate(gd);
    if (withColours) Object.assign(u, colourUpdate(gd, themeColours()));
    if (!Object.keys(u).length) return Promise.resolve();
    var p = window.Plotly.relayout(gd, u).then(function () {
      // the legend's real height (rows, spacing) is known only once drawn: make its band fit it
      var lt = gd._rsLegendTop, lg = lt && gd.querySelector(".legend");
      if (!lg) return;
      var want = Math.ceil(lt.top + lg.getBoundingClientRect().height + 6), L = gd._fullLayout;
      if (Math.abs(L.margin.t - want) <= 2) return;
      var plotH = L._size.h - (want - L.margin.t);
      return window.Plotly.relayout(gd, {"margin.t": want, "legend.y": 1 + lt.band / Math.max(50, plotH)});
    }).then(function () { busy.delete(gd); }, function () { busy.delete(gd); });
    busy.set(gd, p);
    return p;
  }
  function figures() { return Array.prototype.slice.call(document.querySelectorAll(".rs-figure .js-plotly-plot")); }
  function settleAll(withColours) {
    var theme = document.documentElement.dataset.theme || "light";
    return Promise.all(figures().map(function (gd) { return settle(gd, withColours); })).then(function () {
      document.documentElement.dataset.rsSettled = theme;
    });
  }

  function start() {
    wireToggles();
    figures().forEach(function (gd) {
      if (!gd.on) return;
      // a button or slider may set a new (long) title: wrap it for this width
      ["plotly_buttonclicked", "plotly_sliderchange"].forEach(function (ev) {
        gd.on(ev, function () { setTimeout(function () { settle(gd, false); }, 0); });
      });
    });
    new MutationObserver(function () { settleAll(true); }).observe(document.documentElement, {
      attributes: true, attributeFilter: ["data-theme"],
    });
    var timer = null;
    window.addEventListener("resize", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { settleAll(false); }, 150);
    });
    settleAll(true);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
