// Node `ws` broadcast peer: the broadcast example from the ws README, with
// one client set per room. Every text frame a client sends goes to every
// open client of its room, the sender included. Room = request path + query.
// Usage: node node_ws_server.js PORT
"use strict";
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.argv[2] || process.env.PORT || 9002);
const rooms = new Map(); // room -> Set of clients

const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
wss.on("connection", (ws, req) => {
  const room = req.url || "/";
  let set = rooms.get(room);
  if (!set) rooms.set(room, (set = new Set()));
  set.add(ws);
  ws.on("error", () => {});
  ws.on("message", (data, isBinary) => {
    for (const client of set) {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    }
  });
  ws.on("close", () => {
    set.delete(ws);
    if (set.size === 0 && rooms.get(room) === set) rooms.delete(room);
  });
});
wss.on("listening", () => {
  const v = require("ws/package.json").version;
  console.error(`node ${process.version} ws ${v} broadcast peer on ws://127.0.0.1:${port}/`);
});
