// A viewer built on the third-party Node.js `ws` client, driven by
// test_ws_clients.py: `node ws_client.mjs URL [SUBPROTOCOL]`.
//
// Prints one JSON object per line on stdout for each event:
//   {"event":"open","protocol":P}                 handshake done, P the chosen subprotocol
//   {"event":"message","binary":false,"data":S}   a message (text as a string)
//   {"event":"ping","data":HEX} / {"event":"pong","data":HEX}
//   {"event":"close","code":C,"reason":R}         the close handshake finished
//   {"event":"error","message":M}                 anything ws rejected
// Reads commands, one JSON object per line, on stdin:
//   {"cmd":"send","data":S}                       a text message
//   {"cmd":"ping","data":HEX}                     a ping frame with that payload
//   {"cmd":"close","code":C,"reason":R}           start the close handshake
// Exits when the connection is closed. `ws` lives in ./node (npm ci there).
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const require = createRequire(new URL("./node/package.json", import.meta.url));
const WebSocket = require("ws");

const [url, subprotocol = "danmaku.v1"] = process.argv.slice(2);
if (!url) {
    process.stderr.write("usage: node ws_client.mjs URL [SUBPROTOCOL]\n");
    process.exit(2);
}

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

// ws validates the server side strictly: Sec-WebSocket-Accept, a
// subprotocol it offered, unmasked frames, RSV bits, UTF-8 of text frames
// and close reasons, close codes. maxPayload bounds what it accepts.
const ws = new WebSocket(url, [subprotocol], {
    handshakeTimeout: 10000,
    maxPayload: 1 << 20,
    perMessageDeflate: false,
});

ws.on("open", () => emit({ event: "open", protocol: ws.protocol }));
ws.on("message", (data, isBinary) =>
    emit({ event: "message", binary: isBinary, data: isBinary ? data.toString("hex") : data.toString("utf8") }));
ws.on("ping", (data) => emit({ event: "ping", data: data.toString("hex") })); // ws answers it
ws.on("pong", (data) => emit({ event: "pong", data: data.toString("hex") }));
ws.on("error", (err) => emit({ event: "error", message: String(err && err.message) }));
ws.on("unexpected-response", (req, res) => {
    emit({ event: "error", message: `unexpected response ${res.statusCode}` });
    req.destroy();
});
ws.on("close", (code, reason) => {
    emit({ event: "close", code, reason: reason.toString("utf8") });
    process.exit(0);
});

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    if (cmd.cmd === "send") ws.send(cmd.data);
    else if (cmd.cmd === "ping") ws.ping(Buffer.from(cmd.data, "hex"));
    else if (cmd.cmd === "close") ws.close(cmd.code, cmd.reason);
    else emit({ event: "error", message: `unknown command ${cmd.cmd}` });
});
// Standard input closed by the test: terminate whatever state we are in.
rl.on("close", () => {
    if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
});
