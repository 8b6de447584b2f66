// The engine layer's public surface.
export { Model, logitsRow, argmax } from './model.js';
export { ReferenceModel } from './reference.js';
export { Trainer, mergeAdapter } from './trainer.js';
export { Generator } from './generator.js';
export { ReferenceDecoder } from './reference-decoder.js';
export { makeTinyModel, TINY_PRESETS, defaultVocabPath } from './tiny-model.js';
export { GenerationStopped, NonFiniteGradientError, RrrError } from './errors.js';
export { buildInfo, devices, gpuMemoryFree } from './devices.js';
export type * from './types.js';
