// The test page's logic; everything it sees goes to window.__log for the test to read.
"use strict";
window.__log = [];
const log = (entry) => { window.__log.push(entry); };
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// The seed compiles its socket URL in (VUE_APP_BASE_API); this page takes it from ?relay=.
const socket = io(params.get("relay") || location.origin);  // default options

const state = { me: null, myName: null, person: {}, group: {}, target: null };
window.chatState = state;

socket.io.on("open", () => {
  const engine = socket.io.engine;
  log({ open: engine.transport.name });
  engine.on("upgrade", (transport) => log({ upgrade: transport.name }));
});
socket.on("connect", () => {
  log({ connect: socket.io.engine.transport.name });
  $("status").textContent = "connected";
});
socket.on("disconnect", (reason) => {
  log({ disconnect: reason });
  $("status").textContent = "disconnected";
});
socket.on("connect_error", (err) => log({ connect_error: String(err && err.message) }));
socket.onAny((event, data) => log({ event, data, transport: socket.io.engine.transport.name }));
window.transport = () => socket.io.engine && socket.io.engine.transport.name;

function nameOf(id) {
  if (id === state.me) return state.myName;
  const entry = state.person[id];
  return entry ? entry[id] : id;
}

function isPerson(id) { return id.length === 20; }

function render() {
  const people = $("people");
  people.textContent = "";
  for (const id of Object.keys(state.person)) {
    if (id === state.me) continue;
    const li = document.createElement("li");
    li.className = "person";
    li.dataset.id = id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = id;
    box.addEventListener("click", (e) => e.stopPropagation());
    li.append(box, document.createTextNode(" " + state.person[id][id]));
    li.addEventListener("click", () => choose(id));
    people.append(li);
  }
  const groups = $("groups");
  groups.textContent = "";
  for (const [gid, members] of Object.entries(state.group)) {
    const li = document.createElement("li");
    li.className = "group";
    li.dataset.id = gid;
    li.textContent = `#${gid}: ${Object.values(members).join(", ")}`;
    li.addEventListener("click", () => choose(gid));
    groups.append(li);
  }
  if (state.target && !(state.target in state.person) && !(state.target in state.group)) {
    choose(null);  // as the seed: an open chat missing from the latest contact is dropped
  }
}

function choose(id) {
  state.target = id;
  $("target-name").textContent = id === null ? "nobody"
    : isPerson(id) ? nameOf(id) : `group #${id}`;
}

function show(line, from) {
  const li = document.createElement("li");
  li.textContent = line;
  li.dataset.from = from;
  $("messages").append(li);
}

$("login").addEventListener("click", () => {
  socket.emit("login", { username: $("name").value });
});

socket.on("login-response", (data) => {
  if (data.result === "success") {
    state.me = data.userid;
    state.myName = data.username;
    $("me").textContent = `${data.username} (${data.userid})`;
  } else {
    $("me").textContent = `login ${data.result}`;
  }
});

socket.on("contact", (data) => {
  state.person = data.person;
  state.group = data.group;
  render();
});

socket.on("message", (data) => {
  const where = isPerson(data.receiver) ? "" : ` in #${data.receiver}`;
  show(`${nameOf(data.sender)}${where}: ${data.message}`, data.sender);
});

socket.on("update_group", (data) => {
  state.group[data.groupid] = data.member;
  render();
});

socket.on("delete_group", (data) => {
  delete state.group[data.groupid];
  render();
});

$("send").addEventListener("click", () => {
  if (!state.target || !state.me) return;
  const text = $("text").value;
  socket.emit("message", { sender: state.me, receiver: state.target, message: text });
  show(`me: ${text}`, state.me);  // shown locally: the server does not echo
  $("text").value = "";
});

$("create").addEventListener("click", () => {
  const member = { [state.me]: state.myName };
  for (const box of document.querySelectorAll("#people input:checked")) {
    member[box.value] = nameOf(box.value);
    box.checked = false;
  }
  socket.emit("create_group", { sender: state.me, member });
});
