"""The control API's parts: request parsing, errors, auth, limits, metrics, WebSocket sessions."""
