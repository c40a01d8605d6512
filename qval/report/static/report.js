(function () {
  "use strict";
  function each(list, fn) { Array.prototype.forEach.call(list, fn); }

  function sortValue(cell) {
    if (!cell) { return null; }
    var raw = cell.getAttribute("data-sort");
    if (raw === null) {
      var text = cell.textContent.trim().toLowerCase();
      return text === "" || text === "\u2013" ? null : text;
    }
    if (raw === "") { return null; }
    var number = parseFloat(raw);
    return Number.isFinite(number) ? number : null;
  }

  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    if (typeof a === "number") { return -1; }
    if (typeof b === "number") { return 1; }
    return a < b ? -1 : (a > b ? 1 : 0);
  }

  function order(table) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var col = parseInt(table.getAttribute("data-sort-col") || "-1", 10);
    var dir = table.getAttribute("data-sort-dir") === "desc" ? -1 : 1;
    var items = Array.prototype.map.call(body.rows, function (row, pos) {
      var first = parseInt(row.getAttribute("data-i") || "", 10);
      return {row: row, i: first >= 0 ? first : pos, v: col >= 0 ? sortValue(row.cells[col]) : null};
    });
    items.sort(function (a, b) {
      if (a.v === null && b.v !== null) { return 1; }
      if (b.v === null && a.v !== null) { return -1; }
      if (a.v !== null && b.v !== null) {
        var c = compare(a.v, b.v) * dir;
        if (c !== 0) { return c; }
      }
      return a.i - b.i;
    });
    if (table.getAttribute("data-grouped") === "family") {
      var rankOf = new Map();
      items.forEach(function (item, k) {
        var family = item.row.getAttribute("data-family") || "";
        if (!rankOf.has(family)) { rankOf.set(family, rankOf.size); }
        item.f = rankOf.get(family);
        item.k = k;
      });
      items.sort(function (a, b) { return (a.f - b.f) || (a.k - b.k); });
    }
    items.forEach(function (item) { body.appendChild(item.row); });
  }

  each(document.querySelectorAll("table.sortable"), function (table) {
    var head = table.tHead;
    if (!head || !head.rows.length) { return; }
    var headers = head.rows[0].cells;
    each(headers, function (th) {
      th.setAttribute("tabindex", "0");
      function activate() {
        var col = String(th.cellIndex);
        var dir;
        if (table.getAttribute("data-sort-col") === col) {
          dir = table.getAttribute("data-sort-dir") === "desc" ? "asc" : "desc";
        } else {
          dir = th.getAttribute("data-first") === "desc" ? "desc" : "asc";
        }
        table.setAttribute("data-sort-col", col);
        table.setAttribute("data-sort-dir", dir);
        each(headers, function (other) {
          other.setAttribute("aria-sort",
            other === th ? (dir === "asc" ? "ascending" : "descending") : "none");
        });
        order(table);
      }
      th.addEventListener("click", activate);
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); activate(); }
      });
    });
  });

  each(document.querySelectorAll("section.track"), function (track) {
    var controls = track.querySelector(".controls");
    if (!controls) { return; }
    var query = controls.querySelector("input.f-text");
    var dataset = controls.querySelector("select.f-dataset");
    var temperature = controls.querySelector("select.f-temperature");
    var family = controls.querySelector("input.f-family");
    var shown = controls.querySelector(".shown");
    var groups = track.querySelectorAll(".grp");
    var texts = new Map();
    each(groups, function (group) {
      each(group.querySelectorAll("tbody tr"), function (row) {
        var parts = [];
        each(row.querySelectorAll("td.name"), function (cell) { parts.push(cell.textContent); });
        texts.set(row, parts.join("\n").toLowerCase());
      });
    });
    function chosen(select) {
      return select && select.selectedIndex > 0 ? select.value : null;
    }
    function apply() {
      var needle = query ? query.value.trim().toLowerCase() : "";
      var ds = chosen(dataset);
      var t = chosen(temperature);
      var visible = 0;
      var total = 0;
      each(groups, function (group) {
        group.hidden = (ds !== null && group.getAttribute("data-dataset") !== ds) ||
          (t !== null && group.getAttribute("data-temperature") !== t);
        each(group.querySelectorAll("tbody tr"), function (row) {
          row.hidden = needle !== "" && (texts.get(row) || "").indexOf(needle) < 0;
          if (!group.hidden) {
            total += 1;
            if (!row.hidden) { visible += 1; }
          }
        });
      });
      if (shown) { shown.textContent = visible + " of " + total + " rows shown"; }
    }
    function regroup() {
      each(track.querySelectorAll("table.board"), function (table) {
        if (family && family.checked) { table.setAttribute("data-grouped", "family"); }
        else { table.removeAttribute("data-grouped"); }
        order(table);
      });
    }
    if (query) { query.addEventListener("input", apply); }
    if (dataset) { dataset.addEventListener("change", apply); }
    if (temperature) { temperature.addEventListener("change", apply); }
    if (family) { family.addEventListener("change", regroup); }
    controls.hidden = false;
    apply();
  });
})();
