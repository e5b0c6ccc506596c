//! The command line. The same definitions produce `--help` and (with clap_mangen) the man page.

mod check_service;
mod import;
mod junit;
mod plan;
pub mod progress;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{self, Layout, layers};
use crate::exit;

#[derive(Debug, Parser)]
#[command(
    name = "vespa-agent",
    version = version_line(),
    about = "Keeps a VESPA DaCHS node converged to its service repository and granule store",
    long_about = "vespa-agent runs on every DaCHS node of VESPA-Cloud. It pulls the service \
configuration from the provider's repository, applies it to the local GAVO DaCHS server, imports \
data granules, and reports health and Prometheus metrics. It is driven with systemctl; \
`vespa-agent run` is what the vespa-agent.service unit starts.",
    after_help = "Exit codes follow sysexits(3): 0 success, 1 failure, 65 damaged or newer state \
store, 69 a needed resource is unavailable, 74 I/O error, 78 configuration error."
)]
pub struct Cli {
    /// Read agent.toml and agent.d/*.toml from DIR
    #[arg(long, global = true, value_name = "DIR", env = "VESPA_AGENT_CONFIG_DIR", default_value = layers::CONFIG_DIR)]
    pub config_dir: PathBuf,

    /// Package defaults, read before DIR (for packaging and tests)
    #[arg(long, global = true, value_name = "DIR", env = "VESPA_AGENT_VENDOR_CONFIG_DIR", default_value = layers::VENDOR_DIR, hide_short_help = true)]
    pub vendor_config_dir: PathBuf,

    /// Runtime overrides, read after DIR (for packaging and tests)
    #[arg(long, global = true, value_name = "DIR", env = "VESPA_AGENT_RUNTIME_CONFIG_DIR", default_value = layers::RUNTIME_DIR, hide_short_help = true)]
    pub runtime_config_dir: PathBuf,

    /// More log output (-v debug, -vv trace); VESPA_AGENT_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less log output (-q warnings, -qq errors only)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: reconcile passes on a timer and on SIGHUP, HTTP endpoints, systemd
    /// notifications
    Run,
    /// Run one reconcile pass now and exit: 0 if it succeeded, 1 with the reason if not
    Sync {
        /// Try the followed commit again even if it failed before
        #[arg(long)]
        retry: bool,
    },
    /// Show what the next pass would change (commit, files, imports, publications, removals,
    /// granules to transfer) without touching anything: exit 0 if nothing, 2 if something would
    /// change, 1 if the plan failed or part of it could not be made (a collection that cannot
    /// be listed)
    Plan,
    /// Bring the applied revision's granule collections in step and import what changed, without
    /// fetching the repository: exit 0 if it succeeded (refused files are listed), 1 if not
    Import {
        /// Only this resource (a `dir` of vespa-service.toml)
        #[arg(long, value_name = "DIR")]
        resource: Option<String>,
    },
    /// Check the configuration and print it merged, each value with the file and line it came
    /// from (exit 78 if it is invalid)
    CheckConfig,
    /// Show what the agent did last and what the running daemon is doing (exit 3 if the daemon
    /// is not running)
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        /// Show one granule's provenance instead: a granule_uid, or a file's path (relative to
        /// its collection, or just its name)
        #[arg(long, value_name = "UID_OR_PATH")]
        granule: Option<String>,
        /// Print a digest of what this node serves instead: the applied revision and, per
        /// deployed table, its row count and a hash of its rows read over TAP; two nodes (or one
        /// before and after a rebuild) serve the same when their last lines are equal
        #[arg(long, conflicts_with = "granule")]
        digest: bool,
    },
    /// Repair this node in place from its sources of truth: reinstall PostgreSQL and DaCHS if
    /// they are missing, start them, make DaCHS's database anew if it or /var/gavo is gone,
    /// then deploy every resource and import every granule again. As root, with the daemon
    /// stopped (`systemctl start vespa-agent-rebuild` does both); each step can be run again.
    /// The daemon starts it on its own when [rebuild] automatic is set and DaCHS has failed its
    /// health check for rebuild.unhealthy-for; with automatic = "vm", a repair that fails while
    /// DaCHS still does not answer goes on to --vm
    Rebuild {
        /// Only say what each step finds and would do
        #[arg(long)]
        dry_run: bool,
        /// Ask OpenStack Nova to rebuild this VM from its image instead (level 2); cloud-init
        /// then sets the node up again. Checks the server id with the metadata service, refuses
        /// a locked or busy server and a second rebuild within openstack.rebuild-interval
        #[arg(long)]
        vm: bool,
    },
    /// Check a checkout of a service repository the way a node would accept its commit, without
    /// a node (for the provider's CI): the tree, vespa-service.toml, and each RD through `dachs
    /// val` in a scratch DaCHS the command sets up and removes (as root, with DaCHS and
    /// PostgreSQL installed). Prints one `FILE:LINE:COL: message` per finding; exit 0 if a node
    /// would accept the commit, 1 if it would refuse it, 2 if the check could not be completed
    CheckService {
        /// The checkout (its HEAD commit is checked)
        #[arg(default_value = ".", value_name = "DIR")]
        dir: PathBuf,
        /// The folder of the repository that is the service, as source.path (default: the
        /// configuration's, else the root)
        #[arg(long, value_name = "FOLDER")]
        path: Option<String>,
        /// Also import up to N granule files of each collection (from its source; a
        /// collection's credential from VESPA_CREDENTIAL_<NAME> or --credentials-dir) into the
        /// scratch DaCHS, then run the RD's regression suites against it
        #[arg(long, value_name = "N")]
        import_sample: Option<usize>,
        /// Where collection credentials are, one file per credential name
        #[arg(long, value_name = "DIR")]
        credentials_dir: Option<PathBuf>,
        /// Also write the checks as a JUnit XML report (GitLab's artifacts:reports:junit)
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Print the version and the git revision it was built from
    Version,
}

fn version_line() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (revision ",
        env!("VESPA_AGENT_GIT_REVISION"),
        ")"
    )
}

impl Cli {
    pub fn layout(&self) -> Layout {
        Layout {
            vendor_dir: self.vendor_config_dir.clone(),
            config_dir: self.config_dir.clone(),
            runtime_dir: self.runtime_config_dir.clone(),
        }
    }

    pub fn verbosity(&self) -> i8 {
        self.verbose.min(5) as i8 - self.quiet.min(5) as i8
    }
}

/// Runs the chosen command and returns its exit code; errors carry their own (see [`exit`]).
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let layout = cli.layout();
    match cli.command {
        Command::Version => {
            println!("vespa-agent {}", version_line());
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            let settings = config::load(&layout)?;
            print!("{}", config::render::render(&settings));
            if let Some(path) = &settings.web_config_file {
                let (_, files, w) = crate::web::load(path)?;
                eprintln!(
                    "web configuration {}: {}{}, basic auth for {} user(s); reloaded when any of {} file(s) changes",
                    path.display(),
                    if w.tls { "TLS" } else { "plain HTTP" },
                    if w.client_certificates {
                        " with client certificates"
                    } else {
                        ""
                    },
                    w.basic_auth_users,
                    files.len()
                );
            }
            eprintln!("configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            json,
            granule,
            digest,
        } => {
            let settings = config::load(&layout)?;
            match granule {
                Some(g) => status::show_granule(&settings, &g, json),
                None if digest => status::show_digest(&settings, json),
                None => status::show(&settings, json),
            }
        }
        Command::Import { resource } => {
            let settings = config::load(&layout)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(import::import_once(settings, resource))
        }
        Command::CheckService {
            dir,
            path,
            import_sample,
            credentials_dir,
            junit,
        } => {
            let settings = config::load(&layout)?;
            let path = match path {
                Some(p) => {
                    config::service_folder(&p).map_err(|m| anyhow::anyhow!("--path: {m}"))?
                }
                None => settings.source.path.clone(),
            };
            let options = check_service::Options {
                dir,
                path,
                import_sample,
                junit,
                credentials_dir,
                dachs_bin: settings.dachs.bin.clone(),
                dachs_user: settings.dachs.user.clone(),
                regression_tag: settings
                    .dachs
                    .regression
                    .as_ref()
                    .map_or_else(|| "deploy".to_owned(), |r| r.tag.clone()),
                timeout: settings.dachs.command_timeout,
                regression_timeout: settings
                    .dachs
                    .regression
                    .as_ref()
                    .map_or(std::time::Duration::from_secs(300), |r| r.timeout),
                granules: settings.granules.clone(),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(check_service::run(options))
        }
        Command::Plan => {
            let settings = config::load(&layout)?;
            plan::show(&settings)
        }
        Command::Sync { retry } => {
            let settings = config::load(&layout)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(crate::daemon::sync_once(settings, retry))
        }
        Command::Rebuild { dry_run, vm } => {
            let settings = config::load(&layout)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            if vm {
                rt.block_on(crate::rebuild::run_vm(settings, dry_run))
            } else {
                rt.block_on(crate::rebuild::run(settings, dry_run))
            }
        }
        Command::Run => {
            let settings = config::load(&layout)?;
            crate::heap::limit_arenas();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                // Blocking threads (transfers, git, the state store) live for a pass, not ten
                // seconds past it: an idle daemon keeps only its two workers' stacks.
                .thread_keep_alive(std::time::Duration::from_secs(2))
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let result = rt.block_on(crate::daemon::run(layout, settings));
            // Blocking tasks still running after the stop are abandoned, not awaited.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result.map(|()| ExitCode::from(exit::OK))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
