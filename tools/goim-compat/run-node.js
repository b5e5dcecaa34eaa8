// Runs goim's examples/javascript/client.js (unchanged, beside this file) under plain Node:
// the DOM calls it makes are stubbed, and its hard-coded server is replaced by GOIM_URL.
// Every line the page would show is printed as "[box] ..." or "[status] ...".
// Node 20 needs --experimental-websocket; Node 22 has WebSocket built in.
const fs = require('fs');
const vm = require('vm');
const url = process.env.GOIM_URL;
if (!url) throw new Error('GOIM_URL is required');
if (typeof WebSocket === 'undefined') {
  console.error('no WebSocket in this Node: use Node 22, or 20 with --experimental-websocket');
  process.exit(2);
}
const line = (what, text) => process.stdout.write(`[${what}] ${text}\n`);
const box = { appendChild(span) { line('box', span.text); } };
const status = { set innerHTML(v) { line('status', v); } };
globalThis.window = globalThis;
globalThis.document = {
  createElement: () => ({ text: '', appendChild(t) { this.text += t.data; } }),
  createTextNode: (data) => ({ data }),
  getElementById: (id) => ({ box, status }[id]),
};
console.log = () => {}; // the client's own debug output
const source = fs.readFileSync(__dirname + '/client.js', 'utf8')
  .replace("'ws://sh.tony.wiki:3102/sub'", JSON.stringify(url));
vm.runInThisContext(source, { filename: 'client.js' });
// What goim's index.html runs.
new MyClient({ notify: function () {} });
setTimeout(() => process.exit(0), +(process.env.RUN_SECONDS || 20) * 1000);
