// Flag values as typed, checked before yargs converts them: it turns a number flag's 'abc' into
// NaN and '' into 0, and a flag given without its value into a default or an empty string,
// which commands would then take for "not given" (`train --model` ran the demo model).
import { RrrError } from '../engine/errors.js';

export interface FlagKinds {
  number: readonly string[];
  string: readonly string[];
  /** Flags with a list of values (--device auto|cpu|cuda): they too take a value. */
  choices: Readonly<Record<string, unknown>>;
  /** Flags that take several values (bench --parallel 1 16 64), and so may repeat. */
  array: readonly string[];
  /** Switches: --json, --no-json, --json=true, --json=false. */
  boolean: readonly string[];
}

/** What yargs takes as a value though it starts with '-'; anything else it reads as short flags. */
const NEGATIVE = /^-([0-9]+(\.[0-9]+)?|\.[0-9]+)$/;

/** yargs also takes --maxAnswerTokens for --max-answer-tokens. */
const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

export function checkFlagTexts(argv: readonly string[], kinds: FlagKinds): void {
  const takesValue = (f: string) => kinds.number.includes(f) || kinds.string.includes(f) || f in kinds.choices;
  const given = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--') {
      // yargs would drop what follows without a word; no command takes arguments there.
      if (i + 1 < argv.length) throw new RrrError(`'${argv[i + 1]}': nothing is read after '--'; give flags before it`);
      break;
    }
    const m = /^--([^=]+)(?:=(.*))?$/s.exec(argv[i]!);
    if (!m) continue;
    const [name, inline] = [kebab(m[1]!), m[2]];
    // yargs reads --json=yes as false.
    if (inline !== undefined && kinds.boolean.includes(name) && inline !== 'true' && inline !== 'false') {
      throw new RrrError(`--${name}: a switch; give it alone, or =true or =false (got '${inline}')`);
    }
    const isNumber = kinds.number.includes(name);
    if (name.startsWith('no-') && takesValue(name.slice(3))) throw new RrrError(`--${name}: --${name.slice(3)} takes a value, not a negation`);
    if (!takesValue(name)) continue;
    // yargs reads a following flag as the next flag, not as this one's value.
    const text = inline ?? (argv[i + 1]?.startsWith('--') ? undefined : argv[i + 1]);
    if (text === undefined) throw new RrrError(`--${name}: expected ${isNumber ? 'a number' : 'a value'} after it`);
    if (inline === undefined && text.startsWith('-') && !NEGATIVE.test(text)) {
      throw new RrrError(`--${name}: '${text}' would be read as short flags; write --${name}=${text}`);
    }
    if (text.trim() === '') throw new RrrError(`--${name}: expected ${isNumber ? 'a number' : 'a value'}, got an empty one`);
    if (isNumber && Number.isNaN(Number(text))) throw new RrrError(`--${name}: expected a number, got '${text}'`);
    given.set(name, [...(given.get(name) ?? []), text]);
  }
  // yargs would pass a repeated flag on as a list, which a one-value flag cannot take.
  for (const [name, texts] of given) {
    if (texts.length > 1 && !kinds.array.includes(name)) throw new RrrError(`--${name}: given ${texts.length} times (${texts.join(', ')}); give it once`);
  }
}
