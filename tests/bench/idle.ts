/**
 * The bare-Deno baseline of the footprint benchmark: a process that does
 * nothing but wake once a second. `--once` exits at once (cache warm-up).
 */
if (Deno.args.includes("--once")) Deno.exit(0);
setInterval(() => {}, 1000);
console.log("idle ready");
