// What train prints: its set-up, one line per step, and the table at the end.
import type { GeneratorInfo, ModelInfo, TrainerInfo } from '../engine/types.js';
import type { FirstAttemptResult, RunSummary } from '../rrr/types.js';
import type { StepMetrics } from '../rrr/types.js';
import { table } from './output.js';
import { formatDuration, formatRate } from './progress.js';
import type { RunConfig } from './run-config.js';

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/** The model, the adapter, the memory taken and every switch of ours that is on, in one line. */
export function setupLine(cfg: RunConfig, model: ModelInfo, generator: GeneratorInfo, trainer: TrainerInfo): string {
  const parts = [
    `model ${cfg.model}: ${model.arch}, ${model.nLayer} layers, ${model.weightType}, on ${model.device}`,
    `LoRA r=${cfg.lora.rank}${cfg.lora.dropout ? `, dropout ${cfg.lora.dropout}` : ''} on ${cfg.lora.targets.join(',')} (${trainer.nParams.toLocaleString('en-US')} parameters)`,
    `KV cache ${mib(generator.kvBytes)}`,
  ];
  if (trainer.transposedWeightsBytes) parts.push(`frozen weights kept transposed for the backward pass, ${mib(trainer.transposedWeightsBytes)}`);
  parts.push(`flash attention ${generator.flashAttn ? 'on' : 'off'} in generation, ${trainer.flashAttn ? 'on' : 'off'} in training`);
  if (trainer.fusedAttnBackward) parts.push('attention backward fused (--fused-attn-backward)');
  if (trainer.fusedMlpBackward) parts.push('SwiGLU backward fused (--fused-mlp-backward)');
  if (trainer.fusedMerge) parts.push('merged steps merge by our node (--fused-merge)');
  if (trainer.fusedHead) parts.push('LM head and loss by our node (--fused-head)');
  if (trainer.fusedNormBackward) parts.push("norms' backward by our nodes (--fused-norm-backward)");
  if (trainer.gateUp16) {
    parts.push(
      `steps merged into 16-bit weights write gate and up${trainer.swigluGrad16 ? " and the SwiGLU's gradient" : ''} in 16 bits (--gate-up-16${trainer.swigluGrad16 ? ' --swiglu-grad-16' : ''})`,
    );
  }
  if (trainer.fusedLoraBackward) {
    parts.push(`merged steps take the adapters' gradients in our nodes (--fused-lora-backward${trainer.fusedLora16 ? ", the MLP's in 16 bits: --fused-lora-16" : ''})`);
  }
  if (trainer.nodeWaits === 'device') parts.push('our nodes and ggml-cuda wait for each other on the GPU (--node-waits device)');
  return parts.join('; ');
}

/** How a step fitted in memory ('' for a step that trained nothing). */
export function stepFit(m: StepMetrics, nLayer: number, kept: { kept16: boolean; keptNorms: boolean }): string {
  if (!m.microBatches) return '';
  const how = kept.kept16 ? ' (gate and up in f16)' : '';
  const norms = kept.keptNorms ? ' (with their norms)' : '';
  return (
    `${m.microBatches} micro-batch${m.microBatches > 1 ? 'es' : ''}, ${m.keptLayers}/${nLayer} layers kept${m.keptLayers ? how + norms : ''}` +
    (m.adapterMerged ? ', adapter merged into the weights' : '')
  );
}

/** A step's line; `fit` is said where it is not '' (the first time, and when it changes). */
export function stepLine(m: StepMetrics, steps: number, secondsLeft: number, fit: string): string {
  return (
    `step ${m.step + 1}/${steps}  reward ${m.rewardMean.toFixed(3)}  solved-after-reflection ${(100 * m.successAfterReflection).toFixed(0)}%  ` +
    `groups ${m.groupsTrained} trained/${m.groupsSkipped} skipped  loss ${m.loss.toFixed(4)}  ` +
    `gen ${formatRate(m.generateTokensPerSec)} tok/s  train ${m.groupsTrained ? `${formatRate(m.trainTokensPerSec)} tok/s` : '- (no group to train)'}  ETA ${formatDuration(secondsLeft)}` +
    (fit ? `  (training step: ${fit}, ${mib(m.trainComputeBytes)} compute buffer)` : '') +
    (m.updateSkipped ? `  update skipped: ${m.updateSkipped.replace(/^step: /, '')}` : '')
  );
}

/** The run's table: first attempts, reward and success after reflection from the first to the last quarter. */
export function summaryTable(first: FirstAttemptResult, summary: RunSummary): string {
  return table(
    ['', 'value'],
    [
      ['first attempts correct', `${first.correct}/${first.attempted}`],
      ['steps', summary.steps],
      ['reward (first → last quarter of steps)', `${summary.rewardFirstQuarter.toFixed(3)} → ${summary.rewardLastQuarter.toFixed(3)}`],
      ['solved after reflection (any of G retries)', `${(100 * summary.successAfterReflectionFirstQuarter).toFixed(0)}% → ${(100 * summary.successAfterReflectionLastQuarter).toFixed(0)}%`],
      ['groups trained / skipped (all-equal rewards)', `${summary.groupsTrained} / ${summary.groupsSkipped}`],
      ['tokens generated / trained', `${summary.generatedTokens} / ${summary.trainTokens}`],
    ],
  );
}
