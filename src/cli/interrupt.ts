// Ctrl-C as a request to stop at the next safe point (after a step, a batch), saving what is
// done; a second Ctrl-C quits at once.
export interface Interrupt {
  /** True once Ctrl-C was pressed. */
  readonly requested: boolean;
  dispose(): void;
}

/** `what()` says what the command will finish before it stops ("this step and saving a checkpoint"). */
export function onInterrupt(what: () => string): Interrupt {
  let asked = 0;
  const handler = () => {
    // One Ctrl-C can arrive twice: from the terminal and forwarded by a parent that got it too
    // (npm, timeout). A second within a second is that copy, not a wish to quit unsaved.
    if (asked && Date.now() - asked > 1000) process.exit(130);
    if (asked) return;
    asked = Date.now();
    process.stderr.write(`\nrrr-native: stopping after ${what()} (Ctrl-C again to quit at once)\n`);
  };
  process.on('SIGINT', handler);
  return {
    get requested() {
      return asked > 0;
    },
    dispose: () => process.off('SIGINT', handler),
  };
}
