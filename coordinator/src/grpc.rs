//! The gRPC front door: `qala.v1.Scanner`, `qala.v1.Admin` and
//! `qala.v1.Agents` on the main listener, `qala.v1.Cluster` on the cluster
//! listener. Each method finds the credentials (bearer token, peer address,
//! client certificate) and the bytes, and hands them to the [`Core`],
//! which does the rest; its errors become status codes in [`status`].

use crate::auth::{Credentials, Op};
use crate::core::{Core, CoreError};
use futures::StreamExt;
use qala_proto::v1::{self as pb, scan_request::Msg};
use qala_tls::PeerCert;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// gRPC metadata key of the retry hint sent with RESOURCE_EXHAUSTED.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// The core's errors as gRPC status codes: the one place gRPC maps them.
/// A busy answer carries its retry hint (`retry-after-ms`), which the agent
/// honours (adding jitter).
pub fn status(e: CoreError) -> Status {
    let message = e.to_string();
    match e {
        CoreError::Busy { retry_after, .. } => {
            let mut s = Status::resource_exhausted(message);
            if let Ok(v) = retry_after.as_millis().to_string().parse() {
                s.metadata_mut().insert(RETRY_AFTER_MS, v);
            }
            s
        }
        CoreError::Invalid(_) => Status::invalid_argument(message),
        CoreError::Unauthenticated(_) => Status::unauthenticated(message),
        CoreError::Denied(_) => Status::permission_denied(message),
        CoreError::NotFound(_) => Status::not_found(message),
        CoreError::FailedPrecondition(_) => Status::failed_precondition(message),
        CoreError::AlreadyExists(_) => Status::already_exists(message),
        CoreError::Unavailable(_) => Status::unavailable(message),
        CoreError::Timeout(_) => Status::deadline_exceeded(message),
        CoreError::Interrupted(_) => Status::cancelled(message),
        CoreError::Internal(_) => Status::internal(message),
    }
}

/// Checks who calls before the call's message is decoded: a caller with
/// no valid credentials is answered UNAUTHENTICATED after reading the
/// headers only, never after decoding a message of up to 16 MiB (tonic
/// runs an interceptor before the body). The handler checks the role.
#[derive(Clone)]
pub struct Admission {
    core: Arc<Core>,
}

impl Admission {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

impl tonic::service::Interceptor for Admission {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match self.core.identify(&credentials(&request)) {
            Err(e @ CoreError::Unauthenticated(_)) => Err(status(e)),
            _ => Ok(request),
        }
    }
}

/// A core call's answer as a gRPC response.
fn answer<T>(r: Result<T, CoreError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(status)
}

fn credentials<T>(request: &Request<T>) -> Credentials {
    let token = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.strip_prefix("Bearer ").or_else(|| s.strip_prefix("bearer ")))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    Credentials { token, peer: qala_tls::peer_info(request).and_then(|p| p.remote), cert: peer_cert(request) }
}

/// The client's leaf certificate, verified by the handshake against the cluster CA.
fn peer_cert<T>(request: &Request<T>) -> Option<PeerCert> {
    qala_tls::peer_info(request)?.cert.as_deref().cloned()
}

pub struct ScannerService {
    core: Arc<Core>,
}

impl ScannerService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl pb::scanner_server::Scanner for ScannerService {
    async fn lookup(&self, request: Request<pb::LookupRequest>) -> Result<Response<pb::LookupResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Lookup).map_err(status)?;
        let req = request.into_inner();
        answer(self.core.lookups().lookup(&caller, req.sha256, req.brief, req.no_sightings).await)
    }

    async fn scan(&self, request: Request<Streaming<pb::ScanRequest>>) -> Result<Response<pb::ScanResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Scan).map_err(status)?;
        let mut stream = request.into_inner();
        let stall = self.core.uploads().upload_stall();
        let first = tokio::time::timeout(stall, stream.message())
            .await
            .map_err(|_| Status::deadline_exceeded(format!("Scan: no header within {} s", stall.as_secs())))??;
        let header = match first.and_then(|m| m.msg) {
            Some(Msg::Header(h)) => h,
            _ => return Err(Status::invalid_argument("Scan: the first message must be a header")),
        };
        let body = stream
            .map(|m| match m {
                Ok(pb::ScanRequest { msg: Some(Msg::Chunk(chunk)) }) => Ok(chunk),
                Ok(_) => Err(CoreError::Invalid("Scan: only the first message may be a header".into())),
                Err(e) => Err(CoreError::Interrupted(format!("upload interrupted: {}", e.message()))),
            })
            .boxed();
        answer(self.core.uploads().scan(&caller, header, body).await)
    }

    async fn get_verdict(&self, request: Request<pb::GetVerdictRequest>) -> Result<Response<pb::GetVerdictResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::GetVerdict).map_err(status)?;
        answer(self.core.lookups().get_verdict(&caller, &request.into_inner().sha256).await)
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Status).map_err(status)?;
        answer(self.core.status(&caller))
    }
}

pub struct AdminService {
    core: Arc<Core>,
}

impl AdminService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn add_token(&self, request: Request<pb::AddTokenRequest>) -> Result<Response<pb::AddTokenResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin).map_err(status)?;
        let req = request.into_inner();
        answer(self.core.admin().add_token(&caller, &req).await)
    }

    async fn list_tokens(&self, request: Request<pb::ListTokensRequest>) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin).map_err(status)?;
        answer(self.core.admin().list_tokens(&caller).await)
    }

    async fn revoke_token(&self, request: Request<pb::RevokeTokenRequest>) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin).map_err(status)?;
        answer(self.core.admin().revoke_token(&caller, &request.into_inner().name).await)
    }

    async fn reload_rules(&self, request: Request<pb::ReloadRulesRequest>) -> Result<Response<pb::ReloadRulesResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin).map_err(status)?;
        answer(self.core.admin().reload_rules(&caller).await)
    }

    async fn add_iocs(&self, request: Request<pb::AddIocsRequest>) -> Result<Response<pb::AddIocsResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin).map_err(status)?;
        let req = request.into_inner();
        let added = self.core.iocs().add(&caller, &req.list, &req.text, "grpc").await.map_err(status)?;
        Ok(Response::new(pb::AddIocsResponse { added: added as u64 }))
    }

    async fn remove_ioc(&self, request: Request<pb::RemoveIocRequest>) -> Result<Response<pb::RemoveIocResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin).map_err(status)?;
        let req = request.into_inner();
        let removed =
            self.core.iocs().remove(&caller, &req.list, &req.kind, &req.digest.to_ascii_lowercase()).await.map_err(status)?;
        Ok(Response::new(pb::RemoveIocResponse { removed }))
    }

    async fn list_iocs(&self, request: Request<pb::ListIocsRequest>) -> Result<Response<pb::ListIocsResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::GetVerdict).map_err(status)?;
        let r = request.into_inner();
        let page = self.core.iocs().list(&caller, &r.after, r.limit as usize).await.map_err(status)?;
        Ok(Response::new(pb::ListIocsResponse { entries: page.entries, next: page.next, total: page.total }))
    }

    async fn revoke_worker(
        &self,
        request: Request<pb::RevokeWorkerRequest>,
    ) -> Result<Response<pb::RevokeWorkerResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin).map_err(status)?;
        let req = request.into_inner();
        if !req.serial.is_empty() {
            return answer(self.core.revocation().revoke_serial(&caller, &req.serial).await);
        }
        answer(self.core.revocation().revoke(&caller, &req.worker_id, req.client).await)
    }

    async fn publish_crl(&self, request: Request<pb::PublishCrlRequest>) -> Result<Response<pb::PublishCrlResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin).map_err(status)?;
        answer(self.core.revocation().publish(&caller, &request.get_ref().crl).await)
    }
}

pub struct AgentsService {
    core: Arc<Core>,
}

impl AgentsService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl pb::agents_server::Agents for AgentsService {
    async fn enroll(&self, request: Request<pb::EnrollAgentRequest>) -> Result<Response<pb::EnrollAgentResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::EnrollAgent).map_err(status)?;
        answer(self.core.agents().enroll(&caller, request.into_inner()).await)
    }

    async fn checkin(&self, request: Request<pb::CheckinRequest>) -> Result<Response<pb::CheckinResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::AgentReport).map_err(status)?;
        answer(self.core.agents().checkin(&caller, request.into_inner()).await)
    }

    async fn report_actions(
        &self,
        request: Request<pb::ReportActionsRequest>,
    ) -> Result<Response<pb::ReportActionsResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::AgentReport).map_err(status)?;
        answer(self.core.agents().report_actions(&caller, request.into_inner()).await)
    }

    async fn list_agents(&self, request: Request<pb::ListAgentsRequest>) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Inventory).map_err(status)?;
        answer(self.core.agents().list(&caller).await)
    }

    async fn gone(&self, request: Request<pb::GoneRequest>) -> Result<Response<pb::GoneResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::AgentReport).map_err(status)?;
        let dropped = self.core.sightings().gone(&caller, &request.into_inner().sha256).await.map_err(status)?;
        Ok(Response::new(pb::GoneResponse { dropped }))
    }

    type NoticesStream = tokio_stream::wrappers::ReceiverStream<Result<pb::Notice, Status>>;

    async fn notices(&self, request: Request<pb::NoticesRequest>) -> Result<Response<Self::NoticesStream>, Status> {
        let creds = credentials(&request);
        let caller = self.core.caller(&creds, Op::AgentReport).map_err(status)?;
        let req = request.into_inner();
        let mut rx = self.core.notices().subscribe(&caller, req.after_ms, req.uploads).await.map_err(status)?;
        let (tx, out) = tokio::sync::mpsc::channel(16);
        let core = self.core.clone();
        tokio::spawn(async move {
            // A token revoked while its stream is open ends the stream
            // within REAUTH.
            const REAUTH: std::time::Duration = std::time::Duration::from_secs(5);
            loop {
                tokio::select! {
                    n = rx.recv() => match n {
                        Some(n) => if tx.send(Ok(n)).await.is_err() { return },
                        None => {
                            let end = if core.notices().closing() {
                                Status::unavailable("the coordinator is shutting down; reconnect")
                            } else {
                                Status::resource_exhausted("notices fell behind; reconnect")
                            };
                            let _ = tx.send(Err(end)).await;
                            return;
                        }
                    },
                    _ = tokio::time::sleep(REAUTH) => {
                        if let Err(e) = core.identify(&creds) {
                            let _ = tx.send(Err(status(e))).await;
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(out)))
    }

    async fn sightings(&self, request: Request<pb::SightingsRequest>) -> Result<Response<pb::SightingsResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Inventory).map_err(status)?;
        answer(self.core.sightings().holders(&caller, &request.into_inner().hash).await)
    }

    async fn get_agent(&self, request: Request<pb::GetAgentRequest>) -> Result<Response<pb::GetAgentResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Inventory).map_err(status)?;
        answer(self.core.sightings().agent(&caller, &request.into_inner().agent_id).await)
    }
}

pub struct HuntsService {
    core: Arc<Core>,
}

impl HuntsService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl pb::hunts_server::Hunts for HuntsService {
    async fn start_hunt(&self, request: Request<pb::StartHuntRequest>) -> Result<Response<pb::Hunt>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin).map_err(status)?;
        answer(self.core.hunts().start(&caller, request.into_inner()).await)
    }

    async fn get_hunt(&self, request: Request<pb::GetHuntRequest>) -> Result<Response<pb::Hunt>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Inventory).map_err(status)?;
        answer(self.core.hunts().get(&caller, &request.into_inner().id).await)
    }

    async fn list_hunts(&self, request: Request<pb::ListHuntsRequest>) -> Result<Response<pb::ListHuntsResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Inventory).map_err(status)?;
        answer(self.core.hunts().list(&caller).await)
    }

    async fn hunt_matches(&self, request: Request<pb::GetHuntRequest>) -> Result<Response<pb::HuntMatchesResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Inventory).map_err(status)?;
        answer(self.core.hunts().matches(&caller, &request.into_inner().id).await)
    }

    async fn cancel_hunt(&self, request: Request<pb::GetHuntRequest>) -> Result<Response<pb::Hunt>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin).map_err(status)?;
        answer(self.core.hunts().cancel(&caller, &request.into_inner().id).await)
    }
}

pub struct ClusterService {
    core: Arc<Core>,
}

impl ClusterService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let cert = peer_cert(&request);
        answer(self.core.workers().register(cert.as_ref(), request.into_inner()).await)
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let cert = peer_cert(&request);
        answer(self.core.workers().heartbeat(cert.as_ref(), request.get_ref()))
    }

    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Enroll).map_err(status)?;
        answer(self.core.enrollment().enroll(&caller, request.into_inner()).await)
    }

    async fn renew(&self, request: Request<pb::RenewRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let cert = peer_cert(&request);
        answer(self.core.enrollment().renew(cert.as_ref(), request.into_inner()).await)
    }
}
