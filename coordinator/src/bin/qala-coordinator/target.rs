//! Where an administrative command works: a store directly (while no
//! coordinator runs on it) or a running coordinator's API, with the
//! clients of its services.

use anyhow::{Context, bail};
use qala_coordinator::config::AdminTarget;
use qala_coordinator::store::{self, Guarded};
use qala_proto::v1::{admin_client::AdminClient, agents_client::AgentsClient, hunts_client::HuntsClient};
use qala_tls::{BearerToken, pki};
use std::sync::Arc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub(crate) type Admin = AdminClient<InterceptedService<Channel, BearerToken>>;
pub(crate) type Agents = AgentsClient<InterceptedService<Channel, BearerToken>>;
pub(crate) type Hunts = HuntsClient<InterceptedService<Channel, BearerToken>>;

pub(crate) enum Target {
    Store(Arc<Guarded>),
    Server(Box<Admin>, Box<Agents>, Box<Hunts>),
}

pub(crate) async fn target(t: &AdminTarget) -> anyhow::Result<Target> {
    qala_tls::install_crypto_provider();
    match (&t.store, &t.server) {
        (Some(spec), None) => {
            let s = store::open(&t.store_auth.spec(spec)?).await.with_context(|| format!("opening {spec}"))?;
            Ok(Target::Store(Guarded::new(s)))
        }
        (None, Some(url)) => {
            let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            if t.insecure {
                qala_tls::check_plaintext_url(url)?;
            } else {
                if !url.starts_with("https://") {
                    bail!("{url}: use https:// (or --insecure for a loopback coordinator without TLS)");
                }
                // The root's list beside the CA file, if there is one: a
                // revoked coordinator is refused here too.
                let crls = qala_tls::CrlSet::new();
                if let Some(ca) = &t.ca {
                    let beside = ca.with_file_name(pki::CRL);
                    if let Err(e) = crls.load(&beside) {
                        eprintln!("qala-coordinator: {e} (not checking revocation)");
                    }
                }
                endpoint = qala_tls::secure_endpoint(endpoint, t.ca.as_deref(), None, crls, qala_tls::Expect::Coordinator)?;
            }
            let token = qala_tls::read_token(t.token_file.as_deref(), t.token.as_deref())?
                .context("an admin token is needed: --token-file FILE or QALA_TOKEN")?;
            let channel = endpoint.connect().await.with_context(|| format!("connecting to {url}"))?;
            let agents = AgentsClient::with_interceptor(channel.clone(), BearerToken::new(Some(&token))?);
            let hunts = HuntsClient::with_interceptor(channel.clone(), BearerToken::new(Some(&token))?);
            let admin = AdminClient::with_interceptor(channel, BearerToken::new(Some(&token))?)
                .max_decoding_message_size(qala_proto::MAX_MESSAGE_BYTES);
            Ok(Target::Server(Box::new(admin), Box::new(agents), Box::new(hunts)))
        }
        _ => bail!("say where: --store SPEC (no coordinator running on it) or --server URL --ca FILE --token-file FILE"),
    }
}

pub(crate) fn denied(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}
