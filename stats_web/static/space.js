// Observer Relay space inspector (§9.8): keeps the tables live from the event stream.
// Names and values are written with text nodes and attributes only, never as HTML.
(function () {
  "use strict";

  var body = document.body;
  var live = document.getElementById("live");
  var updated = document.getElementById("updated");
  var topics = document.getElementById("topics").tBodies[0];
  var services = document.getElementById("services").tBodies[0];
  var clients = document.getElementById("clients");
  var eventsUrl = body.getAttribute("data-events") + window.location.search;

  function cell(text) {
    var td = document.createElement("td");
    td.appendChild(document.createTextNode(String(text)));
    return td;
  }

  function row(key, value, cells) {
    var tr = document.createElement("tr");
    tr.setAttribute(key, String(value));
    cells.forEach(function (c) { tr.appendChild(cell(c)); });
    return tr;
  }

  function render(doc) {
    topics.replaceChildren.apply(topics, doc.topics.map(function (t) {
      var tr = row("data-topic", t.name, [t.name, t.type, t.version, t.subscribers, t.preview]);
      tr.lastChild.className = "preview";
      return tr;
    }));
    services.replaceChildren.apply(services, doc.services.map(function (s) {
      return row("data-service", s.name, [s.name, s.provider, s.pending]);
    }));
    clients.replaceChildren.apply(clients, doc.clients.map(function (c) {
      var li = document.createElement("li");
      li.setAttribute("data-client", String(c));
      li.appendChild(document.createTextNode(String(c)));
      return li;
    }));
    updated.replaceChildren(document.createTextNode(doc.generated_at));
  }

  function state(name) {
    live.setAttribute("data-state", name);
    live.replaceChildren(document.createTextNode(name));
  }

  var source = new EventSource(eventsUrl);
  source.addEventListener("space", function (e) { state("live"); render(JSON.parse(e.data)); });
  source.addEventListener("closed", function () { state("closed"); source.close(); });
  source.onerror = function () { if (source.readyState !== 2) { state("reconnecting"); } };
}());
