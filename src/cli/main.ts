#!/usr/bin/env node
// rrr-native command line. Every user-facing failure ends as one line on stderr and exit code
// 1 (2 for usage errors); RRR_DEBUG=1 shows stacks.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { RrrError } from '../engine/errors.js';
import { WriteError } from '../util/atomic.js';
import { commands } from './commands/index.js';
import { checkFlagTexts, type FlagKinds } from './flag-texts.js';
import { requestStop } from './interrupt.js';
import { stdoutWentAway } from './output.js';

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
    .demandCommand(1, `choose a command: ${commands.map((c) => String(c.command).split(' ')[0]).join(', ')}`)
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err) throw err;
      // yargs' "Did you mean train?" does not say what it was asked.
      const asked = hideBin(process.argv).find((x) => !x.startsWith('-'));
      const said = msg.replace(/\s*\n\s*/g, ' ');
      fail(`${/^Did you mean/.test(said) && asked ? `unknown command '${asked}'. ${said}` : said} (see --help)`, 2);
    });
  for (const c of commands) cli = cli.command(c);
  // yargs hands middleware its instance, whose options are the running command's by then.
  const checkTexts = (_argv: unknown, y: unknown) => checkFlagTexts(hideBin(process.argv), (y as { getOptions(): FlagKinds }).getOptions());
  cli = cli.middleware(checkTexts as unknown as (argv: unknown) => void, true);
  await cli.parseAsync();
}

// A reader that went away (`| head`) is no failure of ours. The stream is then destroyed, so
// later writes to it are dropped without another error; a command that can stop at a safe point
// does so, saving its work (a run stops after the step with a checkpoint), and others just end.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') fail(`${stream === process.stdout ? 'stdout' : 'stderr'}: ${e.message}`, 1, e);
    if (stream === process.stdout) stdoutWentAway();
    if (!requestStop(`its ${stream === process.stdout ? 'output' : 'error output'} was closed`)) process.exit(process.exitCode ?? 0);
  });
}

main().catch((e: unknown) => {
  if (e instanceof RrrError || e instanceof WriteError) fail(e.message, 1, e);
  const msg = e instanceof Error ? e.message : String(e);
  fail(`internal error: ${msg}`, 1, e);
});
