import { rmSync } from 'node:fs';

// Ctrl-C as a request to stop at the next safe point, saving what is done: generation in
// progress ends after its current decode step (its batch or step is dropped, and redone on a
// resume), a training update in progress finishes. A second Ctrl-C quits at once.
export interface Interrupt {
  /** True once Ctrl-C was pressed. */
  readonly requested: boolean;
  /** Aborted at the same moment: generation in progress ends after its current decode step. */
  readonly signal: AbortSignal;
  dispose(): void;
}

/** The running commands' first-Ctrl-C actions, for stops that come from elsewhere (requestStop). */
const stoppers = new Set<(why: string) => void>();

/** `what()` says how the command stops ("the step in progress is cut short ..."). */
export function onInterrupt(what: () => string): Interrupt {
  let asked = 0;
  const abort = new AbortController();
  const stop = (why: string) => {
    if (asked) return;
    asked = Date.now();
    process.stderr.write(`\nrrr-native: stopping: ${what()} (${why})\n`);
    abort.abort();
  };
  const handler = () => {
    // One Ctrl-C can arrive twice: from the terminal and forwarded by a parent that got it too
    // (npm, timeout). A second within a second is that copy, not a wish to quit unsaved.
    if (asked && Date.now() - asked > 1000) process.exit(130);
    stop('Ctrl-C again to quit at once');
  };
  process.on('SIGINT', handler);
  stoppers.add(stop);
  return {
    get requested() {
      return asked > 0;
    },
    signal: abort.signal,
    dispose: () => {
      // Once asked, the handler stays: the forwarded copy of that Ctrl-C can land after the
      // command has stopped, while it saves and prints, and must not kill it there.
      if (!asked) process.off('SIGINT', handler);
      stoppers.delete(stop);
    },
  };
}

/**
 * Stops the running command as a first Ctrl-C would, saying `why`. False when no command is
 * listening, so the caller may simply exit: nothing is half done.
 */
export function requestStop(why: string): boolean {
  for (const stop of stoppers) stop(why);
  return stoppers.size > 0;
}

/**
 * For a command whose one output file is written to `<out>.tmp-<pid>` and renamed (the addon's
 * atomic writes): until the returned function is called, Ctrl-C removes that temporary file, says
 * nothing was written, and ends the process by SIGINT (the shell's 130). Without it the process
 * dies with the file half written. Not process.exit: that waits for the addon's worker thread,
 * which went on to write the whole file and rename it in (a helper's audit: a Ctrl-C 0.7 s into
 * a 994 MB model said it was not written, and it was, 36 s later).
 */
export function removeTempOnInterrupt(out: string): () => void {
  const handler = () => {
    process.stderr.write(`\nrrr-native: stopped; ${out} was not written\n`);
    rmSync(`${out}.tmp-${process.pid}`, { force: true });
    process.off('SIGINT', handler);
    process.kill(process.pid, 'SIGINT');
  };
  process.on('SIGINT', handler);
  return () => void process.off('SIGINT', handler);
}
