"""The application: the `hotline` CLI, `serve`, settings and the embedded Redis."""
