/**
 * The bare-Deno reference of the reconnect-memory benchmark: the same
 * WebSocket churn as the bridge under a flapping device (connect, take the
 * frames, reconnect 2–10 ms after the device closed) and nothing else: no
 * parsing, no status, no logging, no Unix socket.
 *
 * Usage: deno run -P=bridge reconnect_floor.ts --host HOST:PORT
 * `--once` exits at once (cache warm-up).
 */
if (Deno.args.includes("--once")) Deno.exit(0);

const index = Deno.args.indexOf("--host");
if (index === -1 || index + 1 >= Deno.args.length) throw new Error("missing --host");
const url = `ws://${Deno.args[index + 1]}/ws`;

let frames = 0;
function connect(): void {
  const ws = new WebSocket(url);
  ws.onmessage = () => frames++;
  ws.onerror = () => {};
  ws.onclose = () => setTimeout(connect, 4 + Math.random() * 4);
}
connect();
console.log("reconnect floor ready");
