//! Why a coordinator could not start (or serve): what its caller, the
//! binary, reports before it exits.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] qala_tls::TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Rules(#[from] qala_engine::RulesError),
    #[error(transparent)]
    Clamd(#[from] crate::clamd::ClamdError),
    #[error(transparent)]
    Siem(#[from] crate::siem::SiemError),
    #[error("serving: {0}")]
    Serve(#[from] tonic::transport::Error),
}
