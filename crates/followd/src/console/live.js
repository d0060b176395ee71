// followd console, live view: reads the page's server-sent events and adds a row per new or changed
// event. Every value is set with textContent, so nothing from an event is ever parsed as HTML.
(function () {
  "use strict";
  var table = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!table || !window.EventSource) { return; }
  var body = table.tBodies[0];
  var source = new EventSource(table.getAttribute("data-stream"));
  function cell(row, text, cls) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    td.textContent = text;
    row.appendChild(td);
    return td;
  }
  source.addEventListener("ready", function () { status.textContent = "connected"; });
  source.onerror = function () { status.textContent = "reconnecting…"; };
  source.onmessage = function (m) {
    var e;
    try { e = JSON.parse(m.data); } catch (_) { return; }
    var row = document.createElement("tr");
    row.className = "fresh";
    cell(row, e.Updated);
    var id = cell(row, "");
    var a = document.createElement("a");
    a.href = e.Url;
    a.textContent = e.WebhookId;
    id.appendChild(a);
    cell(row, String(e.Command).replace(/^Follow\./, ""));
    cell(row, e.From_Account);
    var st = cell(row, "");
    var badge = document.createElement("span");
    badge.className = "badge s-" + String(e.State).replace(/[^a-z]/g, "");
    badge.textContent = e.State;
    st.appendChild(badge);
    cell(row, String(e.Attempts), "num");
    cell(row, e.LastError, "err");
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > 200) { body.deleteRow(body.rows.length - 1); }
  };
})();
