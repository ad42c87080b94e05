// Microphone capture: mono mix at the context (device) rate -> 24 kHz -> PCM16 chunks for the page.
// Each message: {pcm: ArrayBuffer (PCM16 LE, 24 kHz), peak, sumSquares, samples} (floats before
// quantisation), so the page can show a level meter and prove that real energy is being sent.
import { StreamResampler, floatToPcm16 } from './resampler.js';

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    const outRate = opts.outRate || 24000;
    this.resampler = new StreamResampler(sampleRate, outRate);
    this.chunkSamples = Math.round((outRate * (opts.chunkMs || 40)) / 1000);
    this.pending = new Float32Array(this.chunkSamples);
    this.fill = 0;
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data && e.data.type === 'stop') this.running = false;
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!this.running) return false;
    if (!channels || channels.length === 0) return true; // not connected yet
    const n = channels[0].length;
    const mono = new Float32Array(n);
    for (const ch of channels) for (let i = 0; i < n; i++) mono[i] += ch[i] / channels.length;
    const out = this.resampler.push(mono);
    let i = 0;
    while (i < out.length) {
      const take = Math.min(out.length - i, this.chunkSamples - this.fill);
      this.pending.set(out.subarray(i, i + take), this.fill);
      this.fill += take;
      i += take;
      if (this.fill === this.chunkSamples) this._emit();
    }
    return true;
  }

  _emit() {
    let peak = 0;
    let sumSquares = 0;
    for (const v of this.pending) {
      peak = Math.max(peak, Math.abs(v));
      sumSquares += v * v;
    }
    const pcm = floatToPcm16(this.pending);
    this.port.postMessage({ pcm, peak, sumSquares, samples: this.chunkSamples }, [pcm]);
    this.fill = 0;
  }
}

registerProcessor('stepaudio-capture', CaptureProcessor);
