//! The subcommands, one module per subcommand (`run.rs` for `bogie run`, ...), and the
//! dispatch: each command gets its own options, made once from the flags by
//! [`crate::options`].

pub mod bench;
pub mod check_console;
pub mod down;
pub mod gating;
pub mod gc;
pub mod list;
pub mod report;
pub mod run;
pub mod spawn;

use std::path::PathBuf;
use std::sync::Arc;

use bogie_harness::snapshot::BootStats;
use bogie_harness::Registry;
use bogie_reports::RunReport;

use crate::cli::{Cli, Command};
use crate::input_error;
use crate::options::{
    input, BenchOptions, CheckConsoleOptions, GcRequest, ListOptions, ReportOptions, RunOptions,
    SpawnRequest,
};
pub use gating::gate;

/// Runs the chosen subcommand with the shipped catalog; returns the exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    dispatch_with(cli, bogie_tests_catalog::registry()).await
}

/// Runs the chosen subcommand with `registry` as the test catalog.
pub async fn dispatch_with(cli: Cli, registry: Registry) -> anyhow::Result<u8> {
    let g = &cli.global;
    if matches!(
        cli.command,
        Command::Run(_) | Command::Spawn(_) | Command::Bench(_)
    ) {
        input::refuse_unsupported(g)?;
    }
    match cli.command {
        Command::Run(args) => {
            let registry = with_external(registry, &args.exttest)?;
            let opts = RunOptions::from_flags(g, args)?;
            run::run(&opts, &registry, Arc::new(BootStats::default())).await
        }
        Command::List(args) => {
            let registry = with_external(registry, &args.exttest)?;
            list::list(&ListOptions::from_flags(g, &args)?, &registry)
        }
        Command::CheckConsole(args) => check_console::check_console(&CheckConsoleOptions {
            no_avc_checks: g.disable_selinux_avc_checks,
            args,
        }),
        Command::Spawn(args) => spawn::spawn(SpawnRequest::from_flags(g, args)?).await,
        Command::Down(args) => down::down(args),
        Command::Report(cmd) => report::report(ReportOptions::from_flags(g, cmd)?),
        Command::Gc(args) => gc::gc(&GcRequest::from_flags(g, args)?).await,
        Command::Bench(args) => bench::bench(&BenchOptions::from_flags(g, args)?).await,
    }
}

/// `registry` plus the external tests of every `-E DIR` (bad ones are input errors).
fn with_external(mut registry: Registry, dirs: &[PathBuf]) -> anyhow::Result<Registry> {
    let tests = bogie_harness::external::load(dirs).map_err(|e| input_error(e.to_string()))?;
    for t in tests {
        registry
            .register(t)
            .map_err(|e| input_error(format!("-E: {e}")))?;
    }
    Ok(registry)
}

/// The exit code of a finished run with flaky tests allowed: 0, 1 or 77 (see [`gate`]).
pub fn exit_code(report: &RunReport) -> u8 {
    gate(report, true)
}
