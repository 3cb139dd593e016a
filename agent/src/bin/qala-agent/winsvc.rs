//! `qala-agent windows-service`: the agent as the Windows service
//! "QalaAgent" (the `windows-service` crate). `install` registers it to
//! start automatically as LocalSystem and run `qala-agent --config FILE
//! windows-service run`; `run` is what the service manager starts: it
//! reports running, runs the same loop as `qala-agent service` and stops
//! when the service manager asks (stop or system shutdown), logging (and
//! writing its JSON events) to `agent.log` beside the config file.

use qala_agent::cli::{Cli, Command, WindowsServiceAction};
use qala_agent::config::ServiceFlags;
use qala_agent::exit;
use std::ffi::OsString;
use std::sync::Mutex;
use std::time::Duration;
use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode, ServiceInfo, ServiceStartType,
    ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

/// The service's name (`sc query QalaAgent`).
pub const NAME: &str = "QalaAgent";
const DISPLAY_NAME: &str = "Qala agent";
const DESCRIPTION: &str = "Qala endpoint agent: watches and scans files through the organisation's Qala cluster.";

/// What runs the agent for a command line (the binary's main).
pub type AgentMain = fn(Cli) -> i32;

/// The command line `run` was started with and what runs it, for the
/// service's main.
static STARTED_WITH: Mutex<Option<(Cli, AgentMain)>> = Mutex::new(None);

/// Do `action` (`agent_main` runs the agent's service loop); the exit code.
pub fn command(cli: Cli, action: WindowsServiceAction, agent_main: AgentMain) -> i32 {
    let done = match action {
        WindowsServiceAction::Install => install(&cli),
        WindowsServiceAction::Uninstall => uninstall(),
        WindowsServiceAction::Start => start(),
        WindowsServiceAction::Stop => stop(),
        WindowsServiceAction::Run => {
            *STARTED_WITH.lock().expect("lock") = Some((cli, agent_main));
            windows_service::service_dispatcher::start(NAME, ffi_service_main).map_err(|e| {
                anyhow::anyhow!("{e} (this is what the service manager runs; use `qala-agent service` in a console)")
            })
        }
    };
    match done {
        Ok(()) => exit::CLEAN,
        Err(e) => {
            eprintln!("qala-agent: windows-service: {e:#}");
            exit::ERROR
        }
    }
}

fn install(cli: &Cli) -> anyhow::Result<()> {
    let manager =
        ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let config = std::path::absolute(&cli.config)?;
    let info = ServiceInfo {
        name: NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: std::env::current_exe()?,
        launch_arguments: vec!["--config".into(), config.into_os_string(), "windows-service".into(), "run".into()],
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let service = manager.create_service(&info, ServiceAccess::CHANGE_CONFIG)?;
    service.set_description(DESCRIPTION)?;
    println!("installed service {NAME} (automatic start, LocalSystem)");
    Ok(())
}

fn uninstall() -> anyhow::Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
    let service = manager.open_service(NAME, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)?;
    if service.query_status()?.current_state != ServiceState::Stopped {
        let _ = service.stop();
    }
    service.delete()?;
    println!("removed service {NAME}");
    Ok(())
}

fn start() -> anyhow::Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
    let service = manager.open_service(NAME, ServiceAccess::START | ServiceAccess::QUERY_STATUS)?;
    if service.query_status()?.current_state == ServiceState::Running {
        println!("service {NAME} is running");
        return Ok(());
    }
    service.start::<&str>(&[])?;
    println!("started service {NAME}");
    Ok(())
}

fn stop() -> anyhow::Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
    let service = manager.open_service(NAME, ServiceAccess::STOP | ServiceAccess::QUERY_STATUS)?;
    service.stop()?;
    for _ in 0..100 {
        if service.query_status()?.current_state == ServiceState::Stopped {
            println!("stopped service {NAME}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("service {NAME} did not stop within 10 s")
}

windows_service::define_windows_service!(ffi_service_main, service_main);

fn service_main(_arguments: Vec<OsString>) {
    let Some((cli, agent_main)) = STARTED_WITH.lock().expect("lock").take() else { return };
    let log = cli.config.parent().map(|d| d.join("agent.log")).unwrap_or_else(|| "agent.log".into());
    if let Ok(file) = qala_common::files::open_append(&log, 0o600) {
        // The service's events (JSON lines on standard output, the journal
        // under systemd) go to the log too: a service has no console.
        if let Ok(events) = file.try_clone() {
            use std::os::windows::io::IntoRawHandle;
            use windows_sys::Win32::System::Console::{STD_OUTPUT_HANDLE, SetStdHandle};
            // SAFETY: an open handle, handed over for the process's life.
            unsafe { SetStdHandle(STD_OUTPUT_HANDLE, events.into_raw_handle()) };
        }
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
            .with_writer(Mutex::new(file))
            .with_ansi(false)
            .init();
    }
    if let Err(e) = serve(cli, agent_main) {
        tracing::error!(error = %e, "the service failed");
    }
}

/// Report to the service manager, run the agent's service loop, report
/// its end.
fn serve(cli: Cli, agent_main: AgentMain) -> windows_service::Result<()> {
    let handler = service_control_handler::register(NAME, |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            qala_agent::service::STOP.notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })?;
    let status = |state, accept, code| ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: accept,
        exit_code: ServiceExitCode::Win32(code),
        checkpoint: 0,
        wait_hint: Duration::from_secs(20),
        process_id: None,
    };
    handler.set_service_status(status(ServiceState::Running, ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN, 0))?;
    tracing::info!(service = NAME, "running");
    let cli = Cli { command: Command::Service { flags: ServiceFlags::default() }, ..cli };
    let code = agent_main(cli);
    tracing::info!(service = NAME, code, "stopped");
    handler.set_service_status(status(ServiceState::Stopped, ServiceControlAccept::empty(), code as u32))
}
