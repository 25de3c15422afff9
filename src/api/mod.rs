//! The REST API on the Unix socket (placeholder until the control plane lands).
