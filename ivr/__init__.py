"""The application: the `hotline` CLI and `serve`, call handling and flows, channels, HTTP,
tickets, call records, settings and the embedded Redis."""
