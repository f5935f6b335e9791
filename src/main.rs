//! The `bogie` binary: CLI, wiring and progress display.

use std::process::ExitCode;

use bogie::{cli, commands, InputError};
use clap::Parser;

fn init_tracing(g: &cli::Global) {
    use tracing_subscriber::EnvFilter;
    let level = if let Some(l) = &g.log_level {
        l.clone()
    } else if g.debug || g.verbose >= 2 {
        "debug".to_string()
    } else if g.verbose == 1 {
        "info".to_string()
    } else {
        "warn".to_string()
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    // Never let the cloud SDKs' debug logs (identities, signed requests) into the output.
    let filter = bogie::cloud::quiet_cloud_sdks(filter);
    // Colours only on a terminal (and never with NO_COLOR): a log file or CI capture gets
    // plain text.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if let Some(msg) = cli::unbuilt_platform_flag(&args[1..]) {
        eprintln!("error: {msg}");
        return ExitCode::from(2);
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // A value a flag's parser refused: one line naming the flag and why (clap adds a
        // usage hint below it).
        Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation => {
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or_default());
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    init_tracing(&cli.global);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let res = rt.block_on(commands::dispatch(cli));
    // Don't wait for stray blocking tasks (e.g. a stdin reader).
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if e.downcast_ref::<InputError>().is_some() {
                eprintln!("error: {e}");
                ExitCode::from(2)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}
