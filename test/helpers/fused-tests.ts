// The tests of our fused nodes (attention, SwiGLU, merges, the adapters' gradients, the LM head,
// the norms), by name: scripts/device/gpu-check.sh runs them on a GPU, and
// test/cuda-emulation.test.ts on the CPU's emulation of one.
export const FUSED_TEST_PATTERN =
  "fused (attention|SwiGLU|backward nodes)|our nodes \\(|merges by our node|merges into bf16|three nodes together|adapters' gradient nodes|forward SwiGLU node|16-bit adapter gradients|LM head's node|norms' backward nodes|gate and up in 16 bits|SwiGLU's gradient in 16 bits";

/** The files they are in. */
export const FUSED_TEST_FILES = ['trainer-nodes.test.js', 'device-placement.test.js'];
