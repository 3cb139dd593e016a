//! The gRPC front door: `qala.v1.Scanner` and `qala.v1.Admin` on the main
//! listener, `qala.v1.Cluster` on the cluster listener. Each method finds
//! the credentials (bearer token, peer address, client certificate) and the
//! bytes, and hands them to the [`Core`], which does the rest.

use crate::auth::{Credentials, Op};
use crate::core::Core;
use futures::StreamExt;
use qala_proto::v1::{self as pb, scan_request::Msg};
use qala_tls::PeerCert;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

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
        let caller = self.core.caller(&credentials(&request), Op::Lookup)?;
        let req = request.into_inner();
        self.core.lookup(&caller, req.sha256, req.brief).await.map(Response::new)
    }

    async fn scan(&self, request: Request<Streaming<pb::ScanRequest>>) -> Result<Response<pb::ScanResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Scan)?;
        let mut stream = request.into_inner();
        let stall = self.core.limits().upload_stall;
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
                Ok(_) => Err(Status::invalid_argument("Scan: only the first message may be a header")),
                Err(e) => Err(Status::cancelled(format!("upload interrupted: {}", e.message()))),
            })
            .boxed();
        self.core.scan(&caller, header, body).await.map(Response::new)
    }

    async fn get_verdict(&self, request: Request<pb::GetVerdictRequest>) -> Result<Response<pb::GetVerdictResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::GetVerdict)?;
        self.core.get_verdict(&caller, &request.into_inner().sha256).await.map(Response::new)
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Status)?;
        self.core.status(&caller).await.map(Response::new)
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
        let caller = self.core.caller(&credentials(&request), Op::Admin)?;
        let req = request.into_inner();
        self.core.add_token(&caller, &req.name, &req.role).await.map(Response::new)
    }

    async fn list_tokens(&self, request: Request<pb::ListTokensRequest>) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin)?;
        self.core.list_tokens(&caller).await.map(Response::new)
    }

    async fn revoke_token(&self, request: Request<pb::RevokeTokenRequest>) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin)?;
        self.core.revoke_token(&caller, &request.into_inner().name).await.map(Response::new)
    }

    async fn reload_rules(&self, request: Request<pb::ReloadRulesRequest>) -> Result<Response<pb::ReloadRulesResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin)?;
        self.core.reload_rules(&caller).await.map(Response::new)
    }

    async fn add_iocs(&self, request: Request<pb::AddIocsRequest>) -> Result<Response<pb::AddIocsResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin)?;
        let req = request.into_inner();
        let added = self.core.add_iocs(&caller, &req.list, &req.text, "grpc").await?;
        Ok(Response::new(pb::AddIocsResponse { added: added as u64 }))
    }

    async fn remove_ioc(&self, request: Request<pb::RemoveIocRequest>) -> Result<Response<pb::RemoveIocResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin)?;
        let req = request.into_inner();
        let removed = self.core.remove_ioc(&caller, &req.list, &req.kind, &req.digest.to_ascii_lowercase()).await?;
        Ok(Response::new(pb::RemoveIocResponse { removed }))
    }

    async fn list_iocs(&self, request: Request<pb::ListIocsRequest>) -> Result<Response<pb::ListIocsResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::GetVerdict)?;
        let r = request.into_inner();
        let page = self.core.list_iocs(&caller, &r.after, r.limit as usize).await?;
        Ok(Response::new(pb::ListIocsResponse { entries: page.entries, next: page.next, total: page.total }))
    }

    async fn revoke_worker(
        &self,
        request: Request<pb::RevokeWorkerRequest>,
    ) -> Result<Response<pb::RevokeWorkerResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Admin)?;
        let req = request.into_inner();
        self.core.revoke(&caller, &req.worker_id, req.client).await.map(Response::new)
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
        let caller = self.core.caller(&credentials(&request), Op::EnrollAgent)?;
        self.core.enroll_agent(&caller, request.into_inner()).await.map(Response::new)
    }

    async fn checkin(&self, request: Request<pb::CheckinRequest>) -> Result<Response<pb::CheckinResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::AgentReport)?;
        self.core.checkin(&caller, request.into_inner()).await.map(Response::new)
    }

    async fn report_actions(
        &self,
        request: Request<pb::ReportActionsRequest>,
    ) -> Result<Response<pb::ReportActionsResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::AgentReport)?;
        self.core.report_actions(&caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_agents(&self, request: Request<pb::ListAgentsRequest>) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Inventory)?;
        self.core.list_agents(&caller).await.map(Response::new)
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
        self.core.register_worker(cert.as_ref(), request.into_inner()).map(Response::new)
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let cert = peer_cert(&request);
        self.core.heartbeat(cert.as_ref(), request.get_ref()).map(Response::new)
    }

    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let caller = self.core.caller(&credentials(&request), Op::Enroll)?;
        self.core.enroll(&caller, request.into_inner()).await.map(Response::new)
    }
}
