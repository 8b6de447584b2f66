// How commands talk to the user: human text on stdout, or one JSON document with --json.
export interface OutputMode {
  json: boolean;
}

/** Set once stdout's reader has gone (EPIPE: `train | head`); the stream itself does not say so reliably. */
let stdoutGone = false;

export function stdoutWentAway(): void {
  stdoutGone = true;
}

export function say(mode: OutputMode, line: string): void {
  if (mode.json) return;
  // What is left to say once the reader went away, such as how to resume the run that stopped
  // for it, goes to stderr rather than nowhere.
  (stdoutGone ? process.stderr : process.stdout).write(line + '\n');
}

export function emitJson(mode: OutputMode, value: unknown): void {
  if (mode.json) process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Fixed-width table for terminal summaries. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

/** A path or value as a POSIX shell reads it back: commands we print are meant to be pasted. */
export function shellArg(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
