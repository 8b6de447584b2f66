// A model file's contents, cheaply: what tells the first attempts of one model from another's
// where path, size and modification time agree (`cp -p`, `rsync -t` and archives keep the time;
// a model merged or re-exported to the same path keeps the size).
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

const BLOCKS = 16;
const BLOCK_BYTES = 64 * 1024;

/**
 * sha256 of the size and of 16 blocks of 64 KiB spread evenly over the file, the first holding
 * the GGUF header: 1 MiB read whatever the model's size, where hashing all of a 15 GB file would
 * take longer than many runs' first attempts. Two models whose weights differ (other training,
 * another merge or quantization) differ in nearly every block.
 */
export function modelFingerprint(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const h = createHash('sha256').update(`${size}\n`);
    const block = Buffer.alloc(Math.min(BLOCK_BYTES, size));
    for (let i = 0; i < BLOCKS; i++) {
      const at = Math.floor(((size - block.length) * i) / (BLOCKS - 1));
      const got = readSync(fd, block, 0, block.length, at);
      h.update(block.subarray(0, got));
    }
    return h.digest('hex').slice(0, 32);
  } finally {
    closeSync(fd);
  }
}
