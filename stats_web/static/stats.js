// Observer Relay stats page: keeps the table live from the server-sent event stream.
// Every value from the server is written with text nodes or attributes, never as HTML.
(function () {
  "use strict";

  var SYMBOLS = {
    NONE: "\u274C", IN_PROGRESS: "\u23F3", HELP: "\u2757", DONE: "\u2611", ACCEPTED: "\u2705"
  };
  var RETRY_MS = 5000;

  var body = document.body;
  var table = document.getElementById("stats");
  var thead = table.tHead;
  var tbody = table.tBodies[0];
  var live = document.getElementById("live");
  var updated = document.getElementById("updated");
  var banner = document.getElementById("banner");
  var empty = document.getElementById("empty");
  var summary = document.getElementById("summary");
  var baseTitle = "Room # " + body.getAttribute("data-room-id");
  var manySteps = Number(table.getAttribute("data-many-steps")) || 6;
  var query = window.location.search;
  var eventsUrl = body.getAttribute("data-events") + query;
  var apiUrl = body.getAttribute("data-api") + query;

  var stepsKey = null;
  var rowKeys = null; // user id -> JSON of the row, to flash rows that changed
  var source = null;
  var finished = false;

  function node(tag, text, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) { el.setAttribute(name, String(attrs[name])); });
    }
    if (text !== null && text !== undefined) {
      el.appendChild(document.createTextNode(String(text)));
    }
    return el;
  }

  function setText(el, text) {
    el.replaceChildren(document.createTextNode(String(text)));
  }

  function needsHelp(s) {
    if (s.signal === "HELP") { return true; }
    return Object.keys(s.steps).some(function (name) { return s.steps[name] === "HELP"; });
  }

  function setState(state, label) {
    live.setAttribute("data-state", state);
    setText(live, label);
  }

  function showBanner(text) {
    if (text) {
      setText(banner, text);
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
  }

  function renderHead(steps) {
    var row = document.createElement("tr");
    row.append(node("th", "Name", { "class": "name" }), node("th", "Status", { "class": "presence" }),
      node("th", "Signal", { "class": "signal" }));
    steps.forEach(function (step) {
      row.append(node("th", step.name, { "class": "step", "data-type": step.type, title: step.name }));
    });
    row.append(node("th", "%", { "class": "pct" }));
    thead.replaceChildren(row);
    table.classList.toggle("many-steps", steps.length > manySteps);
  }

  function renderRow(s, steps) {
    var classes = [s.status === "online" ? "online" : "offline"];
    if (needsHelp(s)) { classes.push("help"); }
    if (s.percent === 100) { classes.push("finished"); }
    var tr = node("tr", null, { "data-user-id": s.user_id, "class": classes.join(" ") });
    tr.append(
      node("td", s.name, { "class": "name" }),
      node("td", s.status, { "class": "presence", "data-status": s.status }),
      node("td", s.signal, { "class": "signal", "data-signal": s.signal })
    );
    steps.forEach(function (step) {
      var status = s.steps[step.name] || "NONE";
      tr.append(node("td", SYMBOLS[status] || "?", { "data-status": status, title: status }));
    });
    var hasPercent = typeof s.percent === "number";
    var pct = node("td", hasPercent ? s.percent + "%" : "-",
      { "class": "pct", "data-percent": hasPercent ? s.percent : "" });
    if (hasPercent) { pct.style.setProperty("--p", s.percent + "%"); }
    tr.append(pct);
    return tr;
  }

  function renderSummary(data) {
    var students = data.students;
    var online = students.filter(function (s) { return s.status === "online"; }).length;
    var help = students.filter(needsHelp).length;
    var done = students.filter(function (s) { return s.percent === 100; }).length;
    var hasExercises = data.steps.some(function (step) { return step.type === "exercise"; });
    var parts = {
      students: [students.length, students.length === 1 ? "student" : "students"],
      online: [online, "online"],
      help: [help, help === 1 ? "needs help" : "need help"],
      done: [done, "finished"]
    };
    Array.prototype.forEach.call(summary.querySelectorAll(".count"), function (chip) {
      var part = parts[chip.getAttribute("data-kind")];
      if (!part) { return; }
      setText(chip.querySelector("b"), part[0]);
      setText(chip.querySelector("span"), part[1]);
    });
    summary.querySelector('[data-kind="help"]').setAttribute("data-active", help ? "yes" : "no");
    summary.querySelector('[data-kind="done"]').hidden = !hasExercises;
    document.title = (help ? "(" + help + " \u2757) " : "") + baseTitle + " \u00B7 Observer Relay";
  }

  function render(data) {
    var key = JSON.stringify(data.steps);
    if (key !== stepsKey) {
      renderHead(data.steps);
      stepsKey = key;
    }
    var previous = rowKeys;
    rowKeys = {};
    var rows = data.students.map(function (s) {
      var tr = renderRow(s, data.steps);
      var rowKey = JSON.stringify([s, key]);
      rowKeys[s.user_id] = rowKey;
      if (previous !== null && previous[s.user_id] !== rowKey) { tr.classList.add("changed"); }
      return tr;
    });
    tbody.replaceChildren.apply(tbody, rows);
    empty.hidden = rows.length > 0;
    renderSummary(data);
    var when = new Date(data.generated_at);
    if (!isNaN(when.getTime())) { setText(updated, "updated " + when.toLocaleTimeString()); }
  }

  function retryLater() {
    window.setTimeout(function () {
      // The stream was refused: find out whether the room is gone before trying again.
      fetch(apiUrl, { cache: "no-store" }).then(function (response) {
        if (response.status === 404) {
          finish("closed", "room closed", "This room no longer exists.");
        } else if (response.status === 403) {
          finish("denied", "access denied", "The stats key is no longer valid.");
        } else {
          connect();
        }
      }, function () { connect(); });
    }, RETRY_MS);
  }

  function finish(state, label, message) {
    finished = true;
    if (source) { source.close(); }
    setState(state, label);
    showBanner(message);
  }

  function connect() {
    if (finished) { return; }
    setState("connecting", "connecting\u2026");
    source = new EventSource(eventsUrl);
    source.addEventListener("open", function () { setState("live", "live"); showBanner(null); });
    source.addEventListener("stats", function (event) {
      setState("live", "live");
      render(JSON.parse(event.data));
    });
    source.addEventListener("closed", function () {
      finish("closed", "room closed", "The teacher closed this room. The table shows its last state.");
    });
    source.addEventListener("error", function () {
      if (finished) { return; }
      setState("reconnecting", "reconnecting\u2026");
      if (source.readyState === EventSource.CLOSED) { retryLater(); }
    });
  }

  // Progress bars of the server-rendered rows (no inline styles: the page's CSP forbids them).
  Array.prototype.forEach.call(tbody.rows, function (tr) {
    var pct = tr.querySelector("td.pct");
    var value = pct ? pct.getAttribute("data-percent") : "";
    if (value) { pct.style.setProperty("--p", value + "%"); }
  });
  connect();
})();
