// The browser page: microphone in, spoken reply out, over the Realtime API.
//
// Query parameters prefill the settings: url, key, mode=vad|ptt, silence_ms, ec/ns/agc=0|1,
// prebuffer_ms, instructions (the assistant's persona, also editable on the page and applied at once while
// connected). A typed message is a user text item and asks for a spoken reply, as a spoken turn does.
// `window.stepaudio` exposes counters for tests and curious people.
import { AudioEngine, listMicrophones, watchMicrophones } from './audio.js';
import { RealtimeSocket, fromBase64, keyFitsSubprotocol, toBase64 } from './realtime.js';
import { pcm16ToFloat } from './resampler.js';
import {
  closedMessage, fetchOrGiveUp, openSocket, problemText, realtimeUrlAt, serverProblem, serverUrl,
} from './server-problems.js';

const $ = (id) => document.getElementById(id);
const PREROLL_CHUNKS = 75; // 3 s of 40 ms chunks captured before the socket opened
// The event_id of the session.update sent at connect: the server's error event names it when it refuses the settings.
const CONNECT_UPDATE_ID = 'page_connect_settings';
const INSTRUCTIONS_UPDATE_ID = 'page_instructions'; // ... and of an instructions edit
const VOICE_UPDATE_ID = 'page_voice'; // ... and of a voice picked while connected
const VOICE_LOCKED = 'the conversation keeps the voice it has spoken in: Disconnect and Connect to pick another';
const INSTRUCTIONS_PAUSE_MS = 800; // typing that pauses this long applies the edit, as leaving the box does
const NOTHING_SAID = '(nothing said)'; // a reply cut before its first words: not a blank bubble, which reads as a fault
const NOTHING_KEPT = '(the server kept no transcript of what was played)'; // a cut reply's, from some servers
const NOT_TRANSCRIBED = '(not transcribed)'; // a turn whose transcription failed: heard, but its words unknown
const MESSAGE_NOT_SENT = 'your message was not sent: the session ended first (it is back in the message box)';
const MIC_LOST_STATE = 'microphone lost';
const MIC_LOST = 'the microphone stopped (unplugged, or its permission taken back): nothing you say is heard. Plug it '
  + 'back in or allow it again and it is taken up again, or pick another under Microphone';
const TURN_UNFINISHED = '(the session ended before this turn did)'; // a turn still open at Disconnect or a close
// A page from another host over http: the browser gives it no microphone and no audio worklets.
const INSECURE_PAGE = 'the microphone needs a secure page: open it as http://localhost or over https';
const KEY_NOT_SENDABLE = 'a browser can send only API keys of letters, digits and !#$%&\'*+-.^_`|~ (the key travels '
  + 'as a WebSocket subprotocol): this one has other characters; give the server a key without them';

// The test hook: plain counters and lists, never read back by the page itself.
const hook = {
  state: 'idle', sessionId: null, audioDeltas: 0, audioBytes: 0, playedFrames: 0, playedSeconds: 0,
  sampleRate: 0, underruns: 0, bufferedMs: 0, capturedChunks: 0, sentChunks: 0, sentSamples: 0,
  inputPeak: 0, inputSumSquares: 0, micSettings: null, userTranscripts: [], assistantTranscripts: [],
  latenciesMs: [], errors: [], truncates: [], events: {}, timeline: [], instructions: null, typed: [],
  voice: null, replyVoices: [], // the session's voice (session.updated) and each reply's (response.created)
  heard: {}, // item_id -> the transcript of a cut reply as the server kept it
};
window.stepaudio = hook;

let audio = null;
let sock = null;
let mode = 'vad';
let streaming = false; // hands-free: after session.update; push-to-talk: while the button is held
// Push-to-talk's button (or space bar) is down: set at the press itself, since the release of a quick tap can come
// before pressTalk has flushed the playback and started streaming.
let talkHeld = false;
let presses = 0; // counts presses: a tap's press still flushing must not start streaming for the press after it
let preroll = [];
let turnEndAt = null; // performance.now() when the user's speech ended (or of the push-to-talk release)
// The user's turn the server's VAD heard start (speech_started) and has not committed: a clear that cuts it drops it.
let heardItem = null;
// This connection's input stream as the server counts it (audio ms), and for the end of each chunk sent the time it
// was captured: speech_stopped comes a whole end-of-turn silence after the speech it ends, at its audio_end_ms.
let sentMs = 0;
let pressSentMs = 0; // sentMs when this push-to-talk press began streaming
// The server refuses a commit of less audio (input_audio_buffer_commit_empty, as the OpenAI API does): a tap
// released before the microphone delivered that much is no turn.
const MIN_TURN_MS = 100;
const sentEnds = []; // [audio ms at the chunk's end, performance.now() at its capture]
const SENT_ENDS_KEPT = 1500; // 60 s of 40 ms chunks: far more than any end-of-turn silence
let activeResponse = null;
// The microphone's track ended: the session goes on deaf until another microphone is picked. The line that says so
// (null while the microphone works), taken away once one is: left, it said nothing was heard while all was.
let micLost = null;
let playingOut = false; // the reply is generated (response.done) and its audio still plays
// The message of the reply in progress: cut before any of it played, the server would keep every word generated so
// far as said, and answer the next turn as if the user had heard them.
let replyItem = null;
let defaultInstructions = ''; // the server's persona, from session.created: what an emptied box goes back to
let appliedInstructions = ''; // the session's persona as the server last said (session.updated)
let appliedVoice = ''; // ... and its voice
let instructionsTimer = null;
const dropped = new Set(); // items flushed by a barge-in: their late audio deltas are ignored
// A failed reply was shown from its response.done: the server's error event about the same failure (code
// response_failed, right after it) would show it a second time.
let replyFailureShown = false;
// A teardown is letting go of the audio: until it has, Disconnect still shows, and a click on it (or the server's
// close) ran a second teardown on the half-closed audio, which threw, and could leave another final state.
let ending = false;
const lines = new Map(); // item_id -> {el, text}

function setState(state) {
  hook.state = state;
  $('state').textContent = state;
  $('state').dataset.state = state;
}

function showError(message) {
  hook.errors.push(message);
  const li = document.createElement('li');
  li.textContent = message;
  $('errors').append(li);
  return li;
}

function line(itemId, role) {
  let entry = lines.get(itemId);
  if (!entry) {
    const el = document.createElement('div');
    el.className = `turn ${role} pending`;
    el.dataset.item = itemId;
    // dir auto: a turn in Hebrew or Arabic reads right to left, its end punctuation at its left end, as its words.
    el.innerHTML = '<span class="who"></span><span class="text" dir="auto"></span>';
    el.querySelector('.who').textContent = role === 'user' ? 'you' : 'assistant';
    el.querySelector('.text').textContent = role === 'user' ? 'listening…' : '…';
    $('conversation').append(el);
    entry = { el, text: '' };
    lines.set(itemId, entry);
  }
  return entry;
}

// The conversation is a live region: a screen reader reads what is put into it. A line whose text is unchanged (a
// transcript's done after its deltas) is left as it is, or it would be read out a second time.
function setText(entry, text) {
  if (text === entry.text && !entry.el.classList.contains('pending')) return;
  entry.text = text;
  entry.el.classList.remove('pending');
  entry.el.querySelector('.text').textContent = text;
  showLatest();
}

// A transcript's next words, added as their own text: rewriting the whole line for each delta made a screen reader
// read the line again from its first word every time.
function appendText(entry, delta) {
  const span = entry.el.querySelector('.text');
  if (entry.el.classList.contains('pending')) {
    entry.el.classList.remove('pending');
    span.textContent = '';
  }
  entry.text += delta;
  span.append(delta);
  showLatest();
}

// The newest text is at the bottom of the conversation, right above the message box: bringing the box into view shows
// both (scrolling to the bubble alone left the box, where the user types next, just below the window). Not while the
// user has scrolled up to read an earlier turn: each new word pulled the page back down under their eyes. Scrolled
// back to the bottom (to within a line), the page follows again.
let followingLatest = true;
let shownAt = 0; // window.scrollY where showLatest left the page: growing text moves no scroll position, the user does
const FOLLOW_SLACK_PX = 48;

function showLatest() {
  if (!followingLatest) return;
  $('compose').scrollIntoView({ block: 'nearest' });
  shownAt = window.scrollY;
}

function scrolled() {
  const bottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - FOLLOW_SLACK_PX;
  if (bottom) followingLatest = true;
  else if (window.scrollY < shownAt) followingLatest = false;
}

function settings() {
  return {
    url: $('url').value.trim(),
    key: $('key').value.trim(),
    mode: $('mode').value,
    silenceMs: Number($('silence-ms').value) || 800,
    deviceId: $('mic').value,
    prebufferMs: prebufferMs(new URLSearchParams(location.search).get('prebuffer_ms')),
  };
}

// A jitter buffer of NaN ms (prebuffer_ms=abc) never counts as filled: each reply would stay silent until its end.
// A value that is not a number of milliseconds is ignored, as a mode that is not vad or ptt is.
function prebufferMs(param) {
  const ms = Number(param ?? 100);
  return Number.isFinite(ms) && ms >= 0 ? ms : 100;
}

function micConstraints(deviceId) {
  return {
    deviceId: deviceId ? { exact: deviceId } : undefined,
    channelCount: 1,
    echoCancellation: $('ec').checked,
    noiseSuppression: $('ns').checked,
    autoGainControl: $('agc').checked,
  };
}

function sessionUpdate(s) {
  const turnDetection = s.mode === 'vad'
    ? { type: 'server_vad', silence_duration_ms: s.silenceMs, prefix_padding_ms: 300, interrupt_response: true }
    : null;
  const instructions = $('instructions').value.trim();
  const voice = $('voice').value;
  return {
    type: 'session.update',
    event_id: CONNECT_UPDATE_ID,
    session: {
      type: 'realtime',
      ...(instructions ? { instructions } : {}),
      audio: {
        input: {
          format: { type: 'audio/pcm', rate: 24000 },
          transcription: { model: 'whisper-1' },
          turn_detection: turnDetection,
        },
        output: { format: { type: 'audio/pcm', rate: 24000 }, ...(voice ? { voice } : {}) },
      },
    },
  };
}

// ---- microphone -> server ---------------------------------------------------------------------

function onChunk(chunk) {
  chunk.capturedAt = performance.now(); // a preroll chunk is sent later than it was heard
  hook.capturedChunks += 1;
  $('level').value = Math.min(1, chunk.peak * 2);
  if (!sock || !sock.isOpen) {
    if (mode === 'vad') {
      preroll.push(chunk);
      if (preroll.length > PREROLL_CHUNKS) preroll.shift();
    }
    return;
  }
  // A lost microphone's track delivers silence: streamed, the server was sent 25 chunks a second of nothing.
  if (streaming && !micLost) sendChunk(chunk);
}

function sendChunk(chunk) {
  sock.send({ type: 'input_audio_buffer.append', audio: toBase64(chunk.pcm) });
  hook.sentChunks += 1;
  hook.sentSamples += chunk.samples;
  sentMs += (chunk.samples * 1000) / 24000;
  sentEnds.push([sentMs, chunk.capturedAt]);
  if (sentEnds.length > SENT_ENDS_KEPT) sentEnds.shift();
  hook.inputPeak = Math.max(hook.inputPeak, chunk.peak);
  hook.inputSumSquares += chunk.sumSquares;
}

// ---- server -> speakers -----------------------------------------------------------------------

function onPlayback(msg) {
  if (msg.type === 'drained') replyPlayed();
  if (msg.type !== 'stats') return;
  hook.playedFrames = msg.playedFrames;
  hook.sampleRate = msg.sampleRate;
  hook.playedSeconds = msg.playedFrames / msg.sampleRate;
  hook.underruns = msg.underruns;
  hook.bufferedMs = msg.bufferedMs;
  $('played').textContent = `${hook.playedSeconds.toFixed(1)} s`;
  $('buffered').textContent = `${msg.bufferedMs} ms`;
}

// The reply's response.done comes as soon as it is generated, seconds before its audio has played: the pill said
// 'listening' over the assistant's voice. It says 'responding' until the last sample is played.
function replyPlayed() {
  if (!playingOut) return;
  playingOut = false;
  if (hook.state === 'responding') setState(restingState());
}

function restingState() {
  if (micLost) return MIC_LOST_STATE;
  return mode === 'vad' ? 'listening' : 'ready';
}

// Barge-in: stop playback at once and tell the server how much of the item was really played.
async function bargeIn() {
  if (!audio) return;
  const asked = performance.now();
  const unheard = replyItem; // read before the flush: the reply's response.done may come meanwhile
  const flushed = await audio.flush();
  if (!flushed) return;
  const cut = flushed.item && flushed.wasPlaying
    ? { item: flushed.item, audioEndMs: flushed.playedMs, droppedMs: flushed.droppedMs }
    : { item: unheard, audioEndMs: 0, droppedMs: 0 };
  if (!cut.item || dropped.has(cut.item) || !sock) return;
  dropped.add(cut.item);
  sock.send({ type: 'conversation.item.truncate', item_id: cut.item, content_index: 0, audio_end_ms: cut.audioEndMs });
  hook.truncates.push({ ...cut, flushMs: Math.round(performance.now() - asked), playedSeconds: hook.playedSeconds });
}

// The reply was cut where its audio stopped playing (the server confirms each cut, its own barge-in's too): say so
// on its bubble, and where; a later, more exact cut of the same item moves the note.
function markCut(itemId, audioEndMs) {
  const entry = lines.get(itemId);
  if (!entry) return;
  entry.el.classList.add('cut');
  let note = entry.el.querySelector('.note');
  if (!note) {
    note = document.createElement('span');
    note.className = 'note';
    entry.el.append(note);
  }
  note.textContent = `interrupted after ${(audioEndMs / 1000).toFixed(2)} s`;
}

// When the microphone captured the input stream up to audioMs (now, if the page has sent no audio that far).
function capturedAt(audioMs) {
  const sent = sentEnds.find(([endMs]) => endMs >= audioMs);
  return sent ? sent[1] : performance.now();
}

function recordLatency() {
  if (turnEndAt === null) return;
  const ms = Math.round(performance.now() - turnEndAt);
  turnEndAt = null;
  hook.latenciesMs.push(ms);
  const sorted = [...hook.latenciesMs].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  $('latency').textContent = `${ms} ms (median ${median} ms over ${sorted.length})`;
}

// A new session's conversation on the server is empty: the turns still shown from an earlier one read as remembered
// unless a line says otherwise, and their item ids (another server's may repeat) must not take this session's text.
function startConversation() {
  lines.clear();
  dropped.clear();
  const last = $('conversation').lastElementChild;
  if (!last || last.classList.contains('session-break')) return;
  const el = document.createElement('div');
  el.className = 'session-break';
  el.textContent = 'new session: the assistant does not remember the conversation above';
  $('conversation').append(el);
  showLatest();
}

const handlers = {
  'session.created': (e) => {
    hook.sessionId = e.session && e.session.id;
    startConversation();
    defaultInstructions = (e.session && e.session.instructions) || '';
    $('instructions').placeholder = defaultInstructions;
    appliedInstructions = defaultInstructions;
    // Show the server's default persona so that it can be edited rather than guessed.
    if (!$('instructions').value.trim()) $('instructions').value = defaultInstructions;
    appliedVoice = outputVoice(e.session) || appliedVoice;
  },
  'session.updated': (e) => {
    hook.instructions = e.session ? e.session.instructions : null;
    appliedInstructions = hook.instructions || '';
    hook.voice = outputVoice(e.session);
    appliedVoice = hook.voice || appliedVoice;
    if (!activeResponse && !playingOut) setState(restingState()); // an edit while a reply plays leaves 'responding'
  },
  'conversation.item.added': (e) => {
    const item = e.item || {};
    const part = (item.content || [])[0];
    if (item.role === 'user' && part && part.type === 'input_text') setText(line(item.id, 'user'), part.text);
  },
  'input_audio_buffer.speech_started': (e) => {
    heardItem = e.item_id;
    setState('speaking');
    line(e.item_id, 'user');
    bargeIn();
  },
  'input_audio_buffer.speech_stopped': (e) => {
    turnEndAt = capturedAt(e.audio_end_ms);
    setState('thinking');
  },
  'input_audio_buffer.committed': (e) => {
    if (e.item_id === heardItem) heardItem = null;
    line(e.item_id, 'user');
  },
  // A clear cutting the speech heard (its speech_stopped comes first) drops the turn: no reply comes, and the pill
  // said 'thinking' for good, the turn's bubble 'listening…'.
  'input_audio_buffer.cleared': () => {
    if (heardItem === null) return;
    const entry = lines.get(heardItem);
    if (entry && entry.el.classList.contains('pending')) {
      entry.el.remove();
      lines.delete(heardItem);
    }
    heardItem = null;
    turnEndAt = null;
    if (hook.state === 'thinking' && !activeResponse) setState(restingState());
  },
  'conversation.item.input_audio_transcription.delta': (e) => appendText(line(e.item_id, 'user'), e.delta),
  'conversation.item.input_audio_transcription.completed': (e) => {
    setText(line(e.item_id, 'user'), e.transcript || '(nothing heard)');
    hook.userTranscripts.push(e.transcript);
  },
  'conversation.item.input_audio_transcription.failed': (e) => {
    setText(line(e.item_id, 'user'), NOT_TRANSCRIBED); // no words will come: not 'listening…' for good
    showError(`transcription failed: ${e.error ? e.error.message : 'unknown error'}`);
  },
  'response.created': (e) => {
    activeResponse = e.response.id;
    playingOut = false; // an earlier reply's end of playback is not this one's
    hook.replyVoices.push(outputVoice(e.response));
    setState('responding');
  },
  'response.output_item.added': (e) => {
    if (e.item && e.item.type === 'message') {
      line(e.item.id, 'assistant');
      replyItem = e.item.id;
    }
  },
  'response.output_audio.delta': (e) => {
    if (dropped.has(e.item_id)) return;
    hook.audioDeltas += 1;
    lockVoice();
    recordLatency();
    const bytes = fromBase64(e.delta);
    hook.audioBytes += bytes.length;
    audio.play(e.item_id, pcm16ToFloat(bytes));
  },
  'response.output_audio_transcript.delta': (e) => appendText(line(e.item_id, 'assistant'), e.delta),
  'response.output_audio_transcript.done': (e) => {
    // Empty when the reply was cut (a new message, talking over it) before its first words: say so, not a blank.
    setText(line(e.item_id, 'assistant'), e.transcript || NOTHING_SAID);
    hook.assistantTranscripts.push(e.transcript);
  },
  'response.output_text.delta': (e) => appendText(line(e.item_id, 'assistant'), e.delta),
  // No end of playback at response.output_audio.done: an interrupted reply's items close too, right before its
  // cancelled response.done, and ending playback there would hide a barge-in that falls between two sentences.
  'response.done': (e) => {
    const r = e.response || {};
    // A reply cancelled mid-way (the server's own barge-in comes as response.done before speech_started):
    // what is still queued will never be heard, so drop it now and tell the server how much was played.
    // Ending it instead would make a barge-in that falls in a gap between two sentences look like
    // playback had finished, and no truncate would be sent.
    if (r.status === 'cancelled') bargeIn(); else audio.endOfReply();
    activeResponse = null;
    replyItem = null;
    if (r.status === 'failed') {
      const err = r.status_details && r.status_details.error;
      showError(`reply failed: ${err ? err.message || err.code : 'unknown error'}`);
      replyFailureShown = true;
    }
    // A cancelled reply's audio was flushed: nothing of it is left to play.
    if (hook.state === 'responding' && r.status === 'cancelled') setState(restingState());
    else playingOut = hook.state === 'responding';
  },
  // The server kept only the words played before the cut, but its event says where the audio was cut, not which
  // words were heard: ask for the item as it is now, so that the bubble does not show words that were never played.
  'conversation.item.truncated': (e) => {
    markCut(e.item_id, e.audio_end_ms);
    if (sock) sock.send({ type: 'conversation.item.retrieve', item_id: e.item_id });
  },
  'conversation.item.retrieved': (e) => {
    const item = e.item || {};
    const entry = lines.get(item.id);
    if (!entry || !entry.el.classList.contains('cut')) return;
    const part = (item.content || [])[0];
    // OpenAI's server deletes a cut item's transcript: which words were heard is not known, and the whole reply
    // would show words that were never played.
    const kept = part && typeof part.transcript === 'string' ? part.transcript : null;
    hook.heard[item.id] = kept;
    setText(entry, kept === null ? NOTHING_KEPT : kept || NOTHING_SAID);
  },
  error: (e) => {
    const err = e.error || {};
    if (err.code === 'response_failed' && replyFailureShown) {
      replyFailureShown = false;
      return;
    }
    // A refused connect-time update leaves none of it applied (another turn detection, the default persona), so the
    // session is not the one asked for: disconnect, so that the setting can be corrected and connected again.
    if (err.event_id === CONNECT_UPDATE_ID) {
      showError(`the server refused the settings${err.code ? ` (${err.code})` : ''}: ${err.message || 'unknown'}`);
      teardown('error');
      return;
    }
    const live = liveUpdates[err.event_id];
    if (live) {
      // The session keeps what it had: show that again, not the refused change as if it applied.
      const code = err.code ? ` (${err.code})` : '';
      showError(`the server kept the previous ${live.what}${code}: ${err.message || 'unknown'}`);
      live.restore();
      return;
    }
    showError(`server error${err.code ? ` (${err.code})` : ''}: ${err.message || 'unknown'}`);
  },
};

// Changes sent while connected, by the event_id of their session.update: what a refusal leaves in use.
const liveUpdates = {
  [INSTRUCTIONS_UPDATE_ID]: { what: 'instructions', restore: () => { $('instructions').value = appliedInstructions; } },
  [VOICE_UPDATE_ID]: { what: 'voice', restore: () => { $('voice').value = appliedVoice; } },
};

// The voice of a session or of a response (both say it as audio.output.voice).
function outputVoice(obj) {
  return (obj && obj.audio && obj.audio.output && obj.audio.output.voice) || null;
}

// ---- connect / disconnect ---------------------------------------------------------------------

// The server's voices in the picker, its default chosen unless another of them was. A server without /voices (or
// still loading) leaves the picker as it was: an empty one sends no voice, and the session speaks in its default.
async function refreshVoices(wsUrl) {
  const url = serverUrl(wsUrl, '/voices');
  if (!url) return;
  let list;
  try {
    const res = await fetchOrGiveUp(url);
    if (!res.ok) return;
    list = await res.json();
  } catch {
    return;
  }
  const select = $('voice');
  const chosen = list.voices.includes(select.value) ? select.value : list.default;
  select.replaceChildren(...list.voices.map((name) => new Option(name, name)));
  select.value = chosen;
}

// Once the session has spoken, the server keeps its voice (cannot_update_voice): a picker left open would only
// lead to that refusal. A new session (Connect) may pick again.
function lockVoice() {
  if ($('voice').disabled) return;
  $('voice').disabled = true;
  $('voice').title = VOICE_LOCKED;
}

// A voice picked while connected applies at once, so that the next reply speaks in it.
function updateVoice() {
  const voice = $('voice').value;
  if (!sock || !sock.isOpen || !voice || voice === appliedVoice) return;
  sock.send({ type: 'session.update', event_id: VOICE_UPDATE_ID,
              session: { type: 'realtime', audio: { output: { voice } } } });
}

async function connect() {
  const s = settings();
  mode = s.mode;
  // Disabled while connecting, the button drops the keyboard's focus to the page, and Tab would start over at the top.
  const refocus = document.activeElement === $('connect');
  $('connect').disabled = true;
  setState('starting');
  // What went wrong before (a refused key, a server that was down, a dropped connection) was an earlier attempt's: this
  // one's outcome is the page's one current line, not a line under a stale one. Counted in hook.errors all the same.
  $('errors').replaceChildren();
  try {
    // Said before trying: the attempt fails on a missing browser API ("reading 'addModule'"), which says nothing.
    if (!window.isSecureContext) throw new Error(INSECURE_PAGE);
    if (!keyFitsSubprotocol(s.key)) throw new Error(KEY_NOT_SENDABLE);
    const problem = await serverProblem(s.url);
    if (problem) throw new Error(problem);
    await refreshVoices(s.url);
    audio = new AudioEngine({ onChunk, onPlayback, onMicEnded: microphoneEnded });
    await audio.start(micConstraints(s.deviceId), { prebufferMs: s.prebufferMs });
    hook.micSettings = audio.stream.getAudioTracks()[0].getSettings();
    hook.sampleRate = audio.sampleRate;
    await refreshMicrophones();
    const socket = new RealtimeSocket(s.url, s.key);
    sock = socket;
    sock.onAny = (e) => {
      hook.events[e.type] = (hook.events[e.type] || 0) + 1;
      if (e.type !== 'response.output_audio.delta' && hook.timeline.length < 400) {
        hook.timeline.push([Math.round(performance.now()), e.type]);
      }
    };
    for (const [type, fn] of Object.entries(handlers)) sock.on(type, fn);
    sock.onClose = (e) => {
      // The page closes a socket only in teardown, which lets go of it first: a close that comes for a socket let go
      // of leaves that teardown's state (an error) as it is, and a newer connection up.
      if (sock !== socket) return;
      showError(closedMessage(e));
      teardown('closed');
    };
    await openSocket(socket, s.url);
    sentMs = 0; // each session's server counts its input audio from 0
    sentEnds.length = 0;
    sock.send(sessionUpdate(s));
    if (mode === 'vad') {
      for (const chunk of preroll) sendChunk(chunk);
      streaming = true;
    }
    preroll = [];
    $('connect').textContent = 'Disconnect';
    $('connect').disabled = false;
    $('talk').disabled = mode !== 'ptt';
    setConnectSettingsDisabled(true);
    $('message').disabled = $('send').disabled = false;
  } catch (err) {
    showError(`could not start: ${problemText(err)}`);
    await teardown('error');
  } finally {
    if (refocus && document.activeElement === document.body) $('connect').focus();
  }
}

async function teardown(state) {
  if (ending) return;
  ending = true;
  try {
    await letGo();
  } finally {
    // Whatever a step of letting go threw, the page leaves its teardown: it stayed 'ending', every later Disconnect
    // and the server's close were ignored, and Connect never came back.
    ending = false;
    endTeardown(state);
  }
}

// Each step runs though one before it threw (a socket's close, an AudioContext whose close rejected): a step
// skipped could leave the microphone live. What threw goes to the console: the session is over either way.
async function letGo() {
  streaming = false;
  talkHeld = false;
  showHeld(false);
  activeResponse = null;
  playingOut = false;
  micLost = null;
  replyItem = null;
  turnEndAt = null;
  heardItem = null;
  const [socket, engine] = [sock, audio];
  sock = null;
  await tryStep('closing the connection', () => socket && socket.close());
  await tryStep('ending the pending lines', endPendingLines);
  if (!engine) return;
  // A reply still playing stops here: its bubble says where, as a barge-in's does, not read as heard in full.
  await tryStep('flushing the playback', async () => {
    const cut = await engine.flush();
    if (cut && cut.item && cut.remaining > 0) markCut(cut.item, cut.playedMs);
  });
  await tryStep('closing the audio', () => engine.stop());
}

async function tryStep(what, step) {
  try {
    await step();
  } catch (err) {
    console.error(`teardown: ${what} failed:`, err);
  }
}

function endTeardown(state) {
  audio = null;
  // The microphone's chunks that came while the audio was let go of were kept as a preroll (no socket): left, the
  // next Connect sent them first, words said to this session heard as the next one's.
  preroll = [];
  // The microphone and the playback are closed: a meter left lit read as a microphone still live.
  $('level').value = 0;
  hook.bufferedMs = 0;
  $('buffered').textContent = '0 ms';
  $('connect').textContent = 'Connect';
  $('connect').disabled = false;
  $('talk').disabled = true;
  setConnectSettingsDisabled(false);
  $('voice').disabled = false;
  $('voice').title = '';
  $('message').disabled = $('send').disabled = true;
  setState(state);
}

// A line still waiting for its words gets none from a closed session: 'listening…' left on it read as a page still
// listening, the turn still to be answered.
function endPendingLines() {
  for (const entry of lines.values()) {
    if (entry.el.classList.contains('pending')) {
      setText(entry, entry.el.classList.contains('user') ? TURN_UNFINISHED : NOTHING_SAID);
    }
  }
}

// The server, its key, the mode, the turn's silence and the microphone's processing take effect when connecting:
// locked meanwhile, so that a change does not look applied when it is not.
function setConnectSettingsDisabled(on) {
  for (const id of ['url', 'key', 'mode', 'silence-ms', 'ec', 'ns', 'agc']) $(id).disabled = on;
}

// ---- push-to-talk -----------------------------------------------------------------------------

function pushToTalkLive() {
  return mode === 'ptt' && sock !== null && sock.isOpen;
}

async function pressTalk() {
  // A lost microphone delivers silence: a press sent it as a turn, which the server answered as if something was said.
  if (!pushToTalkLive() || talkHeld || micLost) return;
  talkHeld = true;
  const press = ++presses;
  showHeld(true);
  if (activeResponse) sock.send({ type: 'response.cancel' });
  await bargeIn();
  // Released (or disconnected) during the flush: a tap that said nothing, not a turn that never ends. Pressed again
  // meanwhile: that press goes on, alone (this one's clear would empty the buffer the next one fills).
  if (!talkHeld || !sock || press !== presses) return;
  sock.send({ type: 'input_audio_buffer.clear' });
  pressSentMs = sentMs;
  streaming = true;
  setState('speaking');
}

// The space bar talks while a push-to-talk session is live (outside text boxes). Otherwise it does what it does on any
// page, pressing the focused button or opening the focused list: taken always, it left Connect unreachable by it.
// Enter, the other key that presses a button, talks while held on the focused Hold-to-talk button: it did nothing.
function talkKey(e) {
  const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement;
  return (e.code === 'Space' && !typing) || (e.key === 'Enter' && e.target === $('talk'));
}

function talkKeyDown(e) {
  if (!talkKey(e) || !pushToTalkLive()) return;
  // A held key repeats: a repeat let through pressed the focused button (Disconnect) when the key was released.
  e.preventDefault();
  if (!e.repeat) pressTalk();
}

// A screen reader presses a button with a click alone (no pointer down or up, no key event): 'Hold to talk' did
// nothing for its user. Such a click starts the turn and the next one sends it; aria-pressed says which is next.
function clickTalk(e) {
  if (e.detail !== 0) return; // a pointer's click, after its own press and release
  if (talkHeld) releaseTalk(); else pressTalk();
}

function showHeld(on) {
  $('talk').classList.toggle('held', on);
  $('talk').setAttribute('aria-pressed', String(on));
}

function releaseTalk() {
  if (!talkHeld) return;
  talkHeld = false;
  showHeld(false);
  if (!streaming) return;
  streaming = false;
  if (sentMs - pressSentMs < MIN_TURN_MS) {
    sock.send({ type: 'input_audio_buffer.clear' });
    setState(restingState());
    return;
  }
  sock.send({ type: 'input_audio_buffer.commit' });
  sock.send({ type: 'response.create' });
  turnEndAt = performance.now();
  setState('thinking');
}

// ---- typed messages and instructions ----------------------------------------------------------

async function sendTyped(event) {
  event.preventDefault();
  const text = $('message').value.trim();
  if (!text || !sock || !sock.isOpen) return;
  $('message').value = '';
  // A new message supersedes a reply still playing, as speaking over it would.
  if (activeResponse) sock.send({ type: 'response.cancel' });
  await bargeIn();
  // The session can end during the flush (Disconnect, the server closing): the message never went out, and sending
  // it threw on the gone socket, the text lost from the box without a word.
  if (!sock || !sock.isOpen) {
    if (!$('message').value) $('message').value = text;
    showError(MESSAGE_NOT_SENT);
    return;
  }
  sock.send({ type: 'conversation.item.create',
              item: { type: 'message', role: 'user', content: [{ type: 'input_text', text }] } });
  sock.send({ type: 'response.create' });
  hook.typed.push(text);
  turnEndAt = performance.now();
  setState('thinking');
}

function updateInstructions() {
  clearTimeout(instructionsTimer);
  // An emptied box asks for the server's default persona back (shown as its placeholder): an empty one would leave
  // the model without any.
  const instructions = $('instructions').value.trim() || defaultInstructions;
  if (!sock || !sock.isOpen || instructions === appliedInstructions) return;
  sock.send({ type: 'session.update', event_id: INSTRUCTIONS_UPDATE_ID, session: { type: 'realtime', instructions } });
}

// An edit applies once typing pauses, so that a user who edits the persona and then just talks is answered by it.
function instructionsTyped() {
  clearTimeout(instructionsTimer);
  instructionsTimer = setTimeout(updateInstructions, INSTRUCTIONS_PAUSE_MS);
}

// ---- microphones ------------------------------------------------------------------------------

// The microphone picked ('' for the default): the list shows the default while it is unplugged, and it again once it
// is back.
let chosenMic = '';

function refreshMicrophones() {
  return listMicrophones($('mic'), chosenMic);
}

// Lost, the microphone was silent with the page still 'listening': the user talked to a session that heard nothing.
function microphoneEnded() {
  $('level').value = 0;
  micLost = showError(MIC_LOST);
  if (!['thinking', 'responding'].includes(hook.state)) setState(restingState());
  refreshMicrophones().catch(() => {});
}

async function switchMicrophone() {
  chosenMic = $('mic').value;
  if (!audio) return;
  try {
    await useChosenMicrophone();
  } catch (err) {
    showError(`could not open that microphone: ${err.message || err}`);
  }
}

async function useChosenMicrophone() {
  hook.micSettings = await audio.useMicrophone(micConstraints($('mic').value));
  if (micLost) {
    micLost.remove();
    micLost = null;
    if (hook.state === MIC_LOST_STATE) setState(restingState());
  }
}

// The microphone may be back (plugged in again, allowed again). Picking the option already chosen fires no change, so
// with the microphone lost the user had to Disconnect and Connect: the chosen one is opened again once it is listed;
// until then (another device came or went) the lost line stays. The default is whichever the system now gives.
async function microphoneMayBeBack() {
  await refreshMicrophones();
  if (micLost && audio && $('mic').value === chosenMic) await useChosenMicrophone().catch(() => {});
}

// ---- page setup -------------------------------------------------------------------------------

function init() {
  const q = new URLSearchParams(location.search);
  $('url').value = q.get('url') || realtimeUrlAt(location.href);
  $('key').value = q.get('key') || '';
  if (q.get('mode') === 'ptt' || q.get('mode') === 'vad') $('mode').value = q.get('mode');
  if (q.get('silence_ms')) $('silence-ms').value = q.get('silence_ms');
  if (q.get('instructions')) $('instructions').value = q.get('instructions');
  $('compose').addEventListener('submit', sendTyped);
  $('instructions').addEventListener('change', updateInstructions);
  $('instructions').addEventListener('input', instructionsTyped);
  for (const id of ['ec', 'ns', 'agc']) if (q.has(id)) $(id).checked = q.get(id) !== '0';
  $('connect').addEventListener('click', () => (sock || audio ? teardown('idle') : connect()));
  $('mic').addEventListener('change', switchMicrophone);
  $('voice').addEventListener('change', updateVoice);
  const talk = $('talk');
  talk.addEventListener('pointerdown', pressTalk);
  talk.addEventListener('click', clickTalk);
  for (const ev of ['pointerup', 'pointerleave', 'pointercancel']) talk.addEventListener(ev, releaseTalk);
  window.addEventListener('scroll', scrolled, { passive: true });
  document.addEventListener('keydown', talkKeyDown);
  document.addEventListener('keyup', (e) => { if (e.code === 'Space' || talkKey(e)) releaseTalk(); });
  if (!window.isSecureContext) showError(INSECURE_PAGE);
  refreshMicrophones().catch(() => {});
  // A microphone plugged in (or out) shows in the list at once, to be picked.
  if (navigator.mediaDevices) watchMicrophones(() => microphoneMayBeBack().catch(() => {})); // none if not secure
  refreshVoices($('url').value.trim());
}

init();
