"""What the benchmark tools and the test tool share, and what the tests share with them.

- ``stats``: percentiles and the summaries every tool prints.
- ``machine``: who used the CPU meanwhile (the machine is shared), waiting for it to be quiet,
  memory, and the per-section conditions table.
- ``probes``: this process's event-loop lag, a real-time player's playback clock (underruns as
  a listener hears them), an agent worker seen from outside (CPU, RSS, Prometheus metrics).
- ``processes``: servers started on a free loopback port and waited for (``hive-tts serve``,
  Piper's own HTTP server, loudness-tts).
- ``workloads``: the texts, and one reply over the WebSocket or HTTP, timed.
- ``report``: tables, headings, the ``--json`` / ``--wait-quiet`` arguments and the JSON writer.
- ``transcriber``, ``rooms``, ``fake_edge_service``, ``reference_audio``, ``tiny_xtts``,
  ``tiny_speecht5``: whisper round trips, LiveKit participants and workers, a fake of Edge TTS,
  a voice-like reference signal and tiny random-weight models, used by the tests as well
  (``tests/`` re-exports them under their old names).

Nothing here is imported by the service or by ``tools.fetch_models`` (the image's entry points).
"""
