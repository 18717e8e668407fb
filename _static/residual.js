// The Residual Stream: keep plotly figures readable in the theme's dark mode.
// The theme sets data-theme="dark" on <html>; we restyle every figure's
// background and text colours to match, and back again in light mode.
(function () {
  function colours() {
    var dark = document.documentElement.dataset.theme === "dark";
    return dark
      ? { paper_bgcolor: "#14181e", plot_bgcolor: "#14181e", "font.color": "#ced6dd" }
      : { paper_bgcolor: "#ffffff", plot_bgcolor: "#ffffff", "font.color": "#2a3f5f" };
  }
  function restyleAll() {
    if (!window.Plotly) return;
    document.querySelectorAll(".js-plotly-plot").forEach(function (el) {
      window.Plotly.relayout(el, colours());
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    new MutationObserver(restyleAll).observe(document.documentElement, {
      attributes: true, attributeFilter: ["data-theme"],
    });
    if (document.documentElement.dataset.theme === "dark") setTimeout(restyleAll, 0);
  });
})();
