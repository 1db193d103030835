"""HIVE TTS: streaming multi-engine text-to-speech for LiveKit."""
