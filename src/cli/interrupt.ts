// Ctrl-C as a request to stop at the next safe point (after a step, a batch), saving what is
// done; a second Ctrl-C quits at once.
export interface Interrupt {
  /** True once Ctrl-C was pressed. */
  readonly requested: boolean;
  dispose(): void;
}

/** The running commands' first-Ctrl-C actions, for stops that come from elsewhere (requestStop). */
const stoppers = new Set<(why: string) => void>();

/** `what()` says what the command will finish before it stops ("this step and saving a checkpoint"). */
export function onInterrupt(what: () => string): Interrupt {
  let asked = 0;
  const stop = (why: string) => {
    if (asked) return;
    asked = Date.now();
    process.stderr.write(`\nrrr-native: stopping after ${what()} (${why})\n`);
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
    dispose: () => {
      process.off('SIGINT', handler);
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
