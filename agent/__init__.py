"""The LiveKit agent worker (joins rooms, publishes speech as audio tracks)."""
