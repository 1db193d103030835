"""Engine adapters, voice library, router and audio utilities."""
