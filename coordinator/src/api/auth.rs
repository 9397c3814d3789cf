//! Securing the gRPC server: TLS (server certificate from files), optional
//! client certificates (mTLS) and bearer tokens.

/// How the server is secured. The default is plain, unauthenticated gRPC,
/// which the roles only allow on loopback.
#[derive(Debug, Clone, Default)]
pub struct Security {}
