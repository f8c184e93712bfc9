/* cronmetrics dashboard: refresh the page in place. The pages work without this file.
 *
 * Every ~10 s while the tab is visible (every 2 s for a minute after the user does
 * something) the same URL is fetched again, so filters and paging stay as they are, and
 * each element marked data-live is updated from the fresh copy. The rows of the jobs
 * table are matched by job id and updated in place: a row never moves under the reader;
 * when the order itself changed, a notice offers the new order instead. */
(function () {
  "use strict";
  var body = document.body;
  if (!body || !body.getAttribute("data-refresh") || !window.fetch || !window.DOMParser) {
    return;
  }
  var SLOW = 10000, FAST = 2000, FAST_FOR = 60000, KEY = "cronmetrics-fast-until";
  var fastUntil = 0;
  try { fastUntil = Number(window.sessionStorage.getItem(KEY) || 0); } catch (e) { /* private mode */ }
  var timer = null, busy = false, pendingRows = null;
  var each = function (list, fn) { Array.prototype.forEach.call(list, fn); };

  function interval() { return Date.now() < fastUntil ? FAST : SLOW; }

  function schedule(ms) {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, ms === undefined ? interval() : ms);
  }

  function acted() {
    fastUntil = Date.now() + FAST_FOR;
    try { window.sessionStorage.setItem(KEY, String(fastUntil)); } catch (e) { /* ignore */ }
    if (!busy) { schedule(FAST); }
  }

  function say(text) {
    var el = document.getElementById("live");
    if (el) { el.textContent = text; }
  }

  function refresh() {
    if (document.visibilityState !== "visible" || busy) { return; }
    busy = true;
    window.fetch(window.location.href, {
      credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" }
    }).then(function (response) {
      if (response.redirected) { throw new Error("logged out"); }
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.text();
    }).then(function (html) {
      apply(new window.DOMParser().parseFromString(html, "text/html"));
      say("Live · updated " + new Date().toLocaleTimeString());
    }).catch(function (error) {
      say(error.message === "logged out" ? "Session ended: reload the page to log in"
                                         : "Could not refresh (" + error.message + "); retrying");
    }).then(function () {
      busy = false;
      schedule();
    });
  }

  function holdsFocus(el) {
    var active = document.activeElement;
    return active && active !== document.body && el.contains(active);
  }

  function apply(doc) {
    document.title = doc.title;
    each(document.querySelectorAll("[data-live]"), function (el) {
      var fresh = el.id && doc.getElementById(el.id);
      if (!fresh) { return; }
      if (el.getAttribute("data-live") === "rows") { mergeRows(el, fresh); } else { replace(el, fresh); }
    });
  }

  function replace(el, fresh) {
    if (el.innerHTML === fresh.innerHTML || holdsFocus(el)) { return; }
    var open = [];
    each(el.querySelectorAll("details[open][id]"), function (d) { open.push(d.id); });
    el.innerHTML = fresh.innerHTML;
    open.forEach(function (id) {
      var d = document.getElementById(id);
      if (d) { d.open = true; }
    });
  }

  function ids(tbody) {
    return Array.prototype.map.call(tbody.rows, function (row) {
      return row.getAttribute("data-id") || "";
    }).join("\n");
  }

  function updateRow(old, row) {
    if (old.innerHTML !== row.innerHTML && !holdsFocus(old)) {
      old.innerHTML = row.innerHTML;
    }
    old.className = row.className;
  }

  function mergeRows(tbody, fresh) {
    var notice = document.getElementById("notice");
    if (ids(tbody) === ids(fresh) || !tbody.querySelector("tr[data-id]")) {
      if (ids(tbody) === ids(fresh)) {
        each(fresh.rows, function (row, i) { updateRow(tbody.rows[i], row); });
      } else {
        tbody.innerHTML = fresh.innerHTML;  // nothing was listed: nothing can jump
      }
      pendingRows = null;
      if (notice) { notice.hidden = true; }
      return;
    }
    var byId = {}, gone = 0, moved = 0;
    each(fresh.rows, function (row) {
      var id = row.getAttribute("data-id");
      if (id) { byId[id] = row; }
    });
    each(tbody.rows, function (old) {
      var row = byId[old.getAttribute("data-id")];
      if (row) { updateRow(old, row); moved += 1; } else { old.classList.add("stale"); gone += 1; }
    });
    pendingRows = fresh;
    if (notice) {
      notice.querySelector("span").textContent = gone
        ? "Jobs changed status: " + gone + " shown here no longer match this list."
        : "Jobs changed status: the order of this list is out of date.";
      notice.hidden = false;
    }
  }

  document.addEventListener("click", function (event) {
    if (event.target && event.target.id === "apply-order" && pendingRows) {
      document.getElementById("rows").innerHTML = pendingRows.innerHTML;
      pendingRows = null;
      document.getElementById("notice").hidden = true;
    }
  });
  ["click", "keydown", "submit", "change"].forEach(function (type) {
    document.addEventListener(type, acted, true);
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { schedule(0); }
  });
  say("Live");
  schedule();
}());
