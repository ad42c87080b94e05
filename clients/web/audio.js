// The page's audio graph: one AudioContext at the device rate, a capture worklet fed by the
// microphone and a playback worklet feeding the speakers. No resampling happens on this thread. Also the list of
// microphones, and when one may have come back.

export class AudioEngine {
  constructor({ onChunk, onPlayback, onMicEnded }) {
    this.onChunk = onChunk; // ({pcm, peak, sumSquares, samples}) per 40 ms of 24 kHz PCM16
    this.onPlayback = onPlayback; // playback worklet messages (stats, flushed)
    this.onMicEnded = onMicEnded; // () once the microphone in use stops delivering for good (unplugged, revoked)
    this.ctx = null;
    this.stream = null;
    this.source = null;
    this.capture = null;
    this.playback = null;
    this._flushWaiters = [];
  }

  get sampleRate() {
    return this.ctx ? this.ctx.sampleRate : 0;
  }

  // Must run from a user gesture (a click), so that the context is allowed to start.
  async start(constraints, { prebufferMs = 100 } = {}) {
    this.ctx = new AudioContext({ latencyHint: 'interactive' });
    const base = new URL('.', import.meta.url);
    await this.ctx.audioWorklet.addModule(new URL('capture-worklet.js', base));
    await this.ctx.audioWorklet.addModule(new URL('playback-worklet.js', base));
    this.playback = new AudioWorkletNode(this.ctx, 'stepaudio-playback', {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1], processorOptions: { prebufferMs },
    });
    this.playback.port.onmessage = (e) => this._fromPlayback(e.data);
    this.playback.connect(this.ctx.destination);
    this.capture = new AudioWorkletNode(this.ctx, 'stepaudio-capture', {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { outRate: 24000, chunkMs: 40 },
    });
    this.capture.port.onmessage = (e) => this.onChunk(e.data);
    // The capture node writes silence; connecting it keeps it pulled by the graph.
    this.capture.connect(this.ctx.destination);
    await this.useMicrophone(constraints);
    if (this.ctx.state !== 'running') await this.ctx.resume();
  }

  async useMicrophone(constraints) {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: constraints, video: false });
    if (this.source) this.source.disconnect();
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = stream;
    this.source = this.ctx.createMediaStreamSource(stream);
    this.source.connect(this.capture);
    const track = stream.getAudioTracks()[0];
    // A track that ends (the device unplugged, the permission taken back) leaves the capture silent with no error.
    // stop() fires no 'ended': a microphone replaced here or at stop() is not reported.
    if (track) track.addEventListener('ended', () => this.onMicEnded());
    return track ? track.getSettings() : {};
  }

  play(itemId, samples) {
    this.playback.port.postMessage({ type: 'push', item: itemId, pcm: samples }, [samples.buffer]);
  }

  endOfReply() {
    if (this.playback) this.playback.port.postMessage({ type: 'end' });
  }

  // Drop everything queued; resolves with {item, playedMs, droppedMs, wasPlaying, remaining (the item's samples)}.
  flush() {
    if (!this.playback) return Promise.resolve(null);
    return new Promise((resolve) => {
      this._flushWaiters.push(resolve);
      this.playback.port.postMessage({ type: 'flush' });
    });
  }

  _fromPlayback(msg) {
    if (msg.type === 'flushed') {
      const waiter = this._flushWaiters.shift();
      if (waiter) waiter(msg);
    }
    this.onPlayback(msg);
  }

  async stop() {
    // A stopped engine reports nothing more: a chunk or stats message still queued would light the meters again.
    if (this.capture) this.capture.port.onmessage = null;
    if (this.playback) this.playback.port.onmessage = null;
    if (this.capture) this.capture.port.postMessage({ type: 'stop' });
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    try {
      if (this.ctx) await this.ctx.close();
    } finally {
      // Even when the close rejects (a context closed already): the flushes awaited (a barge-in's) are answered by
      // nothing else now that the playback's messages go unheard, and would never settle.
      this.ctx = this.stream = this.source = this.capture = this.playback = null;
      for (const w of this._flushWaiters.splice(0)) w(null);
    }
  }
}

// The microphones as a <select>'s options after 'default' (''), `chosen` selected if it is listed, else the default.
export async function listMicrophones(select, chosen) {
  const devices = await navigator.mediaDevices.enumerateDevices();
  select.replaceChildren(new Option('default', ''));
  devices.filter((d) => d.kind === 'audioinput').forEach((m, i) => {
    if (m.deviceId && m.deviceId !== 'default') select.append(new Option(m.label || `microphone ${i + 1}`, m.deviceId));
  });
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : '';
}

// Calls back whenever a microphone may have come (back): one plugged in changes the devices, and one allowed again
// changes the permission. A browser that cannot query the microphone's permission (older Firefox) rejects the query.
export function watchMicrophones(callback) {
  navigator.mediaDevices.addEventListener('devicechange', callback);
  if (!navigator.permissions) return;
  navigator.permissions.query({ name: 'microphone' })
    .then((p) => p.addEventListener('change', () => { if (p.state === 'granted') callback(); }))
    .catch(() => {});
}
