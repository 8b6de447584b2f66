/**
 * Dataset reading shared by all tasks. Every problem with a dataset becomes a
 * DataError whose message is one line starting with "path:line:" so the CLI
 * can print `err.message` alone, without a stack trace.
 *
 * Format: JSON Lines (one JSON value per non-blank line; CRLF and a UTF-8 BOM
 * are tolerated). With `allowJsonArray`, a file whose first non-blank
 * character is "[" is read as one JSON array instead (the xLAM release is a
 * single array); errors then name the line where the bad element starts.
 */
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type { BadLine, LoadOptions, LoadResult } from './types.js';

export class DataError extends Error {
  override readonly name = 'DataError';
  constructor(
    message: string,
    readonly path: string,
    readonly line?: number,
  ) {
    super(message);
  }
}

/**
 * Thrown by record validators to say what was expected. The reader adds the
 * path and line; validators stay free of file bookkeeping.
 */
export class InvalidRecord extends Error {
  override readonly name = 'InvalidRecord';
}

/**
 * Turns a parsed JSON value into an item, or throws InvalidRecord. `line` is 1-based; `nth` is
 * set where several records start on that line (a one-line JSON array): the record's 1-based
 * place among them, which recordId's fallback needs to tell them apart.
 */
export type RecordValidator<T> = (value: unknown, line: number, nth?: number) => T;

export interface ReadOptions extends LoadOptions {
  /** Also accept a file holding one JSON array of records. */
  allowJsonArray?: boolean;
  /** Return an empty result instead of failing when no record is valid. */
  allowEmpty?: boolean;
}

export async function readJsonl<T extends { id: string }>(
  path: string,
  validate: RecordValidator<T>,
  opts: ReadOptions = {},
): Promise<LoadResult<T>> {
  let bytes: Buffer;
  try {
    // A FIFO or a device would block the read or never end: only files are datasets.
    const st = await stat(path);
    if (!st.isFile() && !st.isDirectory()) throw new DataError(`${path}: not a regular file, expected a dataset file`, path);
    bytes = await readFile(path);
  } catch (err) {
    if (err instanceof DataError) throw err;
    throw new DataError(describeReadError(path, err), path);
  }
  const r = parseJsonlText(bytes.toString('utf8'), path, validate, { ...opts, notUtf8: isUtf8(bytes) ? undefined : linesNotUtf8(bytes) });
  // Of these very bytes: a key computed by reading the file again could describe another version.
  return { ...r, digest: createHash('sha256').update(bytes).digest('hex') };
}

/**
 * The 1-based lines whose bytes are not UTF-8: decoding turns them into U+FFFD without a word,
 * so a dataset in another encoding would train on text it does not hold.
 */
function linesNotUtf8(bytes: Buffer): Set<number> {
  const bad = new Set<number>();
  for (let start = 0, line = 1; start <= bytes.length; line++) {
    const end = bytes.indexOf(10, start);
    const stop = end < 0 ? bytes.length : end;
    if (!isUtf8(bytes.subarray(start, stop))) bad.add(line);
    start = stop + 1;
  }
  return bad;
}

/** The pure part of readJsonl, separate so it can be used on text already in memory. */
export function parseJsonlText<T extends { id: string }>(
  text: string,
  path: string,
  validate: RecordValidator<T>,
  opts: ReadOptions & { notUtf8?: ReadonlySet<number> } = {},
): LoadResult<T> {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const array = opts.allowJsonArray && /^\s*\[/.test(body);
  const notUtf8 = opts.notUtf8 ?? new Set<number>();
  // An array's elements span lines: the first line not in UTF-8 refuses the whole file.
  if (array && notUtf8.size > 0) {
    const line = [...notUtf8].reduce((a, b) => Math.min(a, b));
    throw new DataError(`${path}:${line}: not valid UTF-8`, path, line);
  }
  const chunks = array ? splitJsonArray(body, path) : splitLines(body);
  const perLine = new Map<number, number>();
  for (const c of chunks) perLine.set(c.line, (perLine.get(c.line) ?? 0) + 1);

  const items: T[] = [];
  const skipped: BadLine[] = [];
  // Items are looked up by id (failure caches, a step's tasks): two records with one id would
  // silently train one against the other's answer.
  const idLine = new Map<string, number>();
  let nthOnLine = 0;
  let prevLine = 0;
  for (const chunk of chunks) {
    nthOnLine = chunk.line === prevLine ? nthOnLine + 1 : 1;
    prevLine = chunk.line;
    let value: unknown;
    let problem: string | undefined = notUtf8.has(chunk.line) ? 'not valid UTF-8' : undefined;
    if (problem === undefined) {
      try {
        value = JSON.parse(chunk.text);
      } catch (err) {
        problem = chunk.text.includes('\ufeff')
          ? 'a byte-order mark (U+FEFF) inside the file, where files were joined? (remove it)'
          : `invalid JSON (${oneLine(errorMessage(err))})`;
      }
      // A whole file in the array form, where this task reads lines: say so, not what line 1 lacks.
      if (!opts.allowJsonArray && chunk === chunks[0] && /^\s*\[/.test(chunk.text) && (problem !== undefined || Array.isArray(value))) {
        throw new DataError(`${path}:${chunk.line}: a JSON array; this task reads JSON Lines, one {...} record per line (only function-calling also reads an array file)`, path, chunk.line);
      }
    }
    if (problem === undefined) {
      try {
        const item = validate(value, chunk.line, (perLine.get(chunk.line) ?? 1) > 1 ? nthOnLine : undefined);
        const first = idLine.get(item.id);
        if (first !== undefined) throw new InvalidRecord(`id "${oneLine(item.id, 40)}" repeats the record on line ${first} (each record needs its own id)`);
        idLine.set(item.id, chunk.line);
        items.push(item);
        continue;
      } catch (err) {
        if (!(err instanceof InvalidRecord)) throw err;
        problem = oneLine(err.message);
      }
    }
    if (!opts.skipBadLines) {
      throw new DataError(`${path}:${chunk.line}: ${problem}`, path, chunk.line);
    }
    skipped.push({ path, line: chunk.line, message: problem });
  }

  if (items.length === 0 && !opts.allowEmpty) {
    const why =
      skipped.length > 0
        ? `no valid records (${skipped.length} bad ${skipped.length === 1 ? 'line' : 'lines'} skipped)`
        : 'no records found';
    throw new DataError(`${path}: ${why}`, path);
  }
  return { items, skipped };
}

interface Chunk {
  text: string;
  line: number;
}

function splitLines(text: string): Chunk[] {
  const out: Chunk[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] as string;
    const t = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (t.trim() === '') continue;
    out.push({ text: t, line: i + 1 });
  }
  return out;
}

/**
 * Splits a top-level JSON array into element texts without parsing them, so
 * one bad element can be reported (or skipped) on its own. It only tracks
 * strings and bracket depth; element syntax is left to JSON.parse.
 */
function splitJsonArray(text: string, path: string): Chunk[] {
  const out: Chunk[] = [];
  let i = text.indexOf('[') + 1;
  let line = 1 + countNewlines(text, 0, i);
  let depth = 0;
  let inString = false;
  let start = -1;
  let startLine = line;
  let closed = false;

  for (; i < text.length; i++) {
    const c = text[i] as string;
    if (c === '\n') line++;
    if (inString) {
      if (c === '\\') {
        i++; // an escaped char is never a newline in valid JSON, so line stays right
      } else if (c === '"') {
        inString = false;
      }
      continue;
    }
    if (start < 0 && !/\s/.test(c) && !(depth === 0 && (c === ',' || c === ']'))) {
      start = i;
      startLine = line;
    }
    if (c === '"') {
      inString = true;
    } else if (c === '{' || c === '[') {
      depth++;
    } else if ((c === '}' || c === ']') && depth > 0) {
      depth--;
    } else if (depth === 0 && (c === ',' || c === ']')) {
      if (start >= 0) {
        out.push({ text: text.slice(start, i), line: startLine });
      } else if (c === ',' || out.length > 0) {
        throw new DataError(`${path}:${line}: expected an array element before '${c}'`, path, line);
      }
      start = -1;
      if (c === ']') {
        closed = true;
        i++;
        break;
      }
    }
  }
  if (!closed) {
    throw new DataError(`${path}:${line}: the JSON array is not closed (missing ']')`, path, line);
  }
  const rest = text.slice(i);
  if (rest.trim() !== '') {
    const extraLine = line + countNewlines(rest, 0, rest.search(/\S/));
    throw new DataError(`${path}:${extraLine}: unexpected text after the JSON array`, path, extraLine);
  }
  return out;
}

function countNewlines(text: string, from: number, to: number): number {
  let n = 0;
  for (let k = from; k < to; k++) if (text.charCodeAt(k) === 10) n++;
  return n;
}

function describeReadError(path: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return `${path}: file not found`;
    case 'EISDIR':
      return `${path}: is a directory, expected a dataset file`;
    case 'EACCES':
    case 'EPERM':
      return `${path}: permission denied`;
    default:
      return `${path}: cannot read file (${code ?? oneLine(errorMessage(err))})`;
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Collapses whitespace and truncates, so a message built from data never spans lines. */
export function oneLine(s: string, max = 160): string {
  // Control bytes of a broken file (NUL, ESC) are shown escaped, not sent to the terminal.
  const flat = s.replace(/\s+/g, ' ').trim().replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

// ---- small helpers for validators -------------------------------------------------

export function expectObject(value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidRecord('expected a JSON object');
  }
  return value as Record<string, unknown>;
}

/**
 * Optional "id" (string or number) → string; falls back to the line number, and the record's
 * place on its line where several share it (RecordValidator's `nth`).
 */
export function recordId(obj: Record<string, unknown>, line: number, nth?: number): string {
  const id = obj['id'];
  if (id === undefined || id === null) return nth === undefined ? `L${line}` : `L${line}#${nth}`;
  if (typeof id === 'string' && id !== '') return id;
  if (typeof id === 'number' && Number.isFinite(id)) return String(id);
  throw new InvalidRecord('expected "id" to be a non-empty string or a number');
}
