// AudioWorklet processor: counts render quanta and the audible ones, reported a few times a
// second to the page (audio.ts LevelMeter). Bundled apart: a worklet module runs on its own.

declare abstract class AudioWorkletProcessor {
  readonly port: MessagePort;
  abstract process(inputs: Float32Array[][], outputs: Float32Array[][]): boolean;
}
declare function registerProcessor(
  name: string,
  processor: new () => AudioWorkletProcessor,
): void;

const AUDIBLE_PEAK = 0.01;
/** A quantum whose peak passes this (full scale 1.0; -40 dBFS) is sound, not silence. */
const REPORT_EVERY_QUANTA = 16;
/** 16 × 128 samples ≈ 43 ms at 48 kHz. */

class LevelMeterProcessor extends AudioWorkletProcessor {
  private frames = 0;
  private audibleFrames = 0;

  process(inputs: Float32Array[][]): boolean {
    const channels = inputs[0] ?? [];
    if (channels.length > 0) {
      this.frames += 1;
      let peak = 0;
      for (const samples of channels) {
        for (let i = 0; i < samples.length; i++) peak = Math.max(peak, Math.abs(samples[i] ?? 0));
      }
      if (peak > AUDIBLE_PEAK) this.audibleFrames += 1;
    }
    if (this.frames >= REPORT_EVERY_QUANTA) {
      this.port.postMessage({ frames: this.frames, audibleFrames: this.audibleFrames });
      this.frames = 0;
      this.audibleFrames = 0;
    }
    return true;
  }
}

registerProcessor("level-meter", LevelMeterProcessor);
