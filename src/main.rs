//! The `jdop` binary: parse the command line, start the runtime, call the library,
//! map errors to the documented exit codes. A broken pipe on stdout exits 0.

mod cli;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use cli::{Cli, Command, DemoArgs, ExportArgs, QueryArgs, SchemaArgs, SimArgs, SyncArgs};
use jdop::error::{Error, Result};
use jdop::export::Summary;
use jdop::platform::{Client, Secret, Target};
use jdop::progress::{self, Reporter};
use jdop::sim::{DatasetSpec, SimConfig, Simulator};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            jdop::say!("error: cannot start the async runtime: {e}");
            return ExitCode::from(jdop::ExitCode::Failure as u8);
        }
    };
    let result = runtime.block_on(async {
        // On Ctrl-C or SIGTERM, exit at once without unwinding anything: the staging
        // folder keeps its spool so that the same command resumes, and nothing was
        // published. (Dropping the export instead would delete the spool.)
        tokio::spawn(async {
            interrupted().await;
            jdop::say!(
                "error: {}; run the same command again to resume",
                Error::Interrupted
            );
            std::process::exit(jdop::ExitCode::Interrupted as i32);
        });
        run(cli).await
    });
    // Blocking writer threads may still run after an interrupt: do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JDOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Prints the error and its causes, one per line.
fn report(e: &Error) {
    let mut text = format!("error: {e}");
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        text.push_str(&format!("\n  caused by: {s}"));
        cur = s.source();
    }
    jdop::say!("{text}");
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Export(args) => export(args).await,
        Command::Total(args) => total(args).await,
        Command::Updated(args) => updated(args).await,
        Command::Sim(args) => sim(args).await,
        Command::Demo(args) => demo(args).await,
        Command::Sync(args) => sync(args).await,
        Command::Schema(args) => schema(args).await,
    }
}

async fn schema(args: SchemaArgs) -> Result<()> {
    let target = args.conn.target()?;
    let secret = args.conn.secret()?;
    let detect = args.detect.options()?;
    let client = Client::new(target, secret, &args.conn.client()?)?;
    let mut limits = args.conn.limits();
    limits.concurrency = args.concurrency as usize;
    let rep = progress::for_stderr(true);
    let s = jdop::export::infer_schema(&client, &limits, args.sample_pages, &detect, rep.as_ref())
        .await?;
    for col in s.schema.missing_flag_types(&detect) {
        jdop::say!(
            "warning: `{}` has no column `{col}` (--type)",
            client.target().dataset
        );
    }
    let columns = s.schema.describe();
    if args.json {
        let v = serde_json::json!({
            "dataset": client.target().dataset.as_str(),
            "rows": s.schema.rows,
            "total": s.total,
            "pages_read": s.pages_read,
            "pages": s.pages,
            "columns": columns,
        });
        return out(&serde_json::to_string_pretty(&v).expect("serializes"));
    }
    let mut text = format!(
        "{}: {} columns over {} of {} rows ({} of {} pages{})\n",
        client.target().dataset,
        columns.len(),
        s.schema.rows,
        s.total,
        s.pages_read,
        s.pages,
        if s.pages_read < s.pages {
            "; a sample: types may differ on the rest"
        } else {
            ""
        }
    );
    let rows = columns.iter().map(|c| {
        [
            c.name.clone(),
            c.arrow_type.clone(),
            c.rule.clone(),
            c.format.clone().unwrap_or_default(),
            c.json_types.join("+"),
            c.nulls.to_string(),
            c.empty_strings.to_string(),
            c.missing.to_string(),
        ]
    });
    let header = [
        "column", "type", "rule", "format", "json", "nulls", "empty", "missing",
    ]
    .map(String::from);
    let all: Vec<[String; 8]> = std::iter::once(header).chain(rows).collect();
    use unicode_width::UnicodeWidthStr;
    let width = |i: usize| all.iter().map(|r| r[i].width()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..8).map(width).collect();
    for r in &all {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.width())))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    out(text.trim_end())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|_| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("write to", "stdout", e)),
    }
}

async fn export(args: ExportArgs) -> Result<()> {
    let cfg = args.settings()?;
    let reporter: Arc<dyn Reporter> = Arc::from(progress::for_stderr(args.output.quiet));
    let result = jdop::export(&cfg, reporter.clone()).await;
    reporter.finish();
    let summary = result?;
    print_summary(&summary, args.output.quiet, args.output.json)
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn print_summary(s: &Summary, quiet: bool, json: bool) -> Result<()> {
    let m = &s.manifest;
    if !quiet {
        let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
        jdop::say!(
            "exported {} rows of `{}` to {} ({} file{}, {}) in {:.1}s; update date {}",
            m.rows,
            m.dataset,
            s.out.display(),
            m.files.len(),
            if m.files.len() == 1 { "" } else { "s" },
            human_size(bytes),
            m.duration_secs,
            m.update_date
                .iso
                .clone()
                .unwrap_or_else(|| m.update_date.raw.to_string()),
        );
    }
    if json {
        let summary = serde_json::json!({
            "out": s.out,
            "dataset": m.dataset,
            "rows": m.rows,
            "format": m.format,
            "update_date": m.update_date,
            "total_before": m.total_before,
            "total_after": m.total_after,
            "consistent": m.consistent,
            "warnings": m.warnings,
            "pages": m.pages,
            "requests": m.requests,
            "retries": m.retries,
            "duration_secs": m.duration_secs,
            "files": m.files,
            "manifest": s.out.join(jdop::manifest::MANIFEST_FILE),
        });
        out(&serde_json::to_string_pretty(&summary).expect("serializes"))?;
    }
    Ok(())
}

fn query_client(args: &QueryArgs) -> Result<(Client, jdop::fetch::Limits)> {
    let target = args.conn.target()?;
    let secret = args.conn.secret()?;
    let client = Client::new(target, secret, &args.conn.client()?)?;
    Ok((client, args.conn.limits()))
}

async fn total(args: QueryArgs) -> Result<()> {
    let (client, limits) = query_client(&args)?;
    let rep = progress::for_stderr(true);
    let n = jdop::export::total(&client, &limits, rep.as_ref()).await?;
    if args.json {
        out(
            &serde_json::json!({"dataset": client.target().dataset.as_str(), "total": n})
                .to_string(),
        )
    } else {
        out(&n.to_string())
    }
}

async fn updated(args: QueryArgs) -> Result<()> {
    let (client, limits) = query_client(&args)?;
    let rep = progress::for_stderr(true);
    let d = jdop::export::update_date(&client, &limits, rep.as_ref()).await?;
    if args.json {
        out(
            &serde_json::json!({"dataset": client.target().dataset.as_str(), "update_date": d})
                .to_string(),
        )
    } else {
        match &d.iso {
            Some(iso) => out(iso),
            None => {
                jdop::say!(
                    "warning: the update date's format is not recognised; printing it as sent"
                );
                out(&d.raw.to_string())
            }
        }
    }
}

async fn sim(args: SimArgs) -> Result<()> {
    let cfg = args.config()?;
    let ids: Vec<String> = cfg
        .datasets
        .iter()
        .map(|d| format!("{} ({} rows)", d.id, d.rows))
        .collect();
    let first_id = cfg.datasets.first().map(|d| d.id.clone());
    let sim = Simulator::start_on(cfg, std::net::SocketAddr::new(args.host, args.port)).await?;
    jdop::say!("jdop simulator listening on {}", sim.base_url());
    jdop::say!("datasets: {}", ids.join(", "));
    jdop::say!(
        "appsecret: {}  (a simulator secret, not a real one)",
        sim.secret()
    );
    jdop::say!("call counters: http://{}/__sim/stats", sim.addr());
    if let Some(first) = first_id {
        jdop::say!(
            "try: JDOP_APPSECRET='{}' jdop export {first} --base-url {} --out {first}",
            sim.secret().replace('\'', "'\\''"),
            sim.base_url()
        );
    }
    std::future::pending::<()>().await;
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<()> {
    let spec = DatasetSpec::credit("cata_3820", args.rows);
    let cfg = SimConfig {
        datasets: vec![spec],
        latency: std::time::Duration::from_millis(args.latency_ms),
        jitter: std::time::Duration::from_millis(args.latency_ms / 2),
        ..SimConfig::default()
    };
    let sim = Simulator::start(cfg, 0).await?;
    if !args.output.quiet {
        jdop::say!(
            "demo: built-in simulator on {} serving cata_3820 ({} records, {} ms latency)",
            sim.base_url(),
            args.rows,
            args.latency_ms
        );
    }
    let target = Target::parse("cata_3820", Some(&sim.base_url()))?;
    let secret = Secret::new(sim.secret())?;
    let settings = args.output.settings(
        target,
        secret,
        args.out.clone(),
        jdop::platform::ClientConfig::default(),
        jdop::fetch::RetryPolicy::default(),
    )?;
    let reporter: Arc<dyn Reporter> = Arc::from(progress::for_stderr(args.output.quiet));
    let result = jdop::export(&settings, reporter.clone()).await;
    reporter.finish();
    let summary = result?;
    print_summary(&summary, args.output.quiet, args.output.json)?;
    if !args.output.quiet {
        let dir = summary.out.display().to_string();
        jdop::say!("files:");
        for f in &summary.manifest.files {
            jdop::say!("  {dir}/{}  ({} rows)", f.path, f.rows);
        }
        jdop::say!("  {dir}/manifest.json  (types, rules, checksums)");
        if summary.manifest.files.is_empty() {
            return Ok(());
        }
        jdop::say!("  {dir}/query.sql  (a DuckDB view with the snapshot's types)");
        let reader = jdop::export::duckdb_reader(&summary.manifest, &dir, ", ");
        jdop::say!("look at them with DuckDB:");
        jdop::say!("  duckdb -init {dir}/query.sql    (then: SELECT * FROM cata_3820 LIMIT 10;)");
        jdop::say!(
            "  duckdb -c \"SELECT 地市, count(*) AS n, sum(PENAM) AS 罚款 FROM {reader} GROUP BY 1 ORDER BY 2 DESC\""
        );
    }
    Ok(())
}

/// `jdop sync`; with `--json`, a run that fails before any dataset still prints a
/// JSON object on stdout (`error`, `exit_code`) for monitoring scripts.
async fn sync(args: SyncArgs) -> Result<()> {
    let json = args.json;
    let result = sync_run(args).await;
    if let (true, Err(e)) = (json, &result) {
        if !matches!(e, Error::SyncFailed { .. }) {
            out(&serde_json::json!({
                "error": e.to_string(),
                "exit_code": e.exit_code() as u8,
                "datasets": [],
            })
            .to_string())?;
        }
    }
    result
}

async fn sync_run(args: SyncArgs) -> Result<()> {
    use jdop::sync::{self, Status};
    let cfg = match sync::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                jdop::say!("error: `{}` {e}", args.config.display());
            }
            return Err(Error::usage(format!(
                "`{}` has {} error{}",
                args.config.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            )));
        }
    };
    if args.check {
        if let Err(e) = sync::secret(&cfg) {
            jdop::say!("warning: {e}");
        }
        jdop::say!(
            "`{}` is valid: {} dataset{}, root `{}`",
            args.config.display(),
            cfg.jobs.len(),
            if cfg.jobs.len() == 1 { "" } else { "s" },
            cfg.root.display()
        );
        return Ok(());
    }
    let secret = sync::secret(&cfg)?;
    let opts = sync::RunOptions {
        force: args.force,
        retry: Some(jdop::fetch::RetryPolicy {
            max_retries: cfg.max_retries,
            min_delay: std::time::Duration::from_millis(args.retry_min_delay_ms),
            max_delay: std::time::Duration::from_millis(
                args.retry_max_delay_ms.max(args.retry_min_delay_ms),
            ),
        }),
    };
    let quiet = args.quiet;
    let on_done = move |o: &sync::Outcome| {
        if quiet {
            return;
        }
        match o.status {
            Status::Failed => jdop::say!(
                "{}: failed: {}",
                o.dataset,
                o.error.as_deref().unwrap_or("")
            ),
            s => jdop::say!(
                "{}: {} ({} rows)",
                o.dataset,
                if s == Status::Exported {
                    "exported"
                } else {
                    "unchanged"
                },
                o.rows.unwrap_or(0)
            ),
        }
    };
    let report = sync::run(&cfg, secret, &opts, &on_done).await?;
    if let Some(pid) = &report.took_over_lock_of_pid {
        jdop::say!("note: took over a lock left by process {pid}, which is gone");
    }
    if !quiet {
        jdop::say!();
        jdop::say!(
            "{:<16} {:<10} {:>10} {:<24} {:>9}",
            "dataset",
            "status",
            "rows",
            "update date",
            "seconds"
        );
        for o in &report.datasets {
            let status = match o.status {
                Status::Exported => "exported",
                Status::Unchanged => "unchanged",
                Status::Failed => "FAILED",
            };
            jdop::say!(
                "{:<16} {:<10} {:>10} {:<24} {:>9.1}",
                o.dataset,
                status,
                o.rows.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                o.update_date.as_deref().unwrap_or("-"),
                o.duration_secs
            );
        }
        jdop::say!(
            "{} exported, {} unchanged, {} failed in {:.1}s; mirror at `{}`",
            report.exported,
            report.unchanged,
            report.failed,
            report.duration_secs,
            report.root.display()
        );
    }
    if args.json {
        out(&serde_json::to_string_pretty(&report).expect("serializes"))?;
    }
    if report.failed > 0 {
        return Err(Error::SyncFailed {
            failed: report.failed,
            total: report.datasets.len(),
        });
    }
    Ok(())
}
