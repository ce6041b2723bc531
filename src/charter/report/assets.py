"""The report's inline CSS and JS. The script never touches model text as code or markup: it only
reads textContent for search and toggles `hidden` from data attributes."""

CSS = """
:root { --fg:#1d2430; --muted:#667085; --line:#e4e7ec; --bg:#f7f8fa; --accent:#3b6ea8; }
* { box-sizing: border-box; }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
       margin: 0; }
header { background: #1f3550; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 20px; } header p { margin: 4px 0 0; opacity: .8; }
nav { padding: 8px 32px; background: #fff; border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 2; }
nav a { margin-right: 16px; color: var(--accent); text-decoration: none; }
main { padding: 8px 32px 48px; max-width: 1200px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 20px; margin: 16px 0; }
h2 { font-size: 17px; margin: 6px 0 10px; } h3 { font-size: 14px; margin: 14px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 20px; } .card span { color: var(--muted); font-size: 12px; }
.muted { color: var(--muted); } .plots img { max-width: 100%; margin: 4px 12px 4px 0; }
.controls { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin-bottom: 10px; }
.controls input, .controls select { padding: 5px 8px; border: 1px solid #c8ced8; border-radius: 5px; font: inherit; }
.controls input { min-width: 260px; }
.chain { border: 1px solid var(--line); border-radius: 6px; margin: 10px 0; padding: 8px 14px; }
.chain > summary { cursor: pointer; font-weight: 600; }
.turn { margin: 6px 0; padding: 6px 10px; border-left: 3px solid var(--line); white-space: pre-wrap; }
.turn .who { display: block; font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
             white-space: normal; }
.prompt { border-color: #98a2b3; } .initial { border-color: #d07a2c; } .critique { border-color: #b8474f; background: #fdf6f6; }
.revision { border-color: #4c9a5b; background: #f5fbf6; }
.badge { display: inline-block; background: #e8eef7; color: #27496d; border-radius: 10px; padding: 0 8px;
         font-size: 11px; margin-left: 6px; font-weight: 500; }
.badge.err { background: #fde8e8; color: #9b1c1c; } .badge.kind { background: #eef2e6; color: #3d5a1f; }
.failure { color: #9b1c1c; }
.pair { border: 1px solid var(--line); border-radius: 6px; margin: 10px 0; padding: 8px 14px; }
.pair > summary { cursor: pointer; font-weight: 600; }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
ins { background: #d9f2de; text-decoration: none; } del { background: #fbdcdc; }
"""

JS = """
(function () {
  var chains = Array.prototype.slice.call(document.querySelectorAll('.chain'));
  var q = document.getElementById('search'), principle = document.getElementById('principle');
  var run = document.getElementById('run'), kind = document.getElementById('kind');
  var count = document.getElementById('shown');
  function apply() {
    var term = q.value.trim().toLowerCase(), p = principle.value, r = run ? run.value : '', k = kind.value;
    var shown = 0;
    chains.forEach(function (el) {
      var ok = (!p || el.dataset.principles.indexOf('|' + p + '|') >= 0) && (!r || el.dataset.run === r) &&
               (!k || el.dataset.kind === k) && (!term || el.textContent.toLowerCase().indexOf(term) >= 0);
      el.hidden = !ok;
      if (ok) shown += 1;
    });
    count.textContent = shown + ' of ' + chains.length + ' shown';
  }
  [q, principle, run, kind].forEach(function (el) {
    if (el) { el.addEventListener('input', apply); el.addEventListener('change', apply); }
  });
  apply();
})();
"""
