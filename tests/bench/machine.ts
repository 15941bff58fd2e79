/** The machine a bench ran on, as results.json records it. */

/** CPU, cores, memory, kernel, Deno/V8/TypeScript and Python versions, and the date. */
export async function describeMachine(): Promise<Record<string, unknown>> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ??
    /^Model\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  let python = "unknown";
  try {
    const out = await new Deno.Command(Deno.env.get("PYTHON") ?? "python3", {
      args: ["--version"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    python = new TextDecoder().decode(out.stdout).trim().replace(/^Python /, "");
  } catch {
    // Reported as unknown.
  }
  return {
    cpu_model: model,
    cores: navigator.hardwareConcurrency,
    virtualized: /^flags\s*:.*\bhypervisor\b/m.test(cpuinfo),
    memory_mib: Math.round(memKb / 1024),
    os: Deno.build.os,
    arch: Deno.build.arch,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    python,
    date: new Date().toISOString(),
  };
}
