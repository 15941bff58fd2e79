/**
 * Per-process figures from Linux procfs for the tests and the benchmarks:
 * resident memory, CPU time and context switches of a whole process (every
 * thread), open file descriptors and sockets, liveness.
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
  /** Voluntary context switches (waits) per second, all threads. */
  voluntaryPerS: number;
  /** Involuntary context switches (preemptions) per second, all threads. */
  nonvoluntaryPerS: number;
}

/** Accumulates a process's CPU time and context switches over every thread. */
export class ProcMonitor {
  /** The process watched. */
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

/** Open file descriptors of `pid`. */
export function fdCount(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** Resident set size of `pid` in KiB. */
export function rssKiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]);
}

/** Whether `pid` is alive (and not a zombie). */
export function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Socket inodes held by `pid`. */
export function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const target = Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`);
      const match = /^socket:\[(\d+)\]$/.exec(target);
      if (match) inodes.add(match[1]);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

/** One row of /proc/net/{tcp,tcp6,udp,udp6} that belongs to a given process. */
export interface InetSocket {
  /** The /proc/net table it was found in: tcp, tcp6, udp or udp6. */
  table: string;
  /** Hex address:port as in /proc/net (e.g. 0100007F:1F90). */
  local: string;
  /** Hex address:port of the peer (zeros when not connected). */
  remote: string;
  /** TCP state in hex: 0A = LISTEN, 01 = ESTABLISHED; UDP 07 = unconnected. */
  state: string;
  /** The socket's inode, as in /proc/PID/fd links. */
  inode: string;
}

/** The TCP/UDP sockets of `pid`, from /proc/<pid>/net/* matched by inode. */
export function inetSockets(pid: number): InetSocket[] {
  const inodes = socketInodes(pid);
  const found: InetSocket[] = [];
  for (const table of ["tcp", "tcp6", "udp", "udp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/net/${table}`);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      if (inodes.has(cols[9])) {
        found.push({ table, local: cols[1], remote: cols[2], state: cols[3], inode: cols[9] });
      }
    }
  }
  return found;
}

/** A series of fd/RSS samples of one process. */
export class ResourceSampler {
  /** The process sampled. */
  readonly pid: number;
  /** Every sample: `performance.now()`, open fds, RSS in KiB. */
  readonly samples: { at: number; fds: number; rssKiB: number }[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;

  /** A sampler of `pid` (no samples yet). */
  constructor(pid: number) {
    this.pid = pid;
  }

  /** Takes one sample now. */
  sample(): { fds: number; rssKiB: number } {
    const sample = { at: performance.now(), fds: fdCount(this.pid), rssKiB: rssKiB(this.pid) };
    this.samples.push(sample);
    return sample;
  }

  /** Samples every `intervalMs` until {@link stop}. */
  start(intervalMs: number): void {
    this.#timer = setInterval(() => {
      try {
        this.sample();
      } catch {
        // the process ended; the scenario notices
      }
    }, intervalMs);
  }

  /** Stops the periodic sampling. */
  stop(): void {
    clearInterval(this.#timer);
  }

  /** RSS in MiB at 0, 25, 50, 75 and 100 % of the samples, e.g. "49.1/50.2/51.0/51.3/51.4". */
  rssTrend(): string {
    if (this.samples.length === 0) return "";
    const at = (q: number) => this.samples[Math.round(q * (this.samples.length - 1))].rssKiB;
    return [0, 0.25, 0.5, 0.75, 1].map((q) => (at(q) / 1024).toFixed(1)).join("/");
  }

  /** Peak values over all samples. */
  peak(): { fds: number; rssKiB: number } {
    return {
      fds: Math.max(...this.samples.map((s) => s.fds)),
      rssKiB: Math.max(...this.samples.map((s) => s.rssKiB)),
    };
  }
}
