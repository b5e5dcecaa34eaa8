// A goim client over WebSocket on the `ws` npm package, which offers permessage-deflate
// (RFC 7692) as browsers do: `permessage-deflate; client_max_window_bits`. Used by
// starling/tests/ws_deflate_js.rs. Prints one JSON line per event: the upgrade's
// Sec-WebSocket-Extensions answer, what ws agreed to, and every goim packet received (op 9
// batches unwrapped), bodies as UTF-8. It authenticates with TOKEN, sends a heartbeat after
// the auth reply, and with threshold 0 compresses everything it sends. Each packet line has
// `read`: the bytes the socket had read by then (ws does not tell whether a message came
// compressed; the bytes it took do).
//   WS_URL=ws://host:port/sub TOKEN='{"mid":1,...}' DEFLATE=1|0 node client.js
// For wss://, CA names a PEM certificate to trust, issued for `localhost`.
const fs = require('fs');
const WebSocket = require('ws');

const url = process.env.WS_URL;
const token = process.env.TOKEN || '{}';
const deflate = process.env.DEFLATE !== '0';
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

// goim's packet: packLen u32, headerLen u16 (16), ver u16, op u32, seq u32, body.
function packet(op, seq, body) {
  const b = Buffer.from(body || '');
  const h = Buffer.alloc(16);
  h.writeUInt32BE(16 + b.length, 0);
  h.writeUInt16BE(16, 4);
  h.writeUInt16BE(1, 6);
  h.writeUInt32BE(op, 8);
  h.writeUInt32BE(seq, 12);
  return Buffer.concat([h, b]);
}

function* packets(buf) {
  let pos = 0;
  while (pos + 16 <= buf.length) {
    const len = buf.readUInt32BE(pos);
    const head = buf.readUInt16BE(pos + 4);
    yield {
      op: buf.readUInt32BE(pos + 8),
      seq: buf.readUInt32BE(pos + 12),
      body: buf.subarray(pos + head, pos + len),
    };
    pos += len;
  }
}

const options = { perMessageDeflate: deflate ? { threshold: 0 } : false };
if (process.env.CA) {
  options.ca = fs.readFileSync(process.env.CA);
  options.servername = 'localhost';
}
const ws = new WebSocket(url, options);
ws.on('upgrade', (res) =>
  out({ event: 'upgrade', extensions: res.headers['sec-websocket-extensions'] || null }));
ws.on('open', () => {
  out({ event: 'open', agreed: ws.extensions || '' });
  ws.send(packet(7, 1, token));
});
ws.on('message', (data) => {
  for (const p of packets(Buffer.from(data))) {
    const inner = p.op === 9 ? [...packets(p.body)] : [p];
    const read = ws._socket ? ws._socket.bytesRead : null;
    for (const q of inner) {
      out({ event: 'packet', op: q.op, seq: q.seq, body: q.body.toString(), read });
    }
    if (p.op === 8) ws.send(packet(2, 2, ''));
  }
});
ws.on('close', (code) => { out({ event: 'close', code }); process.exit(0); });
ws.on('error', (e) => { out({ event: 'error', message: String(e.message) }); process.exit(1); });
setTimeout(() => process.exit(0), +(process.env.RUN_SECONDS || 30) * 1000);
