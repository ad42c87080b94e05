// A streaming windowed-sinc resampler for mono Float32 audio, shared by the page and both worklets.
//
// Output sample j sits at input time t_j = t_0 + j * (inRate / outRate). Its value is
//   y_j = sum_k x[k] * c * sinc(c * (t_j - k)) * hann((t_j - k) / W)
// where c = cutoff / max(1, inRate/outRate) keeps the pass band below both Nyquist limits
// (anti-aliasing when going down, anti-imaging when going up) and W = taps / c input samples is the
// half width of the window. Producing y_j needs input up to floor(t_j) + W, so the output lags
// the input by W input samples; `flush()` pads with zeros to get the tail out.
//
// `position` is t of the next output sample in absolute input samples: the caller uses it to say
// exactly how much input has reached the output (played-milliseconds bookkeeping).

const TABLE_RES = 256;

export class StreamResampler {
  constructor(inRate, outRate, { taps = 12, cutoff = 0.92 } = {}) {
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate;
    this.c = cutoff / Math.max(1, this.step);
    this.halfWidth = Math.ceil(taps / this.c);
    this.identity = inRate === outRate;
    // The kernel sampled every 1/TABLE_RES input samples over [0, W] (it is even), read with
    // linear interpolation: no sin/cos per tap on the audio thread.
    const n = this.halfWidth * TABLE_RES + 2;
    this.table = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const d = i / TABLE_RES;
      this.table[i] = kernel(this.c * d, d / this.halfWidth);
    }
    this.reset();
  }

  // Forget all input; the next pushed sample gets absolute index `at`.
  reset(at = 0) {
    // buf holds input samples [base, base + length); history before `base` is implicit zeros.
    this.buf = new Float32Array(0);
    this.base = at;
    this.position = at;
    this.consumed = at; // absolute input samples pushed so far
  }

  // Push input samples; returns the output samples that can be produced now.
  push(input) {
    if (this.identity) {
      this.consumed += input.length;
      this.position = this.consumed;
      return input.slice();
    }
    const merged = new Float32Array(this.buf.length + input.length);
    merged.set(this.buf);
    merged.set(input, this.buf.length);
    this.buf = merged;
    this.consumed += input.length;
    return this._drain(this.consumed);
  }

  // Produce the outputs still held back by the window (as if zeros followed), then forget the tail.
  flush() {
    if (this.identity) return new Float32Array(0);
    const end = this.consumed;
    const pad = new Float32Array(this.halfWidth + 1);
    const merged = new Float32Array(this.buf.length + pad.length);
    merged.set(this.buf);
    this.buf = merged;
    const out = this._drain(end + this.halfWidth + 1, end);
    this.buf = new Float32Array(0);
    this.base = this.consumed;
    this.position = Math.max(this.position, this.consumed);
    return out;
  }

  // Emit every output whose window lies inside the input we hold (index < available) and whose
  // centre is before `limit`.
  _drain(available, limit = Infinity) {
    const W = this.halfWidth;
    const out = [];
    while (Math.floor(this.position) + W < available && this.position < limit) {
      const t = this.position;
      const lo = Math.max(this.base, Math.floor(t) - W + 1);
      const hi = Math.floor(t) + W;
      let acc = 0;
      let norm = 0;
      for (let k = lo; k <= hi; k++) {
        const x = Math.abs(t - k) * TABLE_RES;
        const i = x | 0;
        const w = this.table[i] + (x - i) * (this.table[i + 1] - this.table[i]);
        acc += this.buf[k - this.base] * w;
        norm += w;
      }
      // Normalising by the tap sum keeps DC gain exactly 1 whatever the fractional phase.
      out.push(norm > 0 ? acc / norm : 0);
      this.position += this.step;
    }
    // Drop input no later output can need.
    const keepFrom = Math.max(this.base, Math.floor(this.position) - W);
    if (keepFrom > this.base) {
      this.buf = this.buf.slice(keepFrom - this.base);
      this.base = keepFrom;
    }
    return Float32Array.from(out);
  }
}

function kernel(x, u) {
  if (Math.abs(u) >= 1) return 0;
  const s = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
  return s * (0.5 + 0.5 * Math.cos(Math.PI * u));
}

// Float32 [-1, 1] -> little-endian PCM16 bytes.
export function floatToPcm16(samples) {
  const out = new ArrayBuffer(samples.length * 2);
  const view = new DataView(out);
  for (let i = 0; i < samples.length; i++) {
    const v = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(i * 2, Math.round(v * 32767), true);
  }
  return out;
}

// Little-endian PCM16 bytes -> Float32.
export function pcm16ToFloat(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength >> 1);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(i * 2, true) / 32768;
  return out;
}
