//! Why a worker could not start, enroll or serve: what its caller, the
//! binary, reports before it exits.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The flags given cannot work together (or with this machine).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] qala_tls::TlsError),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{what}: {source}")]
    Transport {
        what: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("enrollment refused by {coordinator}: {code:?}: {message}")]
    Enrollment { coordinator: String, code: tonic::Code, message: String },
    #[error("serving: {0}")]
    Serve(#[from] tonic::transport::Error),
}
