// Bun WebSocket pub/sub broadcast peer (uWebSockets inside Bun).
// Every text frame a client sends is published to every client of its room,
// the sender included. Room = request path + query ("/ws" for the one-room
// benchmarks; chatload --raw --rooms K adds "?room=rN").
// Usage: bun bun_server.js PORT
// With TLS_CERT and TLS_KEY (PEM file paths) in the environment it serves
// wss:// instead (bench/compare.sh S2aTLS), on Bun's own TLS (BoringSSL).
const port = Number(process.argv[2] || process.env.PORT || 9001);
const tls = process.env.TLS_CERT && process.env.TLS_KEY
  ? { cert: Bun.file(process.env.TLS_CERT), key: Bun.file(process.env.TLS_KEY) }
  : undefined;

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  ...(tls ? { tls } : {}),
  fetch(req, srv) {
    const u = new URL(req.url);
    if (srv.upgrade(req, { data: { room: u.pathname + u.search } })) return;
    return new Response("websocket only\n", { status: 400 });
  },
  websocket: {
    // Bun's defaults otherwise (backpressureLimit 16 MiB,
    // closeOnBackpressureLimit false, no compression): what a user gets.
    open(ws) {
      ws.subscribe(ws.data.room);
    },
    message(ws, msg) {
      // server.publish reaches every subscriber, the sender included
      // (ws.publish would skip the sender).
      server.publish(ws.data.room, msg);
    },
    close(ws) {
      ws.unsubscribe(ws.data.room);
    },
  },
});
console.error(`bun ${Bun.version} broadcast peer on ${tls ? "wss" : "ws"}://127.0.0.1:${server.port}/`);
