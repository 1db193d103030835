// Web Audio for the page: one AudioContext (made on a user's click), PCM16 chunks scheduled as
// they arrive, and a level meter that counts the frames a remote track delivers.

const START_LEAD_S = 0.05;
/** Scheduled this far ahead of "now" when nothing is playing, so the first chunk is whole. */
const METER_MODULE_URL = "/static/build/level-meter.js";
const PCM16_FULL_SCALE = 32768;

let context: AudioContext | null = null;
let meterModule: Promise<void> | null = null;

/** The page's AudioContext, created and resumed on first use (call it from a click). */
export async function audioContext(): Promise<AudioContext> {
  if (context === null) context = new AudioContext({ latencyHint: "interactive" });
  if (context.state === "suspended") await context.resume();
  return context;
}

/** Plays 16-bit mono PCM chunks back to back, each scheduled the moment it arrives. */
export class PcmPlayer {
  private nextStart = 0;
  private playing = new Set<AudioBufferSourceNode>();
  samplesDecoded = 0;
  underruns = 0;

  constructor(private readonly ctx: AudioContext) {}

  /** Schedules ``pcm`` (little-endian int16) at ``sampleRate`` Hz after what is queued;
   * returns when it starts, in the context's seconds. */
  play(pcm: ArrayBuffer, sampleRate: number): number {
    const view = new DataView(pcm);
    const count = Math.floor(pcm.byteLength / 2);
    const buffer = this.ctx.createBuffer(1, Math.max(count, 1), sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < count; i++) channel[i] = view.getInt16(i * 2, true) / PCM16_FULL_SCALE;
    this.samplesDecoded += count;
    const now = this.ctx.currentTime;
    if (this.nextStart < now) {
      if (this.playing.size > 0) this.underruns += 1; // the stream fell behind playback
      this.nextStart = now + START_LEAD_S;
    }
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.ctx.destination);
    source.onended = () => this.playing.delete(source);
    source.start(this.nextStart);
    this.playing.add(source);
    const startsAt = this.nextStart;
    this.nextStart += buffer.duration;
    return startsAt;
  }

  /** The context's clock, in seconds. */
  get now(): number {
    return this.ctx.currentTime;
  }

  /** Seconds of queued audio not yet played. */
  get queuedSeconds(): number {
    return Math.max(0, this.nextStart - this.ctx.currentTime);
  }

  stop(): void {
    for (const source of this.playing) {
      try {
        source.stop();
      } catch {
        // already ended
      }
    }
    this.playing.clear();
    this.nextStart = 0;
  }
}

export interface MeterCounts {
  frames: number;
  audibleFrames: number;
}

/** Counts the render quanta (128 samples) of a MediaStreamTrack, and those that carry sound,
 * in an AudioWorklet. The track must also play through a media element: Chrome delivers a
 * remote WebRTC track to Web Audio only then. */
export class LevelMeter {
  private constructor(
    private readonly source: MediaStreamAudioSourceNode,
    private readonly node: AudioWorkletNode,
    private readonly sink: GainNode,
  ) {}

  /** The AudioContext and the worklet module, ready (call it from a click). */
  static async prepare(): Promise<AudioContext> {
    const ctx = await audioContext();
    meterModule ??= ctx.audioWorklet.addModule(METER_MODULE_URL);
    await meterModule;
    return ctx;
  }

  static async attach(
    track: MediaStreamTrack,
    onCounts: (delta: MeterCounts) => void,
  ): Promise<LevelMeter> {
    const ctx = await LevelMeter.prepare();
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const node = new AudioWorkletNode(ctx, "level-meter");
    node.port.onmessage = (event: MessageEvent<MeterCounts>) => onCounts(event.data);
    const sink = ctx.createGain();
    sink.gain.value = 0; // the media element plays the track; this path only measures it
    source.connect(node).connect(sink).connect(ctx.destination);
    return new LevelMeter(source, node, sink);
  }

  detach(): void {
    this.source.disconnect();
    this.node.disconnect();
    this.sink.disconnect();
    this.node.port.close();
  }
}
