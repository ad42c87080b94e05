// Reply playback: a jitter buffer of 24 kHz audio, resampled to the context rate as it plays.
//
// Every queued sample gets an absolute index (24 kHz); each item remembers the range it occupies.
// `emitted` is the input time (absolute 24 kHz index) of the next sample handed to the audio
// graph, so the milliseconds of an item played so far are exactly clamp(emitted - start, 0, len) / 24.
//
// States: idle (nothing to play) -> buffering (wait for `prebufferMs` or the end of the response)
// -> playing; running dry before the end counts an underrun and goes back to buffering.
// Messages in: push {item, pcm: Float32Array}, end, flush, config {prebufferMs}.
// Messages out: stats (every ~100 ms and on changes), flushed {item, playedMs, droppedMs, wasPlaying}, drained (the
// reply that `end` closed has played to its last sample, or had none).
import { StreamResampler } from './resampler.js';

const IN_RATE = 24000;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.prebuffer = Math.round((IN_RATE * (opts.prebufferMs ?? 100)) / 1000);
    this.resampler = new StreamResampler(IN_RATE, sampleRate);
    this.queue = []; // Float32Array chunks not yet given to the resampler
    this.queued = 0; // samples in `queue`
    this.nextIndex = 0; // absolute index the next pushed sample gets
    this.items = []; // {id, start, len}, in order
    this.out = new Float32Array(0); // resampled, not yet written
    this.outPos = 0;
    this.emitted = 0;
    this.ended = true;
    this.state = 'idle';
    this.playedFrames = 0; // device-rate frames of reply audio written
    this.underruns = 0;
    this.sinceStats = 0;
    this.port.onmessage = (e) => this._onMessage(e.data);
  }

  _onMessage(msg) {
    switch (msg.type) {
      case 'push': {
        const last = this.items[this.items.length - 1];
        if (last && last.id === msg.item && last.start + last.len === this.nextIndex) last.len += msg.pcm.length;
        else this.items.push({ id: msg.item, start: this.nextIndex, len: msg.pcm.length });
        if (this.items.length > 32) this.items.shift();
        this.queue.push(msg.pcm);
        this.queued += msg.pcm.length;
        this.nextIndex += msg.pcm.length;
        this.ended = false;
        if (this.state === 'idle') this.state = 'buffering';
        break;
      }
      case 'end':
        this.ended = true;
        if (this.state === 'idle') this.port.postMessage({ type: 'drained' });
        break;
      case 'flush':
        this._flush();
        break;
      case 'config':
        this.prebuffer = Math.round((IN_RATE * msg.prebufferMs) / 1000);
        break;
    }
  }

  _current() {
    // The item holding the next sample to play, else the last one that started.
    let found = null;
    for (const it of this.items) if (it.start <= this.emitted) found = it;
    return found;
  }

  _flush() {
    const it = this._current();
    const played = it ? Math.max(0, Math.min(this.emitted - it.start, it.len)) : 0;
    const remaining = it ? it.len - played : 0;
    const dropped = this.nextIndex - Math.floor(this.emitted);
    // Restart the stream at the next whole index after what was played.
    const at = Math.ceil(this.emitted);
    this.queue = [];
    this.queued = 0;
    this.out = new Float32Array(0);
    this.outPos = 0;
    this.resampler.reset(at);
    this.nextIndex = at;
    this.emitted = at;
    this.items = [];
    const wasPlaying = this.state !== 'idle' || !this.ended || remaining > 0;
    this.state = 'idle';
    this.ended = true;
    this.port.postMessage({
      type: 'flushed', item: it ? it.id : null, playedMs: Math.floor((played * 1000) / IN_RATE),
      droppedMs: Math.round((Math.max(0, dropped) * 1000) / IN_RATE), wasPlaying, remaining,
    });
    this._stats();
  }

  // Feed the resampler until at least `need` output samples are ready (or input runs out).
  _refill(need) {
    let avail = this.out.length - this.outPos;
    const parts = [this.out.subarray(this.outPos)];
    while (avail < need && this.queue.length) {
      const chunk = this.queue.shift();
      this.queued -= chunk.length;
      const y = this.resampler.push(chunk);
      parts.push(y);
      avail += y.length;
    }
    if (avail < need && this.queue.length === 0 && this.ended) {
      const tail = this.resampler.flush();
      parts.push(tail);
      avail += tail.length;
    }
    const merged = new Float32Array(avail);
    let o = 0;
    for (const p of parts) {
      merged.set(p, o);
      o += p.length;
    }
    this.out = merged;
    this.outPos = 0;
  }

  process(_inputs, outputs) {
    const dst = outputs[0][0];
    const frames = dst.length;
    if (this.state === 'buffering' && (this.queued >= this.prebuffer || this.ended)) this.state = 'playing';
    if (this.state === 'playing') {
      if (this.out.length - this.outPos < frames) this._refill(frames);
      const n = Math.min(frames, this.out.length - this.outPos);
      dst.set(this.out.subarray(this.outPos, this.outPos + n));
      this.outPos += n;
      this.playedFrames += n;
      this.emitted = Math.min(this.nextIndex, this.emitted + (n * IN_RATE) / sampleRate);
      if (n < frames) {
        if (this.ended) {
          this.state = 'idle';
          this.emitted = this.nextIndex;
          this.port.postMessage({ type: 'drained' });
        } else {
          this.underruns += 1;
          this.state = 'buffering';
        }
        this._stats();
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(dst);
    this.sinceStats += frames;
    if (this.sinceStats >= sampleRate / 10) this._stats();
    return true;
  }

  _stats() {
    this.sinceStats = 0;
    const it = this._current();
    this.port.postMessage({
      type: 'stats', state: this.state, playedFrames: this.playedFrames, sampleRate,
      bufferedMs: Math.round(((this.nextIndex - this.emitted) * 1000) / IN_RATE), underruns: this.underruns,
      item: it ? it.id : null,
      itemPlayedMs: it ? Math.floor((Math.max(0, Math.min(this.emitted - it.start, it.len)) * 1000) / IN_RATE) : 0,
    });
  }
}

registerProcessor('stepaudio-playback', PlaybackProcessor);
