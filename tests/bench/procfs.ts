/**
 * Per-process figures from Linux procfs: CPU time, resident memory and
 * context switches of a whole process (every thread).
 *
 * /proc/PID/status counts context switches per thread, and a thread that
 * exits takes its counts with it (Deno's blocking-pool threads come and go),
 * so {@link ProcMonitor} reads every thread periodically and adds up each
 * thread's increments; CPU is also read from /proc/PID/stat, which keeps the
 * time of exited threads but only in clock ticks.
 */

/** One reading of a process's memory. */
export interface ProcSample {
  /** `performance.now()` of the reading, ms. */
  at: number;
  /** utime+stime from /proc/PID/stat, clock ticks (whole process, exited threads included). */
  cpuTicks: number;
  /** VmRSS, KiB. */
  rssKb: number;
  /** RssAnon (private memory: heaps, stacks), KiB. */
  rssAnonKb: number;
  /** RssFile (mapped files, mostly the Deno executable's code; shared, reclaimable), KiB. */
  rssFileKb: number;
  /** VmHWM (peak RSS), KiB. */
  hwmKb: number;
  /** Threads. */
  threads: number;
}

function statusField(text: string, name: string): number {
  const match = new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(text);
  return match ? Number(match[1]) : 0;
}

/** Reads `pid` now; throws when the process is gone. */
export function sampleProc(pid: number): ProcSample {
  const at = performance.now();
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return {
    at,
    cpuTicks: Number(fields[11]) + Number(fields[12]),
    rssKb: statusField(status, "VmRSS"),
    rssAnonKb: statusField(status, "RssAnon"),
    rssFileKb: statusField(status, "RssFile"),
    hwmKb: statusField(status, "VmHWM"),
    threads: statusField(status, "Threads"),
  };
}

interface ThreadCounts {
  cpuNs: number;
  voluntary: number;
  nonvoluntary: number;
}

function readThreads(pid: number): Map<string, ThreadCounts> {
  const threads = new Map<string, ThreadCounts>();
  for (const entry of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/task/${entry.name}/status`);
      const schedstat = Deno.readTextFileSync(`/proc/${pid}/task/${entry.name}/schedstat`);
      threads.set(entry.name, {
        cpuNs: Number(schedstat.split(" ")[0]),
        voluntary: statusField(status, "voluntary_ctxt_switches"),
        nonvoluntary: statusField(status, "nonvoluntary_ctxt_switches"),
      });
    } catch {
      // The thread exited between listing and reading.
    }
  }
  return threads;
}

/** What a process cost over a {@link ProcMonitor} window. */
export interface ProcCost {
  /** Wall time, s. */
  wallS: number;
  /** CPU time, ms (per-thread schedstat, ns resolution). */
  cpuMs: number;
  /** CPU as % of one core (schedstat). */
  cpuPercent: number;
  /** CPU as % of one core from /proc/PID/stat ticks (coarse; includes exited threads). */
  cpuPercentTicks: number;
  /** Context switches (voluntary + involuntary) per second, all threads. */
  wakeupsPerS: number;
  voluntaryPerS: number;
  nonvoluntaryPerS: number;
}

/** Accumulates a process's CPU time and context switches over every thread. */
export class ProcMonitor {
  readonly pid: number;
  #ticksPerS: number;
  #last = new Map<string, ThreadCounts>();
  #total: ThreadCounts = { cpuNs: 0, voluntary: 0, nonvoluntary: 0 };
  #startAt = 0;
  #startTicks = 0;
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Starts counting now; reads every thread every `intervalMs`. */
  constructor(pid: number, ticksPerS: number, intervalMs = 1000) {
    this.pid = pid;
    this.#ticksPerS = ticksPerS;
    this.#startAt = performance.now();
    this.#startTicks = sampleProc(pid).cpuTicks;
    this.#last = readThreads(pid);
    this.#timer = setInterval(() => this.#update(), intervalMs);
  }

  #update(): void {
    let now: Map<string, ThreadCounts>;
    try {
      now = readThreads(this.pid);
    } catch {
      return;
    }
    for (const [tid, counts] of now) {
      // A thread born during the window counts from zero.
      const before = this.#last.get(tid) ?? { cpuNs: 0, voluntary: 0, nonvoluntary: 0 };
      this.#total.cpuNs += counts.cpuNs - before.cpuNs;
      this.#total.voluntary += counts.voluntary - before.voluntary;
      this.#total.nonvoluntary += counts.nonvoluntary - before.nonvoluntary;
    }
    this.#last = now;
  }

  /** Stops and returns the cost since construction. */
  stop(): ProcCost {
    clearInterval(this.#timer);
    return this.cost();
  }

  /** The cost since construction, up to now. */
  cost(): ProcCost {
    this.#update();
    const wallS = (performance.now() - this.#startAt) / 1000;
    const ticks = sampleProc(this.pid).cpuTicks - this.#startTicks;
    const cpuMs = this.#total.cpuNs / 1e6;
    return {
      wallS,
      cpuMs,
      cpuPercent: (cpuMs / 1000 / wallS) * 100,
      cpuPercentTicks: (ticks / this.#ticksPerS / wallS) * 100,
      wakeupsPerS: (this.#total.voluntary + this.#total.nonvoluntary) / wallS,
      voluntaryPerS: this.#total.voluntary / wallS,
      nonvoluntaryPerS: this.#total.nonvoluntary / wallS,
    };
  }
}

/** Clock ticks per second (`getconf CLK_TCK`; 100 when unknown). */
export async function clockTicksPerSecond(): Promise<number> {
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output();
    const value = Number(new TextDecoder().decode(out.stdout).trim());
    return value > 0 ? value : 100;
  } catch {
    return 100;
  }
}
