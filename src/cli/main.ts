#!/usr/bin/env node
// rrr-native command line. Every user-facing failure ends as one line on stderr and exit code
// 1 (2 for usage errors); RRR_DEBUG=1 shows stacks.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { RrrError } from '../engine/errors.js';
import { commands } from './commands/index.js';

/**
 * yargs turns a number flag's text into NaN ('abc') or 0 ('') before any check sees it: refuse
 * those here with the text as typed.
 */
function numberFlagTexts(argv: string[], numberFlags: readonly string[]): void {
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([^=]+)(?:=(.*))?$/s.exec(argv[i]!);
    if (!m) continue;
    if (m[1]!.startsWith('no-') && numberFlags.includes(m[1]!.slice(3))) throw new RrrError(`--${m[1]}: --${m[1]!.slice(3)} takes a number, not a negation`);
    if (!numberFlags.includes(m[1]!)) continue;
    const text = m[2] ?? argv[i + 1];
    if (text === undefined) throw new RrrError(`--${m[1]}: expected a number after it`);
    if (text.trim() === '' || Number.isNaN(Number(text))) throw new RrrError(`--${m[1]}: expected a number, got '${text}'`);
  }
}

function fail(message: string, code: number, err?: unknown): never {
  process.stderr.write(`rrr-native: ${message}\n`);
  if (process.env.RRR_DEBUG && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
  process.exit(code);
}

async function main(): Promise<void> {
  let cli = yargs(hideBin(process.argv))
    .scriptName('rrr-native')
    .usage('$0 <command> [options]\n\nReflect, Retry, Reward: teach a local GGUF model to write better self-reflections.')
    .strict()
    .recommendCommands()
    .demandCommand(1, 'Choose a command (see the list above).')
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err) throw err;
      fail(`${msg.replace(/\s*\n\s*/g, ' ')} (see --help)`, 2);
    });
  for (const c of commands) cli = cli.command(c);
  // yargs hands middleware its instance, whose options are the running command's by then.
  const checkNumbers = (_argv: unknown, y: unknown) => numberFlagTexts(hideBin(process.argv), (y as { getOptions(): { number: string[] } }).getOptions().number);
  cli = cli.middleware(checkNumbers as unknown as (argv: unknown) => void, true);
  await cli.parseAsync();
}

main().catch((e: unknown) => {
  if (e instanceof RrrError) fail(e.message, 1, e);
  const msg = e instanceof Error ? e.message : String(e);
  fail(`internal error: ${msg}`, 1, e);
});
