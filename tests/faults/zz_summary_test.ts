/**
 * Runs last (test files run in name order): scans everything the suite
 * captured for the devices' secrets, prints the summary table, and writes
 * it to tests/faults/results.latest.json.
 */
import { API_LIMITS } from "../../lib/api_server.ts";
import { MAX_FRAME_BYTES } from "../../lib/protocol.ts";
import {
  ALL_SECRETS,
  FLAT_TOLERANCE,
  readLedger,
  RUN_DIR,
  type ScenarioRecord,
  secretsIn,
  SOAK,
} from "./harness.ts";

const RESULTS = new URL("./results.latest.json", import.meta.url).pathname;

function pad(text: string | number, width: number, right = false): string {
  const value = String(text);
  const cut = value.length > width ? value.slice(0, width - 1) + "…" : value;
  return right ? cut.padStart(width) : cut.padEnd(width);
}

function table(records: ScenarioRecord[]): string {
  const header = `${pad("group", 11)} ${pad("scenario", 62)} ${pad("faults", 7, true)} ` +
    `${pad("survived", 8, true)} ${pad("mismatch", 8, true)} ${pad("wrong ms", 8, true)} ` +
    `${pad("secs", 6, true)}  ok`;
  const rows = records.map((r) =>
    `${pad(r.group, 11)} ${pad(r.scenario, 62)} ${pad(r.faults_injected, 7, true)} ` +
    `${pad(r.faults_survived, 8, true)} ${pad(r.mismatches, 8, true)} ` +
    `${pad(r.max_wrong_state_ms ?? "-", 8, true)} ${
      pad((r.duration_ms / 1000).toFixed(1), 6, true)
    }` +
    `  ${r.passed ? "yes" : "NO"}`
  );
  return [header, "-".repeat(header.length), ...rows].join("\n");
}

/** The measured resource figures, one line per scenario that has them. */
function figures(records: ScenarioRecord[]): string[] {
  const lines: string[] = [];
  for (const r of records) {
    const keys = Object.keys(r.figures).filter((k) => /(fds|rss|heap)_(start|end)/.test(k));
    if (keys.length === 0) continue;
    const prefixes = [...new Set(keys.map((k) => k.replace(/(fds|rss|heap)_(start|end).*$/, "")))];
    for (const prefix of prefixes) {
      const f = (name: string) => r.figures[`${prefix}${name}`];
      const parts = [`fds ${f("fds_start")} -> ${f("fds_end")}`];
      if (f("rss_start_kib") !== undefined) {
        parts.push(
          `RSS ${(Number(f("rss_start_kib")) / 1024).toFixed(1)} -> ` +
            `${(Number(f("rss_end_kib")) / 1024).toFixed(1)} MiB`,
        );
      }
      if (f("heap_start_kib") !== undefined) {
        parts.push(`heap after GC ${f("heap_start_kib")} -> ${f("heap_end_kib")} KiB`);
      }
      lines.push(
        `  ${pad(r.scenario, 50)} ${pad(prefix.replace(/_$/, "") || "-", 3)} ${parts.join(", ")}`,
      );
    }
  }
  return lines;
}

Deno.test({
  name: "[summary] secret scan, summary table, results.latest.json",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const records = readLedger();
    let captured = "";
    try {
      captured = await Deno.readTextFile(`${RUN_DIR}/captured.txt`);
    } catch {
      // nothing captured (only the summary ran)
    }
    const leaks = secretsIn(captured);
    const leakContext = leaks.map((secret) => {
      const at = captured.indexOf(secret);
      const head = captured.lastIndexOf("\n=====", at);
      return captured.slice(head, captured.indexOf("\n", head + 1));
    });
    const totals = {
      scenarios: records.length,
      scenarios_passed: records.filter((r) => r.passed).length,
      faults_injected: records.reduce((n, r) => n + r.faults_injected, 0),
      faults_survived: records.reduce((n, r) => n + r.faults_survived, 0),
      mismatches: records.reduce((n, r) => n + r.mismatches, 0),
      max_wrong_state_ms: Math.max(0, ...records.map((r) => r.max_wrong_state_ms ?? 0)),
    };
    const result = {
      generated_at: new Date().toISOString(),
      soak: SOAK,
      deno: Deno.version.deno,
      cpus: navigator.hardwareConcurrency,
      totals,
      secret_scan: {
        secrets_searched: ALL_SECRETS.length,
        bytes_scanned: captured.length,
        leaks: leakContext,
      },
      flat_tolerance: FLAT_TOLERANCE,
      caps: {
        device_frame_bytes: MAX_FRAME_BYTES,
        socket_line_bytes: API_LIMITS.maxLineBytes,
        socket_queue_bytes: API_LIMITS.maxQueuedBytes,
        socket_clients: API_LIMITS.maxClients,
      },
      scenarios: records,
    };
    console.log(`\nFault-injection suite${SOAK ? " (soak)" : ""}: ${records.length} scenarios\n`);
    console.log(table(records));
    console.log(
      `\ntotal: ${totals.faults_injected} faults injected, ${totals.faults_survived} survived, ` +
        `${totals.mismatches} desired-state mismatches, max wrong state after recovery ` +
        `${totals.max_wrong_state_ms} ms`,
    );
    const resourceLines = figures(records);
    if (resourceLines.length > 0) {
      console.log(`\nresources (start -> end):\n${resourceLines.join("\n")}`);
    }
    console.log(
      `\nsecret scan: ${ALL_SECRETS.length} secrets in ${captured.length} bytes of captured ` +
        `output and status: ${leaks.length === 0 ? "none found" : leakContext.join("; ")}`,
    );
    await Deno.writeTextFile(RESULTS, JSON.stringify(result, null, 2) + "\n");
    console.log(`written ${RESULTS}`);
    const clean = leaks.length === 0 && totals.scenarios_passed === totals.scenarios;
    if (clean) await Deno.remove(RUN_DIR, { recursive: true }).catch(() => {});
    else console.log(`captured output kept in ${RUN_DIR}`);

    if (records.length === 0) throw new Error("no scenario records: did the scenarios run?");
    if (leaks.length > 0) throw new Error(`secrets leaked: ${leakContext.join("; ")}`);
    if (totals.mismatches > 0) throw new Error(`${totals.mismatches} desired-state mismatches`);
    if (totals.scenarios_passed !== totals.scenarios) {
      throw new Error(`${totals.scenarios - totals.scenarios_passed} scenarios failed`);
    }
  },
});
