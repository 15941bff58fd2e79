/**
 * Command-line options, parsed as `parseArgs` of `node:util` does in strict
 * mode (same results, same error messages) for the option kinds the CLI
 * uses: `--name value`, `--name=value`, booleans, `-h`, positionals, `--`
 * and defaults. Hand-written because importing `node:util` costs the long-running
 * `run` process about 1.5 MiB of memory.
 *
 * @module
 */

/** One option: a string that takes a value, or a boolean flag; `short` is its one-letter alias. */
export interface OptionSpec {
  /** `string` takes a value (`--name value` or `--name=value`); `boolean` takes none. */
  type: "string" | "boolean";
  /** A one-letter alias, e.g. `h` for `-h`. */
  short?: string;
  /** The value when the option is not given. */
  default?: string | boolean;
}

/** What {@link parseArgv} found. */
export interface ParsedArgv {
  /** The value of every option given (the last one wins); `true` for a boolean. */
  values: Record<string, string | boolean | undefined>;
  /** The arguments that are not options, in order. */
  positionals: string[];
}

/** A malformed command line; the message is the one `node:util` `parseArgs` gives. */
export class ArgvError extends TypeError {}

interface Token {
  name: string;
  rawName: string;
  value: string | undefined;
  inline: boolean;
}

/**
 * Parses `args` against `options`; throws {@link ArgvError} on an unknown
 * option, a missing or unexpected value, an option-like value, or a
 * positional argument when `allowPositionals` is false.
 */
export function parseArgv(
  args: string[],
  options: Record<string, OptionSpec>,
  allowPositionals: boolean,
): ParsedArgv {
  const spec = (name: string) => Object.hasOwn(options, name) ? options[name] : undefined;
  const longFor = (short: string) =>
    Object.keys(options).find((name) => options[name].short === short) ?? short;
  const values: Record<string, string | boolean | undefined> = {};
  const positionals: string[] = [];
  const option = (token: Token) => {
    const found = spec(token.name);
    if (found === undefined) throw new ArgvError(`Unknown option '${token.rawName}'`);
    const both = found.short ? `-${found.short}, --${token.name}` : `--${token.name}`;
    if (found.type === "string" && token.value === undefined) {
      throw new ArgvError(`Option '${both} <value>' argument missing`);
    }
    if (found.type === "boolean" && token.value !== undefined) {
      throw new ArgvError(`Option '${both}' does not take an argument`);
    }
    if (!token.inline && token.value !== undefined && isOptionLike(token.value)) {
      const example = token.rawName.startsWith("--")
        ? `'--${token.name}=-XYZ'`
        : `'--${token.name}=-XYZ' or '${token.rawName}-XYZ'`;
      throw new ArgvError(
        `Option '${token.rawName}' argument is ambiguous.\n` +
          `Did you forget to specify the option argument for '${token.rawName}'?\n` +
          `To specify an option argument starting with a dash use ${example}.`,
      );
    }
    values[token.name] = token.value ?? true;
  };
  const positional = (value: string) => {
    if (!allowPositionals) {
      throw new ArgvError(
        `Unexpected argument '${value}'. This command does not take positional arguments`,
      );
    }
    positionals.push(value);
  };
  const remaining = [...args];
  // `-x` or `--name`: a string option takes the next argument as its value.
  const separate = (name: string, rawName: string) => {
    const takesValue = spec(name)?.type === "string" && remaining.length > 0;
    option({ name, rawName, value: takesValue ? remaining.shift() : undefined, inline: false });
  };
  while (remaining.length > 0) {
    const arg = remaining.shift()!;
    if (arg === "--") {
      remaining.splice(0).forEach(positional);
    } else if (arg.length === 2 && arg[0] === "-" && arg[1] !== "-") {
      separate(longFor(arg[1]), arg);
    } else if (arg.length > 2 && arg[0] === "-" && arg[1] !== "-") {
      const first = longFor(arg[1]);
      if (spec(first)?.type === "string") {
        option({ name: first, rawName: `-${arg[1]}`, value: arg.slice(2), inline: true });
      } else {
        remaining.unshift(...expandGroup(arg, (short) => spec(longFor(short))?.type));
      }
    } else if (arg.length > 2 && arg.startsWith("--")) {
      const equals = arg.indexOf("=", 3);
      if (equals === -1) {
        separate(arg.slice(2), arg);
      } else {
        const name = arg.slice(2, equals);
        option({ name, rawName: `--${name}`, value: arg.slice(equals + 1), inline: true });
      }
    } else {
      positional(arg);
    }
  }
  for (const [name, { default: value }] of Object.entries(options)) {
    if (value !== undefined && values[name] === undefined) values[name] = value;
  }
  return { values, positionals };
}

/** `-abc` as `-a -b -c`; a string option inside takes the rest as its value (`-afFILE`). */
function expandGroup(arg: string, typeOf: (short: string) => string | undefined): string[] {
  const expanded: string[] = [];
  for (let index = 1; index < arg.length; index++) {
    if (typeOf(arg[index]) !== "string" || index === arg.length - 1) {
      expanded.push(`-${arg[index]}`);
    } else {
      expanded.push(`-${arg.slice(index)}`);
      break;
    }
  }
  return expanded;
}

function isOptionLike(value: string): boolean {
  return value.length > 1 && value[0] === "-";
}
