// Per-step metrics as JSON lines (one object per step, appended as steps finish) and the
// run summary. On resume, lines of steps that will be redone are dropped first.
import { existsSync, readFileSync } from 'node:fs';
import { RrrError } from '../engine/errors.js';
import { appendFileOrFail, writeFileAtomic } from '../util/atomic.js';
import type { RunSummary, StepMetrics } from './types.js';

export class MetricsLog {
  constructor(readonly path: string) {}

  /** Keeps only steps < `fromStep` (what a resumed run has already done). */
  truncateFrom(fromStep: number): StepMetrics[] {
    const kept = this.read().filter((m) => m.step < fromStep);
    writeFileAtomic(this.path, kept.map((m) => JSON.stringify(m) + '\n').join(''));
    return kept;
  }

  append(m: StepMetrics): void {
    appendFileOrFail(this.path, JSON.stringify(m) + '\n');
  }

  /**
   * The steps' lines. A last line that is not a whole step is one whose append was cut short (a
   * full disk, a kill): after the last checkpoint, so redone, and dropped here.
   */
  read(): StepMetrics[] {
    if (!existsSync(this.path)) return [];
    const lines = readFileSync(this.path, 'utf8').split('\n');
    const step = (l: string): StepMetrics | undefined => {
      try {
        const m = JSON.parse(l) as StepMetrics;
        return typeof m === 'object' && m !== null && Number.isSafeInteger(m.step) ? m : undefined;
      } catch {
        return undefined;
      }
    };
    return lines.flatMap((l, i) => {
      if (!l.trim()) return [];
      const m = step(l);
      if (m) return [m];
      if (i === lines.length - 1) return [];
      throw new RrrError(`${this.path}:${i + 1}: not a step's metrics; remove the line (or the file) to go on`);
    });
  }
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

export function summarize(metrics: StepMetrics[], first: { attempted: number; correct: number }, failures: number): RunSummary {
  const q = Math.max(1, Math.floor(metrics.length / 4));
  const head = metrics.slice(0, q);
  const tail = metrics.slice(-q);
  type NumberField = { [K in keyof StepMetrics]-?: StepMetrics[K] extends number ? K : never }[keyof StepMetrics];
  const sum = (k: NumberField) => metrics.reduce((a, m) => a + m[k], 0);
  return {
    steps: metrics.length,
    firstAttempt: { ...first, accuracy: first.attempted ? first.correct / first.attempted : 0 },
    failures,
    rewardFirstQuarter: mean(head.map((m) => m.rewardMean)),
    rewardLastQuarter: mean(tail.map((m) => m.rewardMean)),
    successAfterReflectionFirstQuarter: mean(head.map((m) => m.successAfterReflection)),
    successAfterReflectionLastQuarter: mean(tail.map((m) => m.successAfterReflection)),
    groupsSkipped: sum('groupsSkipped'),
    groupsTrained: sum('groupsTrained'),
    updatesSkipped: metrics.filter((m) => m.updateSkipped !== undefined).length,
    generatedTokens: sum('generatedTokens'),
    trainTokens: sum('trainTokens'),
    seconds: sum('seconds'),
  };
}
