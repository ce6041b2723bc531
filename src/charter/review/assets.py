"""The review page's own CSS and script, inline (the page works offline; nothing is fetched but
the marks API). The report's CSS (charter.report.assets) is the base. The script never treats
model text as markup: it reads data attributes and textContent, and writes textContent only."""

CSS = """
nav.controls { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
nav.controls input, nav.controls select { padding: 5px 8px; border: 1px solid #c8ced8; border-radius: 5px;
                                          font: inherit; }
nav.controls input { min-width: 240px; }
#message { min-height: 20px; padding: 2px 32px; font-size: 12px; color: var(--muted); }
#message.error { color: #9b1c1c; font-weight: 600; }
.chain > h3, .pair > h3 { margin: 4px 0 8px; }
.item { border: 2px solid transparent; border-radius: 6px; padding: 2px 6px; margin: 4px -8px; }
.pair.item { border-color: var(--line); border-radius: 6px; margin: 10px 0; padding: 8px 14px; }
.item.current, .pair.item.current { border-color: var(--accent); background: #f3f7fc; }
.item.saving { opacity: .6; }
.marks { display: flex; gap: 8px; align-items: center; margin: 4px 0 6px 10px; }
.marks button { font: inherit; font-size: 12px; padding: 2px 10px; border: 1px solid #c8ced8; border-radius: 5px;
                background: #fff; cursor: pointer; }
.marks button[aria-pressed="true"] { font-weight: 700; }
.marks button[data-value="better"][aria-pressed="true"] { background: #e3f4e6; border-color: #4c9a5b; }
.marks button[data-value="worse"][aria-pressed="true"] { background: #fde8e8; border-color: #b8474f; }
.marks button[data-value="same"][aria-pressed="true"] { background: #eceff3; border-color: #667085; }
.marks button[data-value="a"][aria-pressed="true"], .marks button[data-value="b"][aria-pressed="true"] {
  background: #e3f4e6; border-color: #4c9a5b; }
.options { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
.pair[data-mark="a"] .option[data-letter="a"], .pair[data-mark="b"] .option[data-letter="b"] {
  border-color: #4c9a5b; background: #f5fbf6; }
.option { border-color: #98a2b3; }
kbd { font: 11px ui-monospace, SFMono-Regular, Menlo, monospace; border: 1px solid #c8ced8; border-radius: 3px;
      padding: 0 4px; background: #f7f8fa; }
#help { position: fixed; right: 24px; top: 64px; background: #fff; border: 1px solid var(--line); border-radius: 8px;
        box-shadow: 0 6px 24px rgba(0,0,0,.15); padding: 10px 18px; z-index: 5; max-width: 460px; }
"""

JS = """
(function () {
  'use strict';
  function byId(id) { return document.getElementById(id); }
  var units = Array.prototype.slice.call(document.querySelectorAll('.chain, .pair'));
  var items = Array.prototype.slice.call(document.querySelectorAll('.item'));
  var q = byId('search'), principle = byId('principle'), show = byId('show'), status = byId('status');
  var progress = byId('progress'), message = byId('message'), help = byId('help');
  var KEYS = {'1': 'better', '2': 'worse', '3': 'same', 'b': 'better', 'w': 'worse', 's': 'same'};
  var LABELS = {better: 'better', worse: 'worse', same: 'same', a: 'A is better', b: 'B is better'};
  var current = null;

  function hiddenEl(el) { return !!el.closest('[hidden]'); }
  function visibleItems() { return items.filter(function (el) { return !hiddenEl(el); }); }
  function say(text, error) { message.textContent = text; message.classList.toggle('error', !!error); }

  function statusOk(unit, want) {
    if (!want) return true;
    var own = unit.classList.contains('item') ? [unit] : Array.prototype.slice.call(unit.querySelectorAll('.item'));
    return own.some(function (el) { return want === 'marked' ? !!el.dataset.mark : !el.dataset.mark; });
  }
  function apply() {
    var term = q.value.trim().toLowerCase(), p = principle.value, s = show.value, st = status.value;
    byId('chains').hidden = s === 'pairs';
    byId('pairs').hidden = s === 'chains';
    units.forEach(function (unit) {
      unit.hidden = !((!p || unit.dataset.principles.indexOf('|' + p + '|') >= 0) && statusOk(unit, st) &&
                      (!term || unit.textContent.toLowerCase().indexOf(term) >= 0));
    });
    counts();
  }
  function counts() {
    var rev = items.filter(function (el) { return el.dataset.type === 'revision'; });
    var pairs = items.filter(function (el) { return el.dataset.type === 'pair'; });
    var marked = function (list) { return list.filter(function (el) { return !!el.dataset.mark; }).length; };
    progress.textContent = 'revisions ' + marked(rev) + ' of ' + rev.length + ' marked, pairs ' + marked(pairs) +
      ' of ' + pairs.length + ' picked; ' + visibleItems().length + ' items shown';
  }
  function refresh(el) {
    var mark = el.dataset.mark || '';
    Array.prototype.forEach.call(el.querySelectorAll('button[data-value]'), function (b) {
      b.setAttribute('aria-pressed', String(b.dataset.value === mark));
    });
    el.querySelector('.state').textContent = mark ? 'marked: ' + LABELS[mark] : '';
  }
  function select(el) {
    if (current) current.classList.remove('current');
    current = el;
    el.classList.add('current');
    el.scrollIntoView({block: 'center'});
  }
  function move(step) {
    var shown = visibleItems();
    if (!shown.length) return;
    var i = current ? shown.indexOf(current) : -1;
    i = i < 0 ? (step > 0 ? 0 : shown.length - 1) : Math.min(shown.length - 1, Math.max(0, i + step));
    select(shown[i]);
  }
  function save(el, value) {
    el.classList.add('saving');
    fetch('api/marks', {method: 'POST', headers: {'Content-Type': 'application/json'},
                        body: JSON.stringify({key: el.dataset.key, mark: value || null})})
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw new Error(body.error || ('HTTP ' + r.status));
          return body;
        });
      })
      .then(function (body) {
        el.dataset.mark = body.mark || '';
        refresh(el); counts();
        say(body.mark ? 'saved: ' + LABELS[body.mark] : 'mark cleared');
      })
      .catch(function (e) { say('not saved: ' + e.message, true); })
      .then(function () { el.classList.remove('saving'); });
  }
  function valueFor(el, key) {
    if (key === 'x' || key === '0') return '';
    if (el.dataset.type === 'pair') return key === 'a' || key === 'b' ? key : undefined;
    return KEYS[key];
  }
  document.addEventListener('keydown', function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var tag = ev.target && ev.target.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') {
      if (ev.key === 'Escape') ev.target.blur();
      return;
    }
    var key = ev.key;
    if (key === '?') { help.hidden = !help.hidden; }
    else if (key === 'Escape') { help.hidden = true; }
    else if (key === 'j') { move(1); }
    else if (key === 'k') { move(-1); }
    else if (key === '/') { q.focus(); }
    else {
      if (!current || hiddenEl(current)) { say('press j to pick an item first'); return; }
      var value = valueFor(current, key);
      if (value === undefined) return;
      save(current, value);
    }
    ev.preventDefault();
  });
  items.forEach(function (el) {
    refresh(el);
    el.addEventListener('click', function (ev) {
      select(el);
      var b = ev.target.closest('button[data-value]');
      if (b) save(el, b.dataset.value === el.dataset.mark ? '' : b.dataset.value);
    });
  });
  byId('help-button').addEventListener('click', function () { help.hidden = !help.hidden; });
  [q, principle, show, status].forEach(function (el) {
    el.addEventListener('input', apply);
    el.addEventListener('change', apply);
  });
  apply();
})();
"""
