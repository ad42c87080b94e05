"""SIP telephony bridge: phone calls (SIP over UDP, G.711 RTP) to Realtime agent sessions.

Pure cores (no I/O, no clock): `message` (SIP parse/serialize), `sdp` (offer/answer), `rtp` (packets, our
outbound stream, RFC 4733 DTMF), `jitter` (reordering jitter buffer), `ua` (the UAS dialog/transaction machine).
Shell: `bridge.SipBridge` (asyncio UDP + one `clients.RealtimeClient` per call). CLI: `cli.main(argv)`.
Errors: `errors` (SipError tree).
"""
