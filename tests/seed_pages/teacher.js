// What observer_front (the seed teacher UI) does with its socket, and nothing more:
// - src/services/socket.js: io(server, {transports: ["websocket"]}), no auth, no query;
//   `server` comes from localStorage SERVER (empty means the page's own origin);
// - it knows no tokens: the seed server answered room/create with room/update, from which
//   the UI keeps ROOM_ID and HOST_ID in localStorage; on page load with a stored room it
//   sends room/rehost {room_id, user_id} (without a token);
// - room/create {name: "Host"}, room/close {room_id}; no acknowledgements are requested.
// Every event the socket receives is recorded in window.__log for the test to read.
"use strict";

window.__log = [];
const record = (entry) => window.__log.push(Object.assign({ at: Date.now() }, entry));

const server = localStorage.getItem("SERVER") || undefined;
// Test knobs, not observer_front's: ?transports=default connects with socket.io-client's
// default transports (HTTP long-polling first, then the upgrade), as other browser clients
// do, and &credentials=1 adds `withCredentials: true` (cookies on cross-origin polls).
const query = new URLSearchParams(location.search);
const options = query.get("transports") === "default" ? {} : { transports: ["websocket"] };
if (query.get("credentials") === "1") options.withCredentials = true;
const socket = io(server, options);
window.__socket = socket;

socket.on("connect", () => {
  record({ connect: socket.id });
  document.getElementById("state").textContent = "connected";
});
socket.on("disconnect", (reason) => {
  record({ disconnect: reason });
  document.getElementById("state").textContent = "disconnected";
});
socket.on("connect_error", (err) => record({ connect_error: String(err) }));
socket.onAny((event, ...args) => record({ event, data: args[0] }));

socket.on("room/update", (room) => {
  localStorage.setItem("ROOM_ID", String(room.id));
  localStorage.setItem("HOST_ID", String(room.host));
  document.getElementById("room").textContent = String(room.id);
  const list = document.getElementById("students");
  list.replaceChildren(...room.users.filter((u) => u.role === "client").map((u) => {
    const item = document.createElement("li");
    item.textContent = u.name;
    return item;
  }));
});

document.getElementById("create").addEventListener("click", () => {
  socket.emit("room/create", { name: "Host" });
});
document.getElementById("close").addEventListener("click", () => {
  socket.emit("room/close", { room_id: Number(localStorage.getItem("ROOM_ID")) });
});

// Page load: a stored room is taken back (emits before `connect` are buffered by the client).
const storedRoom = localStorage.getItem("ROOM_ID");
const storedHost = localStorage.getItem("HOST_ID");
if (storedRoom && storedHost) {
  record({ rehost: Number(storedRoom) });
  socket.emit("room/rehost", { room_id: Number(storedRoom), user_id: Number(storedHost) });
}
