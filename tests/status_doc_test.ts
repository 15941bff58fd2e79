/** The README's status object names exactly the fields the bridge serves. */
import assert from "node:assert/strict";
import { initialState } from "../lib/core.ts";
import { buildStatus } from "../lib/status.ts";

const readme = Deno.readTextFileSync(new URL("../README.md", import.meta.url));
const section = readme.slice(readme.indexOf("### Status object"), readme.indexOf("### Limits"));

/** `a`, `a.b`, ... for every key of a JSON value, nested objects included. */
function paths(value: unknown, prefix = ""): string[] {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [];
  return Object.entries(value).flatMap(([key, inner]) => [
    prefix + key,
    ...paths(inner, `${prefix}${key}.`),
  ]);
}

Deno.test("README status object: its example and its list name only real fields, and every one", () => {
  const facts = { url: "ws://d/ws", startedIso: "s", connectedIso: null, logWriteFailures: 0 };
  const off = buildStatus(initialState(), 0, facts);
  const leased = buildStatus(initialState({ heatMode: "drying-lease" }), 0, facts);
  const served = new Set([...paths(off), ...paths(leased)]);
  const example = JSON.parse(section.match(/```json\n([\s\S]*?)```/)![1]);
  for (const path of paths(example)) assert.ok(served.has(path), `README example: ${path}`);
  const listed = section.slice(section.indexOf("```", section.indexOf("```json") + 3));
  for (const key of Object.keys(leased)) {
    assert.match(listed, new RegExp(`\`${key}\``), `README does not explain ${key}`);
  }
});
