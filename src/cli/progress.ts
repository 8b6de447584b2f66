// Progress reporting for long phases. On a terminal: one redrawn line with a bar, rate and ETA.
// Elsewhere (CI logs, pipes): a line every ~10%. Silent when the command prints --json, so
// stdout stays machine-readable; progress then goes nowhere.
export interface ProgressOptions {
  /** Unit shown after the rate, e.g. "tok" gives "123 tok/s". */
  unit?: string;
  /** Write target; default process.stderr. */
  stream?: NodeJS.WriteStream;
  silent?: boolean;
  /** Amount already done before this process started (a resumed phase): shown, not counted in the rate. */
  from?: number;
  /** Shown only on a terminal, and wiped when the phase ends (clear()): for checks whose result is the next line. */
  transient?: boolean;
}

export class Progress {
  private readonly start = Date.now();
  private done = 0;
  private lastPrintedPct = -1;
  private lastDraw = 0;
  private extra = '';
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private finished = false;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly opts: ProgressOptions = {},
  ) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = Boolean(this.stream.isTTY);
    this.done = opts.from ?? 0;
  }

  /** Sets the absolute amount done; `extra` is a short status such as "reward 0.42". */
  update(done: number, extra?: string): void {
    this.done = Math.min(done, this.total);
    if (extra !== undefined) this.extra = extra;
    this.render(false);
  }

  tick(n = 1, extra?: string): void {
    this.update(this.done + n, extra);
  }

  finish(extra?: string): void {
    this.end(this.total, extra);
  }

  /** Ends the phase short of its total (it was stopped), with the amount done. */
  halt(extra?: string): void {
    this.end(this.done, extra);
  }

  private end(done: number, extra?: string): void {
    if (this.finished) return;
    if (extra !== undefined) this.extra = extra;
    this.done = done;
    this.render(true);
    this.finished = true;
  }

  /** Wipes a transient bar's line. */
  clear(): void {
    this.finished = true;
    if (this.tty && !this.opts.silent && this.lastDraw) this.stream.write('\r\x1b[2K');
  }

  /** Elapsed seconds since the phase started. */
  get seconds(): number {
    return (Date.now() - this.start) / 1000;
  }

  private render(final: boolean): void {
    if (this.opts.silent || (this.opts.transient && !this.tty) || this.finished) return;
    const now = Date.now();
    const pct = this.total > 0 ? Math.floor((100 * this.done) / this.total) : 100;
    const secs = Math.max((now - this.start) / 1000, 1e-3);
    const rate = (this.done - (this.opts.from ?? 0)) / secs;
    // Nothing done yet gives no rate to go by: '?' rather than a made-up 0 s.
    const eta = this.done >= this.total ? 0 : rate > 0 ? (this.total - this.done) / rate : NaN;
    const unit = this.opts.unit ?? 'it';
    const stats = `${this.done}/${this.total} ${formatRate(rate)} ${unit}/s ${final ? `in ${formatDuration(secs)}` : `ETA ${formatDuration(eta)}`}${this.extra ? `  ${this.extra}` : ''}`;
    if (this.tty) {
      if (!final && now - this.lastDraw < 100) return;
      this.lastDraw = now;
      const width = 24;
      const filled = Math.round((width * pct) / 100);
      const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
      this.stream.write(`\r\x1b[2K${this.label} ${bar} ${String(pct).padStart(3)}% ${stats}${final ? '\n' : ''}`);
    } else if (final || (pct >= this.lastPrintedPct + 10 && pct < 100)) {
      this.lastPrintedPct = pct;
      this.stream.write(`${this.label} ${String(pct).padStart(3)}% ${stats}\n`);
    }
  }
}

export function formatRate(r: number): string {
  if (r >= 100) return r.toFixed(0);
  if (r >= 10) return r.toFixed(1);
  return r.toFixed(2);
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
